// Refresh what the page shows without reloading it: fetch the same address, swap <main>.
// Loaded on every page (a page that does not refresh has data-refresh="0").
// Every data-refresh seconds; not while the tab is hidden; the page greys out while the host
// does not answer.
(function () {
  "use strict";
  // A filter applies as soon as it is chosen (the pages allow no inline handlers).
  document.addEventListener("change", function (event) {
    if (event.target.matches("select[data-submit]")) { event.target.form.submit(); }
  });
  var seconds = Number(document.body.dataset.refresh);
  if (!(seconds > 0)) { return; }
  var timer = null;
  function again() { clearTimeout(timer); timer = setTimeout(refresh, seconds * 1000); }
  // An action done on the page (actions.js) shows its effect now, not at the next refresh.
  document.addEventListener("jobhost:refresh", function () { clearTimeout(timer); refresh(); });
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
