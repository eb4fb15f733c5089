// jobtable dashboard: live overview, relative times and confirmed actions. No build step.
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

  // The overview's live part is re-rendered by the server and swapped in place.
  var live = document.getElementById("overview");
  var indicator = document.getElementById("live-indicator");
  if (live && live.dataset.partial) {
    var busy = false;
    var tick = function () {
      if (busy || document.hidden) return;
      busy = true;
      fetch(live.dataset.partial, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
        .then(function (html) {
          live.innerHTML = html;  // server-rendered and escaped
          if (indicator) indicator.classList.remove("stale");
        })
        .catch(function () { if (indicator) indicator.classList.add("stale"); })
        .finally(function () { busy = false; });
    };
    setInterval(tick, refreshMs);
  }

  // Actions ask first. Without script the server shows a confirmation page instead.
  var dialog = document.getElementById("confirm-dialog");
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
