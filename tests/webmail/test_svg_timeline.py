"""webmail.admin.svg_timeline: buckets aligned to multiples of their width, one ok and one fail
mark per bucket with results, bands from the audit trail, audit marks for every record, and
the SVG writer (svg_render) escaping what probes and admins wrote (a reason is text, never markup)."""
import pytest

from webmail.admin import svg_timeline as tl
from webmail.admin.svg_render import render_svg


def audit(i, at, src, dst, reason="r", command=""):
    return {"id": i, "at": at, "src": src, "dst": dst, "actor": "engine", "reason": reason,
            "event_id": "", "command_id": None, "command": command}


def test_window_and_buckets():
    start, end, bucket = tl.window("24h", 86400.0 * 100 + 30.5)
    assert (end, end - start, bucket) == (86400.0 * 100 + 60, 86400.0, 60.0)
    with pytest.raises(KeyError):
        tl.window("1y", 0.0)
    res = [{"probe": "smtp", "ok": ok, "at": start + at, "latency": 0.1, "detail": "d"}
           for at, ok in ((0.0, 1), (59.9, 0), (60.0, 1), (61.0, 1), (86400.0, 1), (-1.0, 1))]
    t = tl.build("24h", start, end, bucket, [], res, [], "normal")
    [lane] = t.lanes
    assert [(m.t0 - start, m.count) for m in lane.ok_marks] == [(0.0, 1), (60.0, 2)]
    assert [(m.t0 - start, m.count) for m in lane.fail_marks] == [(0.0, 1)]
    assert (lane.ok, lane.fail) == (3, 1)               # outside the window: not counted
    assert [b.mode for b in t.bands] == ["normal"]


def test_bands_and_audit_marks():
    start, end = 0.0, 86400.0
    rows = [audit(1, 100.0, "normal", "degraded"), audit(2, 200.0, "degraded", "degraded", command="confirm"),
            audit(3, 300.0, "degraded", "continuity"), audit(4, 400.0, "continuity", "recovering")]
    t = tl.build("24h", start, end, 60.0, ["smtp"], [], rows, "normal")
    assert [b.mode for b in t.bands] == ["normal", "degraded", "continuity", "recovering"]
    assert [(b.t0, b.t1) for b in t.bands][1] == (100.0, 300.0)
    assert [(a.row["id"], a.kind) for a in t.audit_marks] == [(1, "change"), (2, "command"), (3, "change"),
                                                              (4, "change")]
    assert tl.build("24h", start, end, 60.0, [], [], [], None).bands == []


def test_svg_escapes_text():
    start, end, bucket = tl.window("1h", 7200.0)
    res = [{"probe": "smtp<x>", "ok": 0, "at": start + 1, "latency": 0.2, "detail": "</title><script>x</script>"}]
    t = tl.build("1h", start, end, bucket, [], res, [audit(1, start + 2, "normal", "degraded", "<b>oops</b>")],
                 "normal")
    svg = str(render_svg(t))
    assert "<script>" not in svg and "<b>" not in svg and "&lt;script&gt;" in svg
    assert 'style=' not in svg                          # the CSP has no 'unsafe-inline' for styles


def test_a_flapping_week_coalesces_bands_and_caps_audit():
    start, end, bucket = tl.window("7d", 86400.0 * 1000)
    changes, mode = [], "normal"
    for k in range(2000):                  # a change every 300 s: two per 600 s bucket
        new = "degraded" if mode == "normal" else "normal"
        changes.append(audit(k + 1, start + 150.0 + k * 300.0, mode, new))
        mode = new
    changes.append(audit(3000, start + 604000.0, mode, "continuity"))
    newest = changes[-tl.AUDIT_MAX:]
    t = tl.build("7d", start, end, bucket, [], [], newest, "normal", changes, len(changes))
    assert t.coalesced == 2001 and len(t.audit_marks) == tl.AUDIT_MAX and t.audit_total == 2001
    modes = [b.mode for b in t.bands]
    assert modes[0] == "degraded" and "normal" not in modes[:-2]   # each bucket saw degraded
    assert modes[-1] == "continuity"
    assert all(b.t0 % bucket == start % bucket for b in t.bands)   # on bucket boundaries
    assert "(the newest of 2001)" in t.desc and "most severe mode" in t.desc
