// edgecert status page: follows /events and swaps in the page's new main
// part when the status document changes. Without it the page is whole; it
// only saves a reload. No framework, no inline code (the page's CSP allows
// none), nothing but what the server rendered and escaped.
(function () {
  "use strict";
  var main = document.getElementById("main");
  if (!main || !window.EventSource || !window.fetch) {
    return;
  }
  var base = document.querySelector('link[rel="stylesheet"]').getAttribute("href").replace(/page\.css$/, "");
  var busy = false, again = false;

  function partURL() {
    var u = new URL(window.location.href);
    u.searchParams.set("part", "main");
    return u.toString();
  }

  function live(on) {
    var el = document.getElementById("live");
    if (el) {
      el.hidden = !on;
    }
  }

  function refresh() {
    if (busy) {
      again = true;
      return;
    }
    busy = true;
    fetch(partURL(), { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        main.innerHTML = html;
        live(true);
        document.documentElement.dataset.refreshed = String(Date.now());
      })
      .catch(function () { live(false); })
      .then(function () {
        busy = false;
        if (again) {
          again = false;
          refresh();
        }
      });
  }

  var es = new EventSource(base + "events");
  es.addEventListener("open", function () { live(true); });
  es.addEventListener("change", refresh);
  es.addEventListener("error", function () { live(false); });
  // Relative times ("in 59 days") age while nothing changes.
  window.setInterval(refresh, 60000);
})();
