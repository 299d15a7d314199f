"""spool.console (the admin console's reads) and probe retention by age (spool.continuity):
time windows are half-open, the mode in force at a time comes from the audit trail, queue
search matches queue ID, sender and recipient and escapes LIKE wildcards."""
from spool import console, continuity, db
from spool.commit import NewMessage, insert_message


def test_probe_window_half_open_and_retention_by_age(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    for at in (100.0, 200.0, 300.0):
        continuity.record_probe(conn, "smtp", at != 200.0, at, 0.01, "x", True)
    assert [r["at"] for r in console.probe_results_between(conn, 100.0, 300.0)] == [100.0, 200.0]
    assert console.probe_names(conn) == ["smtp"]
    # far more than the old 200-per-probe cap is kept; what is older than 8 days is pruned
    for i in range(300):
        continuity.record_probe(conn, "smtp", True, 1000.0 + i, 0.01, "", True)
    assert len(console.probe_results_between(conn, 0, 10**10)) == 303
    continuity.record_probe(conn, "smtp", True, 100.5 + continuity.PROBE_KEEP_SECONDS, 0.01, "", True)
    assert [r["at"] for r in console.probe_results_between(conn, 0, 1000.0)] == [200.0, 300.0]


def test_mode_at_and_audit_window(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    assert console.mode_at(conn, 50.0) is None
    for at, src, dst in ((100.0, "normal", "degraded"), (200.0, "degraded", "continuity"),
                         (300.0, "continuity", "continuity")):
        conn.execute("INSERT INTO continuity_audit (at, src, dst, actor, reason) VALUES (?,?,?,?,?)",
                     (at, src, dst, "engine", "r"))
    assert console.mode_at(conn, 50.0) == "normal"          # before any record: its source
    assert console.mode_at(conn, 150.0) == "degraded"
    assert console.mode_at(conn, 1000.0) == "continuity"
    rows = console.continuity_audit_between(conn, 100.0, 300.0)
    assert [(r["at"], r["command"]) for r in rows] == [(100.0, ""), (200.0, "")]
    assert [r["at"] for r in console.continuity_audit_between(conn, 0, 1000.0, limit=2)] == [200.0, 300.0]
    assert console.count_audit_between(conn, 0, 1000.0) == 3
    assert [r["dst"] for r in console.mode_changes_between(conn, 0, 1000.0)] == ["degraded", "continuity"]


def test_search_queue(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    insert_message(conn, NewMessage("alice@remote.test", ("bob@example.com", "x_y@example.com"), b"m",
                                    queue_id="ABC123"), now=1.0)
    insert_message(conn, NewMessage("carol@other.test", ("dave@example.com",), b"m", queue_id="DEF456"), now=2.0)
    ids = lambda text, **kw: [r["queue_id"] for r in console.search_queue(conn, text=text, **kw)[0]]
    assert ids("") == ["ABC123", "DEF456"]
    assert ids("abc123") == ["ABC123"] and ids("DEF") == ["DEF456"] and ids("123") == []  # ID: whole or start
    assert ids("ALICE@remote") == ["ABC123"] and ids("dave@") == ["DEF456"]
    assert ids("x_y") == ["ABC123"] and ids("%") == [] and ids("_") == ["ABC123"]        # wildcards literal
    rows, total = console.search_queue(conn, limit=1, offset=1)
    assert total == 2 and rows[0]["queue_id"] == "DEF456" and rows[0]["recipients"] == 1
    assert console.search_queue(conn, ("hold",))[1] == 0
    try:
        console.search_queue(conn, ("nope",))
    except ValueError:
        pass
    else:
        raise AssertionError("unknown state accepted")
