"""Spool side of continuity: continuity hold and its release in arrival order, held time kept
out of the queue lifetime, and replay progress computed from the queue."""
from spool import continuity, db
from spool.commit import NewMessage, insert_message
from spool.states import QueueState, RcptState
from spool.transitions import RcptOutcome, claim_due, record_attempt


def held_queue(conn, n, now=100.0):
    ids = []
    for i in range(n):
        ids.append(insert_message(conn, NewMessage("a@remote.test", ("bob@example.com",), b"m%d" % i,
                                                   queue_id=f"Q{i:03d}"), now=now + i))
    claim_due(conn, n, now=now + n)
    for q in ids:
        assert record_attempt(conn, q, [], next_attempt_at=now, now=now + n, hold=True) is QueueState.HOLD
    return ids


def test_release_in_arrival_order_and_held_time_counted(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    ids = held_queue(conn, 5)
    assert continuity.count_held(conn) == 5
    assert continuity.release_held(conn, 2, now=400.0) == ids[:2]
    row = conn.execute("SELECT state, hold_reason, held_seconds FROM messages WHERE queue_id=?", (ids[0],)).fetchone()
    assert (row[0], row[1], row[2]) == ("incoming", "", 295.0)   # held from 105 to 400
    assert continuity.count_held(conn) == 3


def test_operator_hold_is_never_released_by_replay(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    insert_message(conn, NewMessage("a@r.test", ("b@example.com",), b"x", queue_id="OP"), now=1.0)
    conn.execute("UPDATE messages SET state='hold', hold_reason='operator' WHERE queue_id='OP'")
    assert continuity.release_held(conn, 10) == []


def test_replay_progress(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    ids = held_queue(conn, 4)
    continuity.release_held(conn, 3, now=200.0)
    claim_due(conn, 3, now=201.0)
    for q in ids[:2]:
        record_attempt(conn, q, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], 0, now=210.0)
    p = continuity.replay_progress(conn, since=200.0, now=220.0)
    assert (p["done"], p["in_flight"], p["remaining"]) == (2, 1, 1)
    assert p["rate"] == 0.1 and p["eta_seconds"] == 20.0
