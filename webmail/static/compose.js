// Address suggestions for the compose form (progressive: the form works without this script).
// Fills each field's <datalist> with directory addresses from /compose/suggest (same origin,
// the user's own organisation only). An option's value is the field's text with its last
// address completed, so picking one keeps the addresses typed before it.
(function () {
  "use strict";
  var timers = {};
  function lastToken(value) {
    var i = Math.max(value.lastIndexOf(","), value.lastIndexOf(";"));
    return { head: i < 0 ? "" : value.slice(0, i + 1) + " ", token: value.slice(i + 1).trim() };
  }
  function fill(input) {
    var list = document.getElementById(input.getAttribute("data-suggest"));
    var parts = lastToken(input.value);
    if (!list || parts.token.length < 2) { return; }
    fetch("/compose/suggest?q=" + encodeURIComponent(parts.token), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : []; })
      .then(function (items) {
        while (list.firstChild) { list.removeChild(list.firstChild); }
        items.forEach(function (item) {
          var o = document.createElement("option");
          o.value = parts.head + item.address;
          o.textContent = item.address;
          list.appendChild(o);
        });
      })
      .catch(function () {});
  }
  document.querySelectorAll("input[data-suggest]").forEach(function (input) {
    input.addEventListener("input", function () {
      clearTimeout(timers[input.id]);
      timers[input.id] = setTimeout(function () { fill(input); }, 150);
    });
  });
})();
