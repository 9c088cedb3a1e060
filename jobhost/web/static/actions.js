// The buttons of the pages: each form with data-post is sent as JSON to the API, with the token a
// person entered once in this tab. The token is kept in sessionStorage (this tab only, gone when it
// closes) and sent as the bearer header: never a cookie, never in an address, so no other site can
// make the browser act. Without a token the buttons are off, and the API would refuse anyway.
(function () {
  "use strict";
  var KEY = "jobhost-token";

  function token() { return sessionStorage.getItem(KEY) || ""; }

  function show() {
    var set = token() !== "";
    document.querySelectorAll("form.act fieldset").forEach(function (box) { box.disabled = !set; });
    var state = document.getElementById("token-state");
    if (state) { state.textContent = set ? "token set for this tab" : "no token: the buttons are off"; }
    document.body.classList.toggle("acting", set);
  }

  function say(form, text, ok) {
    var out = form.querySelector("output");
    out.textContent = text;
    out.className = ok ? "ok" : "bad";
  }

  function body(form) {
    var found = {}, params = {};
    Array.prototype.forEach.call(form.elements, function (field) {
      if (!field.name || field.value.trim() === "") { return; }
      if (field.name.indexOf("param.") === 0) { params[field.name.slice(6)] = field.value.trim(); }
      else { found[field.name] = field.value.trim(); }
    });
    if (Object.keys(params).length) { found.params = params; }
    return found;
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form.matches("form.token-set")) {
      event.preventDefault();
      var given = form.elements.token.value.trim();
      if (given) { sessionStorage.setItem(KEY, given); }
      form.reset();
      show();
      return;
    }
    if (!form.matches("form.act")) { return; }
    event.preventDefault();
    if (!token()) { say(form, "enter the API token first", false); return; }
    fetch(form.dataset.post, {
      method: "POST",
      headers: {"Authorization": "Bearer " + token(), "Content-Type": "application/json"},
      body: JSON.stringify(body(form)),
      credentials: "omit",
      cache: "no-store"
    }).then(function (answer) {
      return answer.json().then(function (json) { return {ok: answer.ok, status: answer.status, json: json}; });
    }).then(function (answer) {
      if (!answer.ok) {
        if (answer.status === 401 || answer.status === 403) { sessionStorage.removeItem(KEY); show(); }
        say(form, answer.json.error || ("the host answered " + answer.status), false);
        return;
      }
      var done = form.dataset.done + (answer.json.run_id ? ": run " + answer.json.run_id : "");
      say(form, done, true);
      // A pause or a freeze changes which buttons apply: the page is drawn again; else only its data.
      if ("reload" in form.dataset) { location.reload(); } else { document.dispatchEvent(new Event("jobhost:refresh")); }
    }).catch(function (error) { say(form, "the host did not answer: " + error, false); });
  });

  document.addEventListener("click", function (event) {
    if (event.target.matches("button.token-forget")) { sessionStorage.removeItem(KEY); show(); }
  });
  show();
})();
