"""Admin console, the timeline, for real probe history: a running gateway probes a flapping
downstream (tests/support/flakyproxy.py: every third connection refused, as in
tests/e2e/test_continuity_flapping.py) with a short probe interval until there are enough
results and state changes (normal <-> degraded, plus an event started and stopped with the CLI
and a refused command); then the SVG in chromium must hold, per probe and bucket, exactly the
ok and failed results of the spool, one band per continuity state in the audit trail and one
audit mark per audit row, and the audit table the same rows.

A day cannot be waited for: the gateway's own rows are then written again over the previous 24
hours with spool.continuity.record_probe (the function the gateway records with) at the default
10 s interval, and the 24 h and 7 d views are checked the same way. While comparing, the
gateway runs with continuity off (same data directory), so the history holds still."""
from __future__ import annotations

import time

from spool import continuity as store
from spool import db as spool_db
from tests.support.flakyproxy import FlakyProxy
from tests.support.peers import wait_for
from tests.webmail.admin_pages import admin_page, csp_violations
from tests.webmail.conftest import Recorder, spool_rows, start_webmail

CONF = """
[continuity]
mode = "automatic"
enter_after = 30.0
hold_down = 2.0
tick = 0.25
[probes]
smtp_interval = 0.4
smtp_timeout = 1.0
canary_rcpt = "postmaster@example.com"
"""

MARKS = """rects => rects.map(r => [r.closest('g.lane').dataset.probe,
    r.classList.contains('ok') ? 'ok' : 'fail', parseFloat(r.dataset.t0), parseInt(r.dataset.count)])"""


def count(gw, sql: str, *params) -> int:
    return spool_rows(gw.spool_path, sql, *params)[0]["n"]


def expected_marks(gw, start: float, end: float, bucket: float) -> list:
    out: dict[tuple, int] = {}
    for r in spool_rows(gw.spool_path, "SELECT probe, ok, at FROM probe_results WHERE at >= ? AND at < ?",
                        start, end):
        t0 = start + ((r["at"] - start) // bucket) * bucket
        key = (r["probe"], "ok" if r["ok"] else "fail", t0)
        out[key] = out.get(key, 0) + 1
    return sorted([*k, n] for k, n in out.items())


def expected_bands(audit: list[dict], before: str) -> list[str]:
    modes = [before]
    for a in audit:
        if a["dst"] != modes[-1]:
            modes.append(a["dst"])
    return modes


def check_page(page, gw, range_name: str) -> dict:
    """Load the timeline and compare it with the spool; returns figures."""
    t = time.monotonic()
    resp = page.goto(gw.base + f"/admin/timeline?range={range_name}")
    took = time.monotonic() - t
    assert resp.status == 200
    svg = page.locator("svg#timeline")
    start, end, bucket = (float(svg.get_attribute(f"data-{k}")) for k in ("start", "end", "bucket"))
    assert end - start == {"1h": 3600, "24h": 86400, "7d": 7 * 86400}[range_name]
    assert page.text_content("svg#timeline > title").startswith("Probe results and continuity state")
    desc = page.text_content("svg#timeline > desc")
    shown = sorted(page.locator("svg#timeline rect.mark").evaluate_all(MARKS))
    want = expected_marks(gw, start, end, bucket)
    assert shown == want
    for probe in {m[0] for m in want}:
        ok = sum(m[3] for m in want if m[0] == probe and m[1] == "ok")
        fail = sum(m[3] for m in want if m[0] == probe and m[1] == "fail")
        lane = page.locator(f'svg#timeline g.lane[data-probe="{probe}"]')
        assert (lane.get_attribute("data-ok"), lane.get_attribute("data-fail")) == (str(ok), str(fail))
        row = page.locator(f'#probe-table tr[data-probe="{probe}"]')
        assert (row.locator(".ok-count").text_content(), row.locator(".fail-count").text_content()) == (str(ok), str(fail))
        assert f"probe {probe}: {ok} ok, {fail} failed" in desc
    audit = spool_rows(gw.spool_path, "SELECT * FROM continuity_audit WHERE at >= ? AND at < ? ORDER BY at, id",
                       start, end)
    before = spool_rows(gw.spool_path, "SELECT dst FROM continuity_audit WHERE at < ? ORDER BY at DESC, id DESC"
                        " LIMIT 1", start)
    marks = page.locator("svg#timeline a.audit-mark").evaluate_all("as => as.map(a => parseInt(a.dataset.auditId))")
    assert marks == [a["id"] for a in audit]
    table = page.locator("#audit-table tbody tr[data-audit-id]").evaluate_all(
        "rs => rs.map(r => [parseInt(r.dataset.auditId), r.dataset.src, r.dataset.dst])")
    assert table == [[a["id"], a["src"], a["dst"]] for a in audit]
    bands = page.locator("svg#timeline rect.band").evaluate_all("bs => bs.map(b => b.dataset.mode)")
    assert bands == expected_bands(audit, before[0]["dst"] if before else audit[0]["src"])
    return {"seconds": took, "marks": len(shown), "bands": len(bands), "audit": len(marks),
            "bytes": len(page.content())}


def test_timeline_matches_real_probe_history_and_audit(peers, tmp_path, browser):
    sink = peers.sink(name="exchange")
    proxy = FlakyProxy(sink.port)
    gw = start_webmail(peers, tmp_path, smarthost=f"[127.0.0.1]:{proxy.port}", continuity=None, extra=CONF)
    wait_for(lambda: count(gw, "SELECT count(*) AS n FROM probe_results WHERE ok=0") >= 5
             and count(gw, "SELECT count(*) AS n FROM continuity_audit WHERE dst='degraded'") >= 1,
             60, interval=0.5, what="failed probes and a state change")
    assert gw.gw.cli("continuity", "start", "--reason", "timeline test").stdout.strip() == "ok: continuity"
    refused = gw.gw.cli("continuity", "confirm", check=False)        # nothing awaits confirmation
    assert gw.gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    n = count(gw, "SELECT count(*) AS n FROM probe_results")
    wait_for(lambda: count(gw, "SELECT count(*) AS n FROM probe_results") >= n + 10, 30, interval=0.5,
             what="more probe results after the event")
    commands = spool_rows(gw.spool_path, "SELECT * FROM continuity_audit WHERE command_id IS NOT NULL")
    assert len(commands) == 3, (commands, refused.stdout, refused.stderr)

    # while it runs: the page renders with marks of both kinds, bands and audit marks, CSP holds
    page, _ = admin_page(browser, gw)
    rec = Recorder(page, gw.base)
    csp = csp_violations(page)
    page.goto(gw.base + "/admin/timeline")
    assert page.locator("svg#timeline rect.mark.ok").count() > 0
    assert page.locator("svg#timeline rect.mark.fail").count() > 0
    assert page.locator("svg#timeline rect.band").count() >= 3
    assert page.locator("svg#timeline a.audit-mark.command").count() >= 1
    assert page.locator("svg#timeline rect.mark.fail").first.evaluate("r => getComputedStyle(r).fill") \
        == "rgb(180, 35, 24)"                      # admin.css applies (no inline style needed)
    page.context.close()

    # the same data directory, continuity off: the history holds still while compared
    gw.gw.stop()
    proxy.close()
    gw = start_webmail(peers, tmp_path, continuity="off")
    page, _ = admin_page(browser, gw)
    rec = Recorder(page, gw.base)
    csp = csp_violations(page)
    real = check_page(page, gw, "1h")
    assert real["marks"] >= 6 and real["bands"] >= 4 and real["audit"] >= 5, real
    real24 = check_page(page, gw, "24h")
    assert "continuity" in page.locator("svg#timeline rect.band").evaluate_all("bs => bs.map(b => b.dataset.mode)")

    # a day of the gateway's own rows, written again over the previous 24 h at a 10 s interval
    rows = spool_rows(gw.spool_path, "SELECT * FROM probe_results ORDER BY id")
    first = rows[0]["at"]
    conn = spool_db.connect(gw.spool_path)
    try:
        def tx():
            for k in range(8640):
                r = rows[k % len(rows)]
                store.record_probe(conn, r["probe"], bool(r["ok"]), first - (8640 - k) * 10.0,
                                   r["latency"], r["detail"], bool(r["critical"]))
        spool_db.transaction(conn, tx)
    finally:
        conn.close()
    day = check_page(page, gw, "24h")
    assert day["marks"] >= 1440, day               # every minute of the day has results
    week = check_page(page, gw, "7d")
    assert rec.foreign == [] and rec.dialogs == [] and csp == []
    print(f"\ntimeline figures: real 1h={real} real 24h={real24} day={day} week={week}")
