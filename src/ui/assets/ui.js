// aiopsd web UI — the only script: confirmations, remembering who you are,
// and auto-refresh of the incident list. Every page works without it.
"use strict";

(function () {
  // Ask before a state-changing button submits (data-confirm on the button).
  document.addEventListener("submit", function (event) {
    var button = event.submitter;
    var question = button && button.getAttribute("data-confirm");
    if (question && !window.confirm(question)) {
      event.preventDefault();
      return;
    }
    // Remember the name typed in "Your name" for the next form.
    var by = event.target.querySelector("[data-remember='by']");
    if (by && by.value) {
      try { window.localStorage.setItem("aiopsd.by", by.value); } catch (e) { /* private mode */ }
    }
  });

  function prefill() {
    var name = null;
    try { name = window.localStorage.getItem("aiopsd.by"); } catch (e) { /* private mode */ }
    if (!name) return;
    document.querySelectorAll("[data-remember='by']").forEach(function (input) {
      if (!input.value) input.value = name;
    });
  }

  // Re-fetch the list every N seconds and swap the list section in place;
  // the filter form is outside it, so typing is never interrupted.
  function autoRefresh() {
    var section = document.getElementById("incident-list");
    var toggle = document.getElementById("auto-refresh");
    var status = document.getElementById("refresh-status");
    if (!section || !toggle) return;
    var seconds = parseInt(section.getAttribute("data-refresh"), 10) || 15;
    function tick() {
      if (!toggle.checked || document.hidden) return;
      fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
        .then(function (response) {
          if (response.redirected || !response.ok) {
            throw new Error(response.redirected ? "signed out" : "HTTP " + response.status);
          }
          return response.text();
        })
        .then(function (text) {
          var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("incident-list");
          var current = document.getElementById("incident-list");
          if (fresh && current) current.replaceWith(fresh);
          if (status) status.textContent = "Updated " + new Date().toLocaleTimeString();
        })
        .catch(function (error) {
          if (status) status.textContent = "Not updated (" + error.message + "); reload the page.";
        });
    }
    window.setInterval(tick, seconds * 1000);
  }

  document.addEventListener("DOMContentLoaded", function () {
    prefill();
    autoRefresh();
  });
})();
