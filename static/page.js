// recwatch status page: shows times in the browser's time zone (UTC stays on hover) and
// refreshes the parts marked data-live without reloading the page. Everything works without
// it: the times then read in UTC and a <noscript> refresh reloads the page.
(function () {
  "use strict";
  var two = function (n) { return (n < 10 ? "0" : "") + n; };
  function localise(root) {
    var times = root.querySelectorAll("time[datetime]");
    for (var i = 0; i < times.length; i++) {
      var t = times[i];
      var d = new Date(t.getAttribute("datetime"));
      if (isNaN(d.getTime())) continue;
      t.title = d.toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
      t.textContent = d.getFullYear() + "-" + two(d.getMonth() + 1) + "-" + two(d.getDate()) +
        " " + two(d.getHours()) + ":" + two(d.getMinutes()) + ":" + two(d.getSeconds());
      t.setAttribute("data-local", "");
    }
  }
  function refresh() {
    if (document.hidden) return;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html");
        var live = document.querySelectorAll("[data-live][id]");
        for (var i = 0; i < live.length; i++) {
          var next = fresh.getElementById(live[i].id);
          if (!next) continue;
          var node = document.importNode(next, true);
          localise(node);
          live[i].replaceWith(node);
        }
        var gen = fresh.querySelector(".gen time");
        var here = document.querySelector(".gen time");
        if (gen && here) { here.replaceWith(document.importNode(gen, true)); localise(document.querySelector(".gen")); }
      })
      .catch(function () { /* the next tick tries again */ });
  }
  function start() {
    document.documentElement.setAttribute("data-script", "ran");
    localise(document);
    var every = Number(document.body.getAttribute("data-refresh")) || 0;
    if (every > 0) setInterval(refresh, every * 1000);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();
