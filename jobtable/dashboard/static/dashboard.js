// jobtable dashboard: live pages, relative times, bulk selection and confirmed actions.
// No build step.
(function () {
  "use strict";
  var body = document.body;
  var refreshMs = parseInt(body.dataset.refreshMs || "3000", 10);

  // Relative times ("5 min ago", "in 10 s") kept fresh between refreshes.
  function human(seconds) {
    var s = Math.abs(seconds);
    if (s < 1) return Math.round(s * 1000) + " ms";
    if (s < 10) return s.toFixed(1) + " s";
    if (s < 90) return Math.round(s) + " s";
    if (s < 5400) return Math.round(s / 60) + " min";
    if (s < 129600) {
      var h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
      return m ? h + " h " + m + " min" : h + " h";
    }
    return Math.round(s / 86400) + " d";
  }
  function refreshTimes(root) {
    var now = Date.now();
    (root || document).querySelectorAll("time[data-rel]").forEach(function (el) {
      var t = Date.parse(el.getAttribute("datetime"));
      if (isNaN(t)) return;
      var d = (now - t) / 1000;
      el.textContent = Math.abs(d) < 1 ? "just now" : d > 0 ? human(d) + " ago" : "in " + human(d);
    });
  }
  setInterval(refreshTimes, 5000);

  // Live parts: an element with data-refresh="URL" is re-rendered by the server and
  // swapped in place every few seconds. A part that says data-live="done" (a finished
  // job) stops; a list stays still while jobs are ticked in it or a dialog is open.
  var indicator = document.getElementById("live-indicator");
  var dialog = document.getElementById("confirm-dialog");
  document.querySelectorAll("[data-refresh]").forEach(function (box) {
    var busy = false;
    var timer = null;
    var finished = function () { return !!box.querySelector('[data-live="done"]'); };
    var tick = function () {
      if (busy || document.hidden) return;
      if ((dialog && dialog.open) || box.querySelector("input[type=checkbox]:checked")) {
        if (indicator) indicator.classList.add("paused");
        return;
      }
      busy = true;
      fetch(box.dataset.refresh, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          if (box.querySelector("input[type=checkbox]:checked")) return;  // ticked meanwhile
          box.innerHTML = html;  // server-rendered and escaped
          refreshTimes(box);
          if (indicator) indicator.classList.remove("stale", "paused");
          if (finished() && timer !== null) { clearInterval(timer); timer = null; }
        })
        .catch(function () { if (indicator) indicator.classList.add("stale"); })
        .finally(function () { busy = false; });
    };
    if (!finished()) timer = setInterval(tick, refreshMs);
  });

  // Bulk selection on the jobs list: "all" ticks the page, the count follows.
  function bulkForm(el) { return el && el.closest ? el.closest("form[data-bulk]") : null; }
  function updateCount(form) {
    var n = form.querySelectorAll("input[name=ids]:checked").length;
    var label = form.querySelector("[data-selected-count]");
    if (label) label.textContent = n ? n + " selected" : "none selected";
  }
  document.addEventListener("change", function (event) {
    var form = bulkForm(event.target);
    if (!form) return;
    if (event.target.hasAttribute("data-select-all")) {
      form.querySelectorAll("input[name=ids]").forEach(function (box) {
        box.checked = event.target.checked;
      });
    }
    updateCount(form);
  });
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || form.dataset.bulk === undefined) return;
    var confirmField = form.querySelector("input[name=confirm]");
    if (confirmField.value === "yes") return;
    if (!dialog || typeof dialog.showModal !== "function") return;  // the server asks
    var button = event.submitter;
    var action = button && button.value;
    var ids = Array.prototype.map.call(form.querySelectorAll("input[name=ids]:checked"),
                                       function (box) { return "#" + box.value; });
    event.preventDefault();
    if (!action) return;
    var verb = action === "retry" ? "Retry" : "Cancel";
    dialog.querySelector(".dialog-message").textContent = ids.length
      ? verb + " " + ids.length + " selected job" + (ids.length === 1 ? "" : "s") + " (" + ids.join(", ") + ")?"
      : "Tick the jobs to " + action + " first.";
    var ok = dialog.querySelector("#confirm-ok");
    ok.textContent = verb + " " + ids.length;
    ok.hidden = !ids.length;
    dialog.returnValue = "";
    dialog.onclose = function () {
      ok.hidden = false;
      if (dialog.returnValue === "ok" && ids.length) {
        var field = document.createElement("input");
        field.type = "hidden";
        field.name = "action";
        field.value = action;
        form.appendChild(field);
        confirmField.value = "yes";
        form.submit();
      }
    };
    dialog.showModal();
  });

  // Actions ask first. Without script the server shows a confirmation page instead.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || !form.dataset.confirm) return;
    var confirmField = form.querySelector("input[name=confirm]");
    if (confirmField && confirmField.value === "yes") return;
    if (!dialog || typeof dialog.showModal !== "function") return;
    event.preventDefault();
    dialog.querySelector(".dialog-message").textContent = form.dataset.confirm;
    dialog.querySelector("#confirm-ok").textContent = form.dataset.confirmLabel || "Confirm";
    dialog.returnValue = "";
    dialog.onclose = function () {
      if (dialog.returnValue === "ok") {
        confirmField.value = "yes";
        form.submit();
      }
    };
    dialog.showModal();
  });
})();
