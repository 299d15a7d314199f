"""A large queue stays cheap (migration 0012): claims walk an index, counts read counters kept
by triggers, the purge of finished records goes in bounded batches. Figures: bench/large_queue.py."""
from __future__ import annotations

import sqlite3
import time

from spool import NewMessage, QueueState, RcptState
from spool import db, query
from spool import transitions as tr
from spool.commit import insert_message
from spool.transitions import RcptOutcome


def _msg(rcpts=("b@example.com",)) -> NewMessage:
    return NewMessage(mail_from="a@example.net", rcpt_tos=tuple(rcpts), data=b"Subject: x\r\n\r\nx\r\n")


def _true_counts(conn: sqlite3.Connection) -> dict[str, int]:
    out = {s.value: 0 for s in QueueState}
    out.update(dict(conn.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall()))
    return out


def _plan(conn, sql, args) -> str:
    return " | ".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, args))


def test_counts_follow_every_change_of_state(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    ids = db.transaction(conn, lambda: [insert_message(conn, _msg()) for _ in range(30)])
    assert query.count_by_state(conn) == _true_counts(conn)
    assert query.count_by_state(conn)["incoming"] == 30
    claimed = db.transaction(conn, lambda: tr.claim_due(conn, 20))
    ok = [RcptOutcome(0, RcptState.DELIVERED, 250, "2.0.0 Ok")]
    later = [RcptOutcome(0, RcptState.PENDING, 451, "4.4.1 later")]
    bad = [RcptOutcome(0, RcptState.BOUNCED, 550, "5.1.1 unknown")]
    db.transaction(conn, lambda: [tr.record_attempt(conn, q, ok, time.time()) for q in claimed[:8]])
    db.transaction(conn, lambda: [tr.record_attempt(conn, q, later, time.time() + 300) for q in claimed[8:14]])
    db.transaction(conn, lambda: [tr.record_attempt(conn, q, bad, time.time()) for q in claimed[14:17]])
    db.transaction(conn, lambda: tr.move(conn, ids[25], QueueState.INCOMING, QueueState.HOLD))
    db.transaction(conn, lambda: tr.delete_message(conn, ids[26]))
    c = query.count_by_state(conn)
    assert c == _true_counts(conn)
    assert (c["delivered"], c["deferred"], c["bounced"], c["active"], c["hold"]) == (8, 6, 3, 3, 1)
    assert db.transaction(conn, lambda: tr.purge_finished(conn, time.time() + 1)) == 11
    assert query.count_by_state(conn) == _true_counts(conn)
    assert query.count_by_state(conn)["delivered"] == 0


def test_the_counters_start_from_the_rows_already_there(tmp_path):
    """A spool made before 0012 gets counters equal to its rows when it is migrated."""
    conn = sqlite3.connect(tmp_path / "old.db", isolation_level=None)
    for number, _name, sql in db.migrations():
        if number >= 12:
            break
        for stmt in db._statements(sql):
            conn.execute(stmt)
        conn.execute(f"PRAGMA user_version={number}")
    now = time.time()
    for i, state in enumerate(["incoming"] * 3 + ["deferred"] * 2 + ["delivered"] * 4):
        conn.execute("INSERT INTO messages (queue_id, state, mail_from, size, arrived_at, next_attempt_at,"
                     " updated_at) VALUES (?,?,?,?,?,?,?)", (f"Q{i}", state, "", 1, now, now, now))
    conn.close()
    conn = db.connect(tmp_path / "old.db")
    assert query.count_by_state(conn) == _true_counts(conn)
    assert query.count_by_state(conn)["delivered"] == 4


def test_claiming_due_mail_is_an_index_walk_in_due_order(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    plan = _plan(conn, "SELECT queue_id FROM messages INDEXED BY messages_due_order WHERE state IN"
                 " ('incoming','deferred') AND next_attempt_at<=? ORDER BY next_attempt_at, seq LIMIT ?",
                 (time.time(), 100))
    assert "messages_due_order" in plan and "TEMP B-TREE" not in plan
    # due order: the oldest next attempt first, whatever the state
    now = time.time()
    ids = db.transaction(conn, lambda: [insert_message(conn, _msg(), now=now - 100 + i) for i in range(5)])
    db.transaction(conn, lambda: conn.execute(
        "UPDATE messages SET state='deferred', next_attempt_at=? WHERE queue_id=?", (now - 1000, ids[4])))
    db.transaction(conn, lambda: conn.execute(
        "UPDATE messages SET state='deferred', next_attempt_at=? WHERE queue_id=?", (now + 1000, ids[0])))
    got = db.transaction(conn, lambda: tr.claim_due(conn, 3, now=now))
    assert got == [ids[4], ids[1], ids[2]]
    assert query.next_due_at(conn) == now - 100 + 3


def test_the_purge_goes_in_batches_oldest_first_and_keeps_what_a_mailbox_refers_to(tmp_path):
    conn = db.connect(tmp_path / "s.db")
    now = time.time()
    ids = db.transaction(conn, lambda: [insert_message(conn, _msg(), now=now) for _ in range(12)])
    for i, q in enumerate(ids):
        db.transaction(conn, lambda: conn.execute(
            "UPDATE messages SET state='delivered', updated_at=? WHERE queue_id=?", (now - 1000 + i, q)))
    db.transaction(conn, lambda: conn.execute(
        "INSERT INTO mailbox_messages (mailbox, queue_id, filed_at) VALUES ('b@example.com', ?, ?)",
        (ids[0], now)))
    plan = _plan(conn, "SELECT seq FROM messages INDEXED BY messages_finished WHERE state IN"
                 " ('delivered','bounced') AND updated_at < ? ORDER BY updated_at LIMIT 5", (now,))
    assert "messages_finished" in plan and "TEMP B-TREE" not in plan
    batches = []
    while True:
        n = db.transaction(conn, lambda: tr.purge_finished(conn, now, limit=5))
        batches.append(n)
        if n < 5:
            break
    assert batches == [5, 5, 1]
    left = [r[0] for r in conn.execute("SELECT queue_id FROM messages")]
    assert left == [ids[0]]
    assert query.count_by_state(conn)["delivered"] == 1
