// processor's status page: refreshes the part of a page marked data-live="<ms>" in place,
// without a reload, by fetching the same URL and swapping that part in. Stops while the tab
// is hidden. No dependencies.
(function () {
  "use strict";
  var region = document.querySelector("[data-live]");
  if (!region) return;
  var every = Number(region.getAttribute("data-live")) || 3000;
  var busy = false;
  function refresh() {
    if (document.hidden || busy) return;
    busy = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "X-Live": "1" } })
      .then(function (response) {
        if (response.redirected || !response.ok) return null;
        return response.text();
      })
      .then(function (html) {
        if (!html) return;
        var next = new DOMParser().parseFromString(html, "text/html").querySelector("[data-live]");
        if (next && next.innerHTML !== region.innerHTML) region.innerHTML = next.innerHTML;
      })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  window.setInterval(refresh, every);
})();
