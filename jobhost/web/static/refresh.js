// Refresh what the page shows without reloading it: fetch the same address, swap <main>.
// Every data-refresh seconds; not while the tab is hidden; the page greys out while the host
// does not answer.
(function () {
  "use strict";
  var seconds = Number(document.body.dataset.refresh);
  if (!(seconds > 0)) { return; }
  function again() { setTimeout(refresh, seconds * 1000); }
  function refresh() {
    if (document.hidden) { return again(); }
    fetch(location.href, {cache: "no-store"}).then(function (answer) {
      if (!answer.ok) { throw new Error(String(answer.status)); }
      return answer.text();
    }).then(function (html) {
      var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("main");
      if (fresh) { document.getElementById("main").replaceWith(fresh); }
      document.body.classList.remove("stale");
    }).catch(function () {
      document.body.classList.add("stale");
    }).finally(again);
  }
  again();
})();
