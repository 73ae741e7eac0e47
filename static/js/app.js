// lensweb's own script: the chat hint, the socket indicator, the tabs, the chat builder and what generation
// cards hand back to the forms. No inline scripts (CSP-ready); the server renders every element.
(function () {
  "use strict";

  function looksLikeChat(text) {
    try {
      var value = JSON.parse(text);
      return Array.isArray(value) && value.length > 0 && value.every(function (m) {
        return m && typeof m === "object" && typeof m.role === "string" && typeof m.content === "string";
      });
    } catch (e) {
      return false;
    }
  }

  // Offer, never force: the hint shows while the text parses as a chat that is not read as one.
  function updateHint(form) {
    var text = form.querySelector("textarea[name=text]");
    var hint = form.querySelector("#chat-hint");
    var chosen = form.querySelector("input[name=input_format]:checked");
    if (!text || !hint) return;
    hint.hidden = !(looksLikeChat(text.value) && (!chosen || chosen.value !== "chat"));
  }

  function formOf(el) {
    return el && el.closest ? el.closest("#analysis-form") : null;
  }

  document.addEventListener("input", function (e) { var f = formOf(e.target); if (f) updateHint(f); });
  document.addEventListener("change", function (e) { var f = formOf(e.target); if (f) updateHint(f); });
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-use-chat]");
    if (!button) return;
    var form = formOf(button);
    var radio = form && form.querySelector("input[name=input_format][value=chat]");
    if (radio) radio.checked = true;
    if (form) updateHint(form);
  });
  document.addEventListener("htmx:load", function (e) { var f = formOf(e.target); if (f) updateHint(f); });

  // Two sockets may be open: the status strip's (every page) and the analysis page's; each has its own line.
  function socketState(target, text, cls) {
    var strip = target && target.closest && target.closest("#status-strip");
    var el = document.getElementById(strip ? "strip-conn" : "socket-state");
    if (!el) return;
    el.textContent = text;
    el.className = "socket-state " + cls;
  }
  document.addEventListener("htmx:wsOpen", function (e) {
    socketState(e.target, e.target.closest && e.target.closest("#status-strip") ? "connected" : "live", "live");
  });
  // The ws extension reconnects only after these closes; after any other the page must be reloaded.
  var RECONNECTS = [1006, 1011, 1012, 1013];
  document.addEventListener("htmx:wsClose", function (e) {
    var code = e.detail && e.detail.event ? e.detail.event.code : 1006;
    if (code === 4401) socketState(e.target, "signed out: reload the page to sign in again", "down");
    else if (RECONNECTS.indexOf(code) < 0) socketState(e.target, "disconnected: reload the page", "down");
    else socketState(e.target, "reconnecting…", "down");
  });

  // --- tabs: analyse a text, or generate / chat -------------------------------------------------------

  var TAB_KEY = "lensweb.tab";

  function showTab(name) {
    var tabs = document.querySelectorAll("[data-tab]");
    if (!tabs.length) return;
    tabs.forEach(function (tab) { tab.setAttribute("aria-selected", String(tab.dataset.tab === name)); });
    document.querySelectorAll(".mode-panel[data-panel]").forEach(function (panel) {
      panel.hidden = panel.dataset.panel !== name;
    });
    try { sessionStorage.setItem(TAB_KEY, name); } catch (e) { /* storage off: the tab is not kept */ }
  }

  document.addEventListener("click", function (e) {
    var tab = e.target.closest && e.target.closest("[data-tab]");
    if (tab) showTab(tab.dataset.tab);
  });
  document.addEventListener("DOMContentLoaded", function () {
    var kept = null;
    try { kept = sessionStorage.getItem(TAB_KEY); } catch (e) { kept = null; }
    var chosen = document.querySelector("[data-tab][aria-selected=true]");
    // A page the server opened on a tab (a form with errors) keeps it; else the tab this session last used.
    if (kept && (!chosen || chosen.dataset.tab === "analyse")) showTab(kept);
  });

  // --- the generation form: plain text or chat ------------------------------------------------------

  function genForm() { return document.getElementById("generation-form"); }

  function showMode(form) {
    var chosen = form.querySelector("input[name='gen-mode']:checked");
    var mode = chosen ? chosen.value : "text";
    form.querySelectorAll("[data-mode]").forEach(function (el) { el.hidden = el.dataset.mode !== mode; });
    // an empty temperature takes the default of what is asked for: a reply's in chat mode, else a continuation's
    form.querySelectorAll("input[data-default-chat]").forEach(function (input) {
      input.placeholder = mode === "chat" ? input.dataset.defaultChat : input.dataset.defaultText;
    });
  }

  document.addEventListener("change", function (e) {
    if (e.target.name === "gen-mode") showMode(e.target.form);
  });

  // --- the chat builder -------------------------------------------------------------------------------

  function builder() { return document.getElementById("chat-builder"); }

  function renumber(list) {
    list.querySelectorAll("[data-turn]").forEach(function (turn, i) {
      var number = turn.querySelector(".turn-number");
      if (number) number.textContent = String(i + 1);
    });
  }

  function newTurn(role, content) {
    var template = document.getElementById("chat-turn-template");
    var turn = template.content.firstElementChild.cloneNode(true);
    var select = turn.querySelector("select");
    if (role && !select.querySelector("option[value='" + role + "']")) {
      // a system turn on a template without a system role: kept (the engine merges it), as the server would
      var option = document.createElement("option");
      option.value = role;
      option.textContent = role;
      select.insertBefore(option, select.firstChild);
    }
    if (role) select.value = role;
    turn.querySelector("textarea").value = content || "";
    return turn;
  }

  function setTurns(messages) {
    var list = document.getElementById("chat-turns");
    if (!list) return;
    list.replaceChildren();
    messages.forEach(function (m) { list.appendChild(newTurn(String(m.role), String(m.content))); });
    renumber(list);
  }

  document.addEventListener("click", function (e) {
    var target = e.target.closest ? e.target : null;
    if (!target) return;
    var add = target.closest("[data-add-turn]");
    var list = document.getElementById("chat-turns");
    if (add && list) {
      var last = list.querySelector("[data-turn]:last-child select");
      // turns usually alternate: after a user turn comes the assistant's, after anything else a user's
      var turn = newTurn(last && last.value === "user" ? "assistant" : "user", "");
      list.appendChild(turn);
      renumber(list);
      turn.querySelector("textarea").focus();
      return;
    }
    var move = target.closest("[data-turn-move]");
    if (move) {
      var item = move.closest("[data-turn]");
      if (move.dataset.turnMove === "up" && item.previousElementSibling) {
        item.parentNode.insertBefore(item, item.previousElementSibling);
      } else if (move.dataset.turnMove === "down" && item.nextElementSibling) {
        item.parentNode.insertBefore(item.nextElementSibling, item);
      }
      renumber(item.parentNode);
      move.focus();
      return;
    }
    var remove = target.closest("[data-turn-delete]");
    if (remove) {
      var gone = remove.closest("[data-turn]");
      var parent = gone.parentNode;
      gone.remove();
      renumber(parent);
    }
  });

  // --- what a generation card hands back ------------------------------------------------------------

  function fetchInput(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (!response.ok) throw new Error("HTTP " + response.status);
        return response.json();
      });
  }

  function chatIntoBuilder(input) {
    var form = genForm();
    if (!form) return;
    var chat = form.querySelector("input[name='gen-mode'][value=chat]");
    if (chat) chat.checked = true;
    showMode(form);
    setTurns(input.messages);
    var system = form.querySelector("input[name='gen-default_system_prompt']");
    if (system) system.checked = input.default_system_prompt !== false;
  }

  function textIntoAnalysisForm(text) {
    var form = document.getElementById("analysis-form");
    if (!form) return;
    var area = form.querySelector("textarea[name=text]");
    var plain = form.querySelector("input[name=input_format][value=text]");
    if (plain) plain.checked = true;
    area.value = text;
    updateHint(form);
    area.focus();
  }

  // "Use as input": a chat (with the reply) goes to the chat builder, a text (continued) to the analysis form.
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-use-input]");
    if (!button) return;
    fetchInput(button.dataset.useInput).then(function (input) {
      if (input.messages) {
        showTab("generate");
        chatIntoBuilder(input);
      } else {
        showTab("analyse");
        textIntoAnalysisForm(input.text || "");
      }
    }).catch(function (err) { socketMessage("could not read that sample: " + err.message); });
  });

  function socketMessage(text) {
    var el = document.getElementById("socket-message");
    if (!el) return;
    el.className = "flash error";
    el.textContent = text;
  }

  // "Get reply": when its generation is done, the conversation with the reply replaces the builder's turns
  // (the reply is the new assistant turn, editable); the id survives a reload of the page in this tab.
  var PENDING_KEY = "lensweb.pendingReply";
  var pendingReply = null;
  try { pendingReply = sessionStorage.getItem(PENDING_KEY); } catch (e) { pendingReply = null; }

  function setPending(id) {
    pendingReply = id;
    try {
      if (id) sessionStorage.setItem(PENDING_KEY, id); else sessionStorage.removeItem(PENDING_KEY);
    } catch (e) { /* storage off: kept for this page only */ }
  }

  var appending = false;
  function checkPendingReply() {
    if (!pendingReply || appending) return;
    // "Generate, then analyse": done, the generation's card became its analysis' card, which names it
    var use = document.querySelector('.from-gen[data-after-generation="' + pendingReply + '"][data-use-input]');
    var card = document.getElementById("gen-" + pendingReply);
    if (!card && !use) return;
    var status = use ? "done" : card.dataset.status;
    if (status === "failed" || status === "cancelled") { setPending(null); return; }
    if (status !== "done") return;
    use = use || card.querySelector("[data-use-input]");
    if (!use) { setPending(null); return; }
    appending = true;
    fetchInput(use.dataset.useInput).then(function (input) {
      if (input.messages) chatIntoBuilder(input);
      var list = document.getElementById("chat-turns");
      var last = list && list.querySelector("[data-turn]:last-child textarea");
      if (last) last.focus();
      setPending(null);
    }).catch(function (err) {
      socketMessage("could not add the reply to the chat: " + err.message);
      setPending(null);
    }).finally(function () { appending = false; });
  }

  document.addEventListener("htmx:load", function (e) {
    var el = e.target;
    if (el && el.id === "generation-form") {
      showMode(el);
      var chat = el.querySelector("#chat-builder[data-pending-reply]");
      if (chat) setPending(chat.dataset.pendingReply);
    }
    checkPendingReply();
  });
  document.addEventListener("htmx:wsAfterMessage", checkPendingReply);
  document.addEventListener("DOMContentLoaded", function () {
    var form = genForm();
    if (form) showMode(form);
    checkPendingReply();
  });

  // --- "queued" flashes end with their job ----------------------------------------------------------

  var FINAL = ["done", "failed", "cancelled"];
  var FLASH_LINGER_MS = 3000; // long enough to be read when a job (a cache hit) ends at once

  // data-flash-for="analysis-N" or "generation-N": whether that job's final state is on the page.
  function jobEnded(key) {
    var dash = key.lastIndexOf("-");
    var kind = key.slice(0, dash);
    var id = key.slice(dash + 1);
    if (kind === "analysis") {
      var status = document.getElementById("status-" + id);
      return !!status && status.hasAttribute("data-final");
    }
    if (kind === "generation") {
      var card = document.getElementById("gen-" + id);
      if (card) return FINAL.indexOf(card.dataset.status) >= 0;
      // done and followed by its analysis, whose card took the generation's place
      return !!document.querySelector("[data-after-generation='" + id + "']");
    }
    return false;
  }

  function retire(flash) {
    if (flash.id) {
      // a swap target (a generation card's note): emptied, so that the next answer still has its place
      flash.textContent = "";
      flash.classList.remove("ok", "ending");
      flash.removeAttribute("data-flash-for");
    } else {
      flash.remove();
    }
  }

  function endFlashes() {
    document.querySelectorAll("[data-flash-for]:not(.ending)").forEach(function (flash) {
      if (!jobEnded(flash.dataset.flashFor)) return;
      flash.classList.add("ending");
      setTimeout(function () { retire(flash); }, FLASH_LINGER_MS);
    });
  }

  // --- the finished cards the page keeps --------------------------------------------------------------

  // The server shows the queued and running jobs and the last few to finish (#live's data-keep-finished);
  // as jobs finish while the page is open, the cards of those that finished longest ago go (History has
  // them). A card counts once it is as it stays: an analysis with its final status, a settled generation.
  function finishedAt(card) {
    if (card.classList.contains("gen")) {
      return card.hasAttribute("data-settled") ? parseFloat(card.dataset.settled) || 0 : null;
    }
    var status = card.querySelector(".job-status[data-final]");
    return status ? parseFloat(status.dataset.final) || 0 : null;
  }

  function trimFinished() {
    var live = document.getElementById("live");
    var jobs = document.getElementById("jobs");
    var keep = live ? parseInt(live.dataset.keepFinished, 10) : NaN;
    if (!jobs || isNaN(keep)) return;
    var ended = [];
    Array.prototype.forEach.call(jobs.children, function (card) {
      if (!card.classList.contains("job")) return;
      var at = finishedAt(card);
      if (at !== null) ended.push({ card: card, at: at });
    });
    ended.sort(function (a, b) { return b.at - a.at; }); // stable: equal times keep the page's order
    ended.slice(keep).forEach(function (e) { e.card.remove(); });
  }

  function jobsChanged() {
    trimFinished();
    endFlashes();
  }
  document.addEventListener("htmx:wsAfterMessage", jobsChanged);
  document.addEventListener("htmx:load", endFlashes);
  document.addEventListener("DOMContentLoaded", jobsChanged);

  // --- Copy buttons (a share link, a new API key): data-copy names the field whose value they copy ------
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-copy]");
    if (!button) return;
    var input = document.querySelector(button.dataset.copy);
    if (!input) return;
    input.select();
    if (navigator.clipboard) {
      navigator.clipboard.writeText(input.value).then(function () { button.textContent = "Copied"; });
    }
  });

  // --- a running job whose worker stopped answering -------------------------------------------------
  // A dead worker sends nothing, so each card counts its silence on from the age the server rendered
  // (partials/silent-note.html): past `after` seconds the note replaces the ETA until the job is re-queued
  // (whose card then arrives) or its worker speaks again (a fresh render resets the count).

  function tickSilence() {
    var now = performance.now();
    document.querySelectorAll(".silent-note[data-age]").forEach(function (note) {
      if (!note._since) note._since = now;
      var age = parseFloat(note.dataset.age) + (now - note._since) / 1000;
      var silent = age >= parseFloat(note.dataset.after);
      note.hidden = !silent;
      var eta = note.parentElement && note.parentElement.querySelector(".eta");
      if (eta) eta.hidden = silent;
      if (!silent) return;
      note.querySelector(".silent-for").textContent = String(Math.round(age));
      var left = parseFloat(note.dataset.requeue) - age, when = note.querySelector(".requeue-in");
      when.textContent = left > 0 ? when.dataset.in.replace("{n}", String(Math.ceil(left))) : when.dataset.soon;
    });
  }
  setInterval(tickSilence, 1000);

  // --- "Re-run with changes": the analysis form, refilled --------------------------------------------

  function openRerun(form) {
    showTab("analyse");
    form.scrollIntoView({ block: "start" });
    var text = form.querySelector("textarea[name=text]");
    if (text) text.focus({ preventScroll: true });
  }
  document.addEventListener("htmx:load", function (e) {
    if (e.target && e.target.id === "analysis-form" && e.target.hasAttribute("data-rerun")) openRerun(e.target);
  });
  document.addEventListener("DOMContentLoaded", function () {
    var form = document.querySelector("#analysis-form[data-rerun]");
    if (form) openRerun(form); // runs after the handler above: the refilled form wins over the kept tab
  });
})();
