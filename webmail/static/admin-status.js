/* Admin console status page: polls /admin/status.json and updates the page in place (the page
   is complete without this script; the CSP allows only same-origin script files). */
(function () {
  "use strict";
  var PERIOD = 2000;
  function $(id) { return document.getElementById(id); }
  function text(id, v) { var e = $(id); if (e) { e.textContent = v; } }
  function dur(s) {
    if (s === null || s === undefined) { return "\u2014"; }
    s = Math.max(0, Math.floor(s));
    if (s >= 3600) { return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min"; }
    if (s >= 60) { return Math.floor(s / 60) + " min " + (s % 60) + " s"; }
    return s + " s";
  }
  function when(t) {
    return new Date(t * 1000).toISOString().slice(0, 16).replace("T", " ") + " UTC";
  }
  function apply(d) {
    var c = d.continuity;
    if (c) {
      var shownMode = $("st-mode") ? $("st-mode").textContent : "";
      if (shownMode !== c.mode || !!$("st-await") !== !!c.awaiting_confirm) {
        window.location.reload();   // the buttons change with the state: take the server's page
        return;
      }
      text("st-since", when(c.since) + " (" + dur(d.now - c.since) + " ago)");
      text("st-reason", c.reason || "\u2014");
      if (c.health) { text("st-evidence", c.health.detail); }
    }
    text("st-held", String(d.held));
    var r = d.replay, box = $("replay");
    if (box) {
      box.hidden = !r;
      if (r) {
        var bar = $("rp-bar");
        if (bar) { bar.value = r.percent; bar.textContent = r.percent + " %"; }
        text("rp-percent", String(r.percent));
        text("rp-done", String(r.done));
        text("rp-inflight", String(r.in_flight));
        text("rp-remaining", String(r.remaining));
        text("rp-deferred", String(r.deferred));
        text("rp-rate", r.rate.toFixed(1));
        text("rp-eta", dur(r.eta_seconds));
      }
    }
    var cells = document.querySelectorAll("#queue td[data-state]");
    for (var i = 0; i < cells.length; i++) {
      var n = d.queue[cells[i].getAttribute("data-state")];
      if (n !== undefined) { cells[i].textContent = String(n); }
    }
    text("updated", when(d.now));
  }
  function poll() {
    fetch("/admin/status.json", {credentials: "same-origin", cache: "no-store"})
      .then(function (resp) {
        if (resp.redirected || resp.status === 401 || resp.status === 403) { return null; }
        return resp.ok ? resp.json() : null;
      })
      .then(function (d) { if (d) { apply(d); } })
      .catch(function () { /* offline for a moment: try again next period */ })
      .then(function () { window.setTimeout(poll, PERIOD); });
  }
  window.setTimeout(poll, PERIOD);
}());
