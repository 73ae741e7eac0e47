// lensweb's own script: the chat hint and the socket indicator. No inline scripts (CSP-ready).
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

  function socketState(text, cls) {
    var el = document.getElementById("socket-state");
    if (!el) return;
    el.textContent = text;
    el.className = "socket-state " + cls;
  }
  document.addEventListener("htmx:wsOpen", function () { socketState("live", "live"); });
  // The ws extension reconnects only after these closes; after any other the page must be reloaded.
  var RECONNECTS = [1006, 1011, 1012, 1013];
  document.addEventListener("htmx:wsClose", function (e) {
    var code = e.detail && e.detail.event ? e.detail.event.code : 1006;
    if (code === 4401) socketState("signed out: reload the page to sign in again", "down");
    else if (RECONNECTS.indexOf(code) < 0) socketState("disconnected: reload the page", "down");
    else socketState("reconnecting…", "down");
  });
})();
