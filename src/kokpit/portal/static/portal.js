// kokpit portal: live updates without a build step.
// A page names what it shows in <body data-watch="Kind/ns/name,Kind@cluster/...">; the server's event stream
// (/events, server-sent events fed by the portal's watches) says which of those objects changed, and the page
// fetches its live part again (the same URL with X-Kokpit-Partial: 1) and swaps it in. Forms and the filter
// inputs live outside the swapped part, so typing is never interrupted.
(function () {
  "use strict";
  var watch = document.body.getAttribute("data-watch");
  var dot = document.getElementById("live-state");
  if (!watch || !window.EventSource) { return; }
  var pending = null;
  var inflight = false;
  function refresh() {
    pending = null;
    if (inflight) { pending = setTimeout(refresh, 150); return; }
    inflight = true;
    fetch(window.location.href, { headers: { "X-Kokpit-Partial": "1" }, credentials: "same-origin" })
      .then(function (r) { if (!r.ok) { throw new Error(String(r.status)); } return r.text(); })
      .then(function (html) {
        var live = document.getElementById("live");
        if (live) { live.innerHTML = html; }
        document.body.setAttribute("data-refreshed", String(Date.now()));
      })
      .catch(function () { if (dot) { dot.className = "live off"; } })
      .finally(function () { inflight = false; });
  }
  function connect() {
    var es = new EventSource("/events?watch=" + encodeURIComponent(watch));
    es.addEventListener("open", function () { if (dot) { dot.className = "live on"; } });
    es.addEventListener("change", function () { if (!pending) { pending = setTimeout(refresh, 100); } });
    es.addEventListener("error", function () { if (dot) { dot.className = "live off"; } });
  }
  connect();
})();
