"""Recording delivery outcomes, claiming due mail, and the operator verbs (delete, flush) on a
real spool database (spool/transitions.py)."""
from __future__ import annotations

import pytest

from spool import InvalidTransition, NewMessage, QueueState, RcptState
from spool import db, query, transitions
from spool.commit import insert_message
from spool.transitions import RcptOutcome

Q, R = QueueState, RcptState
T0 = 1_700_000_000.0
RCPTS = ("one@example.com", "two@example.com", "three@example.com")


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def txn(conn, fn, *args, **kw):
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn(conn, *args, **kw)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return out


def add(conn, rcpts=RCPTS, state=Q.INCOMING, now=T0) -> str:
    msg = NewMessage(mail_from="a@remote.test", rcpt_tos=tuple(rcpts), state=state,
                     data=b"Subject: t\r\n\r\nbody\r\n")
    return txn(conn, insert_message, msg, now=now)


def body(conn, qid):
    return conn.execute("SELECT data FROM bodies WHERE queue_id=?", (qid,)).fetchone()


def active(conn, rcpts=RCPTS) -> str:
    qid = add(conn, rcpts)
    assert txn(conn, transitions.claim_due, 10, now=T0) == [qid]
    return qid


def test_mixed_outcomes_defer_then_bounce(conn):
    qid = active(conn)
    outcomes = [RcptOutcome(0, R.DELIVERED, 250, "2.0.0 ok", "mx1[127.0.0.11]:25"),
                RcptOutcome(1, R.BOUNCED, 550, "5.1.1 user unknown", "mx1[127.0.0.11]:25"),
                RcptOutcome(2, R.PENDING, 451, "4.3.0 try later", "mx1[127.0.0.11]:25")]
    assert txn(conn, transitions.record_attempt, qid, outcomes, T0 + 300, now=T0 + 1) is Q.DEFERRED
    m = query.get_message(conn, qid, with_data=True)
    assert m.state is Q.DEFERRED and m.next_attempt_at == T0 + 300 and m.attempts == 1
    assert [(r.state, r.reply_code, r.attempts) for r in m.recipients] == [
        (R.DELIVERED, 250, 1), (R.BOUNCED, 550, 1), (R.PENDING, 451, 1)]
    assert m.recipients[1].reply_text == "5.1.1 user unknown"
    assert m.recipients[0].remote_host == "mx1[127.0.0.11]:25"
    assert m.last_error == "550 5.1.1 user unknown"       # the first non-delivered outcome
    assert m.data is not None                              # still needed for the retry
    # next attempt: the pending one is delivered; none pending, one bounced -> bounced
    assert txn(conn, transitions.claim_due, 10, now=T0 + 300) == [qid]
    state = txn(conn, transitions.record_attempt, qid, [RcptOutcome(2, R.DELIVERED, 250, "ok")],
                T0 + 900, now=T0 + 301)
    assert state is Q.BOUNCED
    m = query.get_message(conn, qid, with_data=True)
    assert m.state is Q.BOUNCED and m.attempts == 2 and m.data is None
    assert [r.state for r in m.recipients] == [R.DELIVERED, R.BOUNCED, R.DELIVERED]
    assert body(conn, qid) is None


def test_all_delivered_is_delivered_and_body_deleted(conn):
    qid = active(conn)
    outs = [RcptOutcome(i, R.DELIVERED, 250, "2.0.0 ok") for i in range(3)]
    assert txn(conn, transitions.record_attempt, qid, outs, T0 + 300, now=T0) is Q.DELIVERED
    assert body(conn, qid) is None
    assert query.get_message(conn, qid).state is Q.DELIVERED
    # the record stays for `queue show` until purged
    assert [r.state for r in query.get_message(conn, qid).recipients] == [R.DELIVERED] * 3


def test_all_bounced_is_bounced(conn):
    qid = active(conn, RCPTS[:2])
    outs = [RcptOutcome(i, R.BOUNCED, 550, "5.1.1 no") for i in range(2)]
    assert txn(conn, transitions.record_attempt, qid, outs, T0, now=T0) is Q.BOUNCED
    assert body(conn, qid) is None


def test_a_delivered_recipient_is_never_pending_again(conn):
    qid = active(conn, RCPTS[:2])
    txn(conn, transitions.record_attempt, qid,
        [RcptOutcome(0, R.DELIVERED, 250, "ok"), RcptOutcome(1, R.PENDING, 451, "later")], T0, now=T0)
    assert txn(conn, transitions.claim_due, 10, now=T0) == [qid]
    # a confused worker reports both as failed: the delivered one must stay delivered
    txn(conn, transitions.record_attempt, qid,
        [RcptOutcome(0, R.PENDING, 451, "later"), RcptOutcome(1, R.PENDING, 451, "later")], T0, now=T0)
    m = query.get_message(conn, qid)
    assert [r.state for r in m.recipients] == [R.DELIVERED, R.PENDING]
    assert [r.address for r in m.pending] == [RCPTS[1]]
    assert m.recipients[0].attempts == 1 and m.recipients[1].attempts == 2


def test_record_attempt_needs_an_active_message(conn):
    qid = add(conn)                                       # incoming, not claimed
    with pytest.raises(InvalidTransition):
        txn(conn, transitions.record_attempt, qid, [RcptOutcome(0, R.DELIVERED, 250, "ok")], T0)
    m = query.get_message(conn, qid)
    assert m.state is Q.INCOMING and m.recipients[0].state is R.PENDING   # rolled back


def test_claim_due_oldest_first_and_respects_next_attempt_at(conn):
    old, mid, new = (add(conn, now=T0 + i) for i in (0, 10, 20))
    later = add(conn, now=T0 + 5)
    conn.execute("UPDATE messages SET state='deferred', next_attempt_at=? WHERE queue_id=?",
                 (T0 + 1000, later))
    held = add(conn, state=Q.HOLD, now=T0 - 100)
    assert txn(conn, transitions.claim_due, 2, now=T0 + 30) == [old, mid]
    assert txn(conn, transitions.claim_due, 10, now=T0 + 30) == [new]
    assert txn(conn, transitions.claim_due, 10, now=T0 + 999) == []      # deferred, not yet due
    assert txn(conn, transitions.claim_due, 10, now=T0 + 1000) == [later]
    states = {q: query.get_message(conn, q).state for q in (old, mid, new, later, held)}
    assert states == {old: Q.ACTIVE, mid: Q.ACTIVE, new: Q.ACTIVE, later: Q.ACTIVE, held: Q.HOLD}


def test_delete_refuses_active_and_removes_everything_else(conn):
    qid = active(conn)
    with pytest.raises(InvalidTransition):
        txn(conn, transitions.delete_message, qid)
    assert query.get_message(conn, qid).state is Q.ACTIVE
    other = add(conn)
    assert txn(conn, transitions.delete_message, other) is True
    assert query.get_message(conn, other) is None
    for table in ("recipients", "bodies"):   # ON DELETE CASCADE
        n = conn.execute(f"SELECT count(*) FROM {table} WHERE queue_id=?", (other,)).fetchone()[0]
        assert n == 0, table
    assert txn(conn, transitions.delete_message, other) is False


def test_flush_makes_deferred_mail_due(conn):
    a, b = add(conn), add(conn)
    held = add(conn, state=Q.HOLD)
    conn.execute("UPDATE messages SET state='deferred', next_attempt_at=? WHERE queue_id IN (?,?)",
                 (T0 + 5000, a, b))
    assert txn(conn, transitions.flush, a, now=T0 + 1) == 1
    assert query.get_message(conn, a).next_attempt_at == T0 + 1
    assert query.get_message(conn, b).next_attempt_at == T0 + 5000
    assert txn(conn, transitions.flush, now=T0 + 2) == 2                 # every deferred one
    assert txn(conn, transitions.claim_due, 10, now=T0 + 2) == [a, b]
    assert txn(conn, transitions.flush, held, now=T0 + 3) == 0           # hold is not flushed
    assert query.get_message(conn, held).state is Q.HOLD


def test_continuity_hold_keeps_what_is_left_for_the_downstream(conn):
    qid = active(conn, RCPTS[:2])
    state = txn(conn, transitions.record_attempt, qid,
                [RcptOutcome(0, R.DELIVERED, 250, "ok"), RcptOutcome(1, R.PENDING, None, "refused")],
                T0 + 300, now=T0, hold=True)
    assert state is Q.HOLD
    row = conn.execute("SELECT hold_reason, held_at FROM messages WHERE queue_id=?", (qid,)).fetchone()
    assert (row["hold_reason"], row["held_at"]) == ("continuity", T0)
    assert body(conn, qid) is not None
    assert txn(conn, transitions.claim_due, 10, now=T0 + 10_000) == []   # held mail is not claimed


def test_purge_finished_keeps_recent_and_unfinished(tmp_path):
    from spool import db
    from spool.commit import NewMessage, insert_message
    from spool.states import RcptState
    from spool.transitions import RcptOutcome, claim_due, purge_finished, record_attempt
    conn = db.connect(tmp_path / "p.db")
    for q in ("OLD", "NEW", "WAIT"):
        insert_message(conn, NewMessage("a@r.test", ("b@example.com",), b"x", queue_id=q), now=10.0)
    claim_due(conn, 3, now=11.0)
    record_attempt(conn, "OLD", [RcptOutcome(0, RcptState.DELIVERED, 250)], 0, now=100.0)
    record_attempt(conn, "NEW", [RcptOutcome(0, RcptState.BOUNCED, 550)], 0, now=900.0)
    record_attempt(conn, "WAIT", [RcptOutcome(0, RcptState.PENDING, 451)], 2000.0, now=100.0)
    assert purge_finished(conn, before=500.0) == 1
    assert [r[0] for r in conn.execute("SELECT queue_id FROM messages ORDER BY queue_id")] == ["NEW", "WAIT"]
    assert conn.execute("SELECT count(*) FROM recipients WHERE queue_id='OLD'").fetchone()[0] == 0
