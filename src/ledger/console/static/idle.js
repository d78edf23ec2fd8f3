// The console's only script, and optional: every page works without it. On a shared
// computer a screen left open must not stay open. After the session's idle time without
// any key, pointer or input, it submits the page's own logout form, which ends the session
// on the server and shows the login page. While the person works on a long form without
// sending it, it tells the server at most once a minute that the session is in use.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="console-idle"]');
  var logout = document.querySelector('form[action="/logout"]');
  if (!meta || !logout) {
    return;
  }
  var idleMs = Number(meta.getAttribute("content")) * 1000;
  var csrf = logout.querySelector('input[name="csrf"]').value;
  var last = Date.now();
  var told = last;
  function active() {
    last = Date.now();
    if (last - told >= 60000) {
      told = last;
      fetch("/alive", {method: "POST", headers: {"X-CSRF-Token": csrf},
                       credentials: "same-origin"}).catch(function () {});
    }
  }
  ["keydown", "pointerdown", "input", "wheel"].forEach(function (name) {
    document.addEventListener(name, active, {passive: true});
  });
  setInterval(function () {
    if (Date.now() - last >= idleMs) {
      var ended = document.createElement("input");
      ended.type = "hidden";
      ended.name = "ended";
      ended.value = "idle";
      logout.appendChild(ended);
      logout.submit();
    }
  }, 5000);
})();
