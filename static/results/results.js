// Results pages: word tooltips, sortable headers, transposed column width, the full text's hover box.
// No inline scripts or handlers anywhere (CSP without unsafe-inline); everything is delegated from here.
(function () {
  "use strict";

  // --- hover a word: its salience and token id ------------------------------------------------------
  function tip() { return document.getElementById("word-tip"); }

  function showTip(word) {
    var el = tip();
    if (!el) return;
    var parts = [];
    if (word.dataset.s !== undefined) parts.push("salience " + word.dataset.s);
    if (word.dataset.i !== undefined) parts.push("token id " + word.dataset.i);
    if (word.dataset.c !== undefined) parts.push("the current token, added by the lens");
    if (!parts.length) return;
    el.textContent = "“" + word.textContent + "” · " + parts.join(" · ");
    el.hidden = false;
    var r = word.getBoundingClientRect();
    el.style.left = Math.max(4, window.scrollX + r.left) + "px";
    el.style.top = (window.scrollY + r.bottom + 6) + "px";
  }

  document.addEventListener("mouseover", function (e) {
    var word = e.target.closest && e.target.closest(".w");
    if (word) showTip(word);
  });
  document.addEventListener("mouseout", function (e) {
    var word = e.target.closest && e.target.closest(".w");
    var el = tip();
    if (word && el && !(e.relatedTarget && word.contains(e.relatedTarget))) el.hidden = true;
  });
  document.addEventListener("focusin", function (e) {
    var word = e.target.closest && e.target.closest(".w");
    if (word) showTip(word);
  });

  // --- sortable column headers: set the form's sort fields, then let the form ask the server ------------
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("button[data-sort]");
    if (!button) return;
    var form = document.getElementById("results-controls");
    if (!form) return;
    var sort = form.querySelector("[name=sort]");
    var dir = form.querySelector("[name=dir]");
    var key = button.dataset.sort;
    if (sort.value === key) {
      dir.value = dir.value === "desc" ? "asc" : "desc";
    } else {
      sort.value = key;
      dir.value = key === "position" ? "asc" : "desc";
    }
    if (window.htmx) {
      window.htmx.trigger(form, "change");
    } else {
      form.submit();
    }
  });

  // --- view tabs: reflect the checked one (the server answers with the view) -------------------------
  document.addEventListener("change", function (e) {
    if (e.target.name !== "view") return;
    var tabs = e.target.closest(".tabs");
    if (!tabs) return;
    tabs.querySelectorAll(".tab").forEach(function (t) {
      t.classList.toggle("on", t.contains(e.target));
    });
  });

  // --- transposed view: column width, remembered in this browser ------------------------------------
  var WIDTH_KEY = "lensweb.results.colWidth";

  function applyWidth() {
    var slider = document.getElementById("col-width");
    var grid = document.getElementById("transposed");
    if (!slider || !grid) return;
    var saved = window.localStorage ? window.localStorage.getItem(WIDTH_KEY) : null;
    if (saved) slider.value = saved;
    grid.style.setProperty("--col-w", slider.value + "px");
  }

  document.addEventListener("input", function (e) {
    if (e.target.id !== "col-width") return;
    var grid = document.getElementById("transposed");
    if (grid) grid.style.setProperty("--col-w", e.target.value + "px");
    try { window.localStorage.setItem(WIDTH_KEY, e.target.value); } catch (err) { /* private mode */ }
  });
  document.addEventListener("DOMContentLoaded", applyWidth);
  document.addEventListener("htmx:afterSettle", applyWidth);

  // --- best-of-k candidates: fetched when a row unfolds (inline they would double a long page's weight) ----
  document.addEventListener("toggle", function (e) {
    var details = e.target;
    if (!details.classList || !details.classList.contains("cands") || !details.open || details.dataset.loaded) return;
    var table = details.closest("[data-candidates]");
    var row = details.closest("tr[id^=pos-]");
    if (!table || !row || !window.htmx) return;
    details.dataset.loaded = "1";
    var holder = document.createElement("p");
    holder.className = "cand-list muted";
    holder.textContent = "loading…";
    details.appendChild(holder);
    window.htmx.ajax("GET", table.dataset.candidates + row.id.slice(4) + "/", { target: holder, swap: "outerHTML" });
  }, true);

  // --- your own explanation under a row: its panel fetched when "edit" unfolds (the owner's only) ----------
  document.addEventListener("toggle", function (e) {
    var details = e.target;
    if (!details.classList || !details.classList.contains("mine") || !details.open || details.dataset.loaded) return;
    var table = details.closest("[data-scores]");
    var row = details.closest("tr[id^=pos-]");
    if (!table || !row || !window.htmx) return;
    details.dataset.loaded = "1";
    var holder = document.createElement("p");
    holder.className = "muted";
    holder.textContent = "loading…";
    details.appendChild(holder);
    window.htmx.ajax("GET", table.dataset.scores + row.id.slice(4) + "/", { target: holder, swap: "outerHTML" });
  }, true);

  // --- full text: click a token without a row to analyse it (shift-click chooses several) ---------------
  var chosen = [];

  function growForm() { return document.getElementById("grow-form"); }

  function showChosen() {
    var button = document.getElementById("grow-chosen");
    if (!button) return;
    button.hidden = chosen.length === 0;
    button.textContent = "Analyse chosen (" + chosen.length + ")";
  }

  function toggleChosen(token) {
    var p = token.dataset.position;
    var at = chosen.indexOf(p);
    if (at >= 0) chosen.splice(at, 1); else chosen.push(p);
    token.classList.toggle("chosen", at < 0);
    showChosen();
  }

  function analyse(extra) {
    var form = growForm();
    if (!form) return;
    var positions = chosen.slice();
    if (extra !== undefined && positions.indexOf(extra) < 0) positions.push(extra);
    if (!positions.length) return;
    form.querySelector("[name=positions]").value = positions.join(",");
    chosen = [];
    if (window.htmx) window.htmx.trigger(form, "submit"); else form.submit();
  }

  function growable(el) {
    return el.closest && el.closest(".fulltext .tb.unanalysed[role=button]");
  }

  document.addEventListener("click", function (e) {
    var token = growable(e.target);
    if (!token) return;
    if (e.shiftKey) toggleChosen(token); else analyse(token.dataset.position);
  });
  document.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" && e.key !== " ") return;
    var token = growable(e.target);
    if (!token) return;
    e.preventDefault();
    if (e.shiftKey || e.key === " ") toggleChosen(token); else analyse(token.dataset.position);
  });
  document.addEventListener("submit", function (e) {
    // "Analyse chosen": the positions field is filled from the choice before htmx sends the form
    if (e.target.id !== "grow-form") return;
    var field = e.target.querySelector("[name=positions]");
    if (!field.value && chosen.length) { field.value = chosen.join(","); chosen = []; }
  }, true);
  document.addEventListener("htmx:afterSettle", function () {
    // the body came again: choices still on screen stay marked
    chosen = chosen.filter(function (p) {
      var token = document.getElementById("f-" + p);
      if (token && token.classList.contains("unanalysed")) { token.classList.add("chosen"); return true; }
      return false;
    });
    showChosen();
  });

  // --- keyboard: j/k next/previous position, ←/→ its words, t/r/f the three views, Enter a token's row ------
  var VIEW_KEYS = { t: "table", r: "transposed", f: "fulltext" };
  var ITEMS = "#results-table tbody tr[id^=pos-], #transposed .tcol, #fulltext .tb[id^=f-]";

  function typing(el) { return el && (el.isContentEditable || /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName)); }
  function focusItem(item) {
    if (!item.hasAttribute("tabindex")) item.setAttribute("tabindex", "-1");
    item.focus({ preventScroll: true });
    item.scrollIntoView({ block: "nearest" });
  }
  document.addEventListener("keydown", function (e) {
    if (e.altKey || e.ctrlKey || e.metaKey || typing(e.target)) return;
    var key = e.key, active = document.activeElement;
    if (VIEW_KEYS[key]) {
      var radio = document.querySelector("#results-controls input[name=view][value=" + VIEW_KEYS[key] + "]");
      if (radio && !radio.checked) {
        radio.checked = true;
        radio.dispatchEvent(new Event("change", { bubbles: true }));  // the form asks the server (htmx)
      }
      e.preventDefault();
      return;
    }
    var items = Array.prototype.slice.call(document.querySelectorAll(ITEMS));
    if ((key === "j" || key === "k") && items.length) {
      var here = active && active.closest ? active.closest(ITEMS) : null, at = items.indexOf(here);
      var next = key === "j" ? Math.min(items.length - 1, at + 1) : Math.max(0, at - 1);
      focusItem(items[next]);
      e.preventDefault();
      return;
    }
    if ((key === "ArrowRight" || key === "ArrowLeft") && active && active.closest) {
      var row = active.closest("tr[id^=pos-], .tcol");
      var words = row ? Array.prototype.slice.call(row.querySelectorAll(".w")) : [];
      if (!words.length) return;
      var i = words.indexOf(active);
      words[key === "ArrowRight" ? Math.min(words.length - 1, i + 1) : Math.max(0, i - 1)].focus();
      e.preventDefault();
      return;
    }
    if (key === "Enter" && active && active.matches && active.matches("#fulltext .tb[id^=f-]:not(.unanalysed):not(.queued)")) {
      var url = new URL(window.location.href);  // its row: the table view, at its position
      url.searchParams.set("view", "table");
      url.hash = "pos-" + active.id.slice(2);
      window.location.assign(url.toString());
      e.preventDefault();
    }
  });

  // --- the chart as a file: SVG as drawn (it carries its own colours and fonts), PNG at twice its size ----
  function save(blob, name) {
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = name;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 10000);
  }
  function chartSvg(button) {
    var svg = button.closest(".chart-box").querySelector("svg.chart");
    var copy = svg.cloneNode(true);
    var box = svg.viewBox.baseVal;
    copy.setAttribute("width", String(box.width));
    copy.setAttribute("height", String(box.height));
    copy.removeAttribute("class");
    var back = document.createElementNS("http://www.w3.org/2000/svg", "rect");  // a figure on white paper
    back.setAttribute("width", "100%");
    back.setAttribute("height", "100%");
    back.setAttribute("fill", "#fff");
    copy.insertBefore(back, copy.firstChild);
    return { text: '<?xml version="1.0" encoding="UTF-8"?>\n' + new XMLSerializer().serializeToString(copy),
             width: box.width, height: box.height };
  }
  document.addEventListener("click", function (e) {
    var button = e.target.closest && e.target.closest("[data-chart-download]");
    if (!button) return;
    var chart = chartSvg(button), name = button.dataset.name;
    var svgBlob = new Blob([chart.text], { type: "image/svg+xml" });
    if (button.dataset.chartDownload === "svg") { save(svgBlob, name + ".svg"); return; }
    var image = new Image(), scale = 2;  // a blob: image: the results page's policy allows it (img-src)
    image.onload = function () {
      var canvas = document.createElement("canvas");
      canvas.width = chart.width * scale;
      canvas.height = chart.height * scale;
      var context = canvas.getContext("2d");
      context.scale(scale, scale);
      context.drawImage(image, 0, 0, chart.width, chart.height);
      URL.revokeObjectURL(image.src);
      canvas.toBlob(function (png) { save(png, name + ".png"); }, "image/png");
    };
    image.src = URL.createObjectURL(svgBlob);
  });

  // --- the full text's hover box, kept on screen ----------------------------------------------------
  // It opens under its token; near the right edge it moves left by what would spill over (CSSOM, which the
  // CSP allows), near the left edge right.
  function placeTip(e) {
    var token = e.target.closest && e.target.closest(".fulltext .tb");
    var box = token && token.querySelector(".tip");
    if (!box) return;
    box.style.left = "0px";
    var rect = box.getBoundingClientRect(), room = document.documentElement.clientWidth - 8;
    if (rect.width === 0) return;
    var shift = rect.right > room ? room - rect.right : 0;
    if (rect.left + shift < 8) shift = 8 - rect.left;
    box.style.left = shift + "px";
  }
  document.addEventListener("mouseover", placeTip);
  document.addEventListener("focusin", placeTip);

})();
