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
    assert continuity.release_held(conn, 2, now=400.0, replay_id="R") == ids[:2]
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
    continuity.release_held(conn, 3, now=200.0, replay_id="R")
    claim_due(conn, 3, now=201.0)
    for q in ids[:2]:
        record_attempt(conn, q, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], 0, now=210.0)
    p = continuity.replay_progress(conn, "R", since=200.0, now=220.0)
    assert (p["done"], p["in_flight"], p["remaining"]) == (2, 1, 1)
    assert p["rate"] == 0.1 and p["eta_seconds"] == 20.0


def defer(conn, ids, now):
    """The downstream answers 4xx: each message is deferred with its own backoff."""
    claim_due(conn, len(ids), now=now)
    for q in ids:
        assert record_attempt(conn, q, [RcptOutcome(0, RcptState.PENDING, 451, "try later")],
                              next_attempt_at=now + 3600, now=now) is QueueState.DEFERRED


def test_in_flight_counts_only_this_replays_unsettled_releases(tmp_path):
    """25 leftovers of an earlier event (released, then deferred by a 4xx: held_seconds > 0)
    and this replay's own deferred mail do not count as in flight: only what this replay
    released and is still incoming or active does."""
    conn = db.connect(tmp_path / "s.db")
    old = held_queue(conn, 25)
    assert len(continuity.release_held(conn, 25, now=200.0, replay_id="CE-1@100")) == 25
    defer(conn, old, now=201.0)
    assert conn.execute("SELECT min(held_seconds) FROM messages").fetchone()[0] > 0
    assert continuity.replay_in_flight(conn, "CE-1@100") == 0     # deferred = settled
    new = [insert_message(conn, NewMessage("a@remote.test", ("bob@example.com",), b"n%d" % i,
                                           queue_id=f"N{i}"), now=300.0 + i) for i in range(3)]
    claim_due(conn, 100, now=310.0)      # the leftovers are not due; the new ones go active
    for q in new:
        record_attempt(conn, q, [], next_attempt_at=0, now=311.0, hold=True)
    replay = continuity.replay_id("CE-2", 400.0)
    assert continuity.release_held(conn, 10, now=400.0, replay_id=replay) == new
    assert continuity.replay_in_flight(conn, replay) == 3
    claim_due(conn, 1, now=401.0)
    assert continuity.replay_in_flight(conn, replay) == 3         # active still counts
    record_attempt(conn, new[0], [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], 0, now=402.0)
    defer(conn, new[1:2], now=403.0)
    assert continuity.replay_in_flight(conn, replay) == 1         # delivered and deferred settled
    p = continuity.replay_progress(conn, replay, since=400.0, now=410.0)
    assert (p["done"], p["deferred"], p["in_flight"], p["remaining"]) == (1, 1, 1, 0)


def test_operator_hold_writes_its_reason_and_release_keeps_held_seconds(tmp_path):
    """`mailgate queue hold`: hold_reason 'operator' (never released by a replay), also for a
    message on continuity hold; `queue release` adds the time on hold to held_seconds."""
    conn = db.connect(tmp_path / "s.db")
    ids = held_queue(conn, 1)                                    # Q000 on continuity hold since 101
    insert_message(conn, NewMessage("a@r.test", ("b@example.com",), b"x", queue_id="OP"), now=1.0)
    continuity.operator_hold(conn, "OP", now=10.0)
    continuity.operator_hold(conn, ids[0], now=150.0)
    rows = {r[0]: tuple(r[1:]) for r in conn.execute(
        "SELECT queue_id, state, hold_reason, held_at FROM messages")}
    assert rows == {"OP": ("hold", "operator", 10.0), ids[0]: ("hold", "operator", 101.0)}
    assert continuity.release_held(conn, 10, now=200.0, replay_id="R") == []
    assert continuity.count_held(conn) == 0
    continuity.operator_release(conn, "OP", now=70.0)
    continuity.operator_release(conn, ids[0], now=301.0)
    rows = {r[0]: tuple(r[1:]) for r in conn.execute(
        "SELECT queue_id, state, hold_reason, held_at, held_seconds FROM messages")}
    assert rows == {"OP": ("incoming", "", None, 60.0), ids[0]: ("incoming", "", None, 200.0)}
