"""The queue state machine: every move in TRANSITIONS works on a real spool database, every other
move raises InvalidTransition and leaves the message where it was; terminal states have no exit."""
from __future__ import annotations

import itertools

import pytest

from spool import TRANSITIONS, InvalidTransition, NewMessage, QueueState
from spool import db, query, transitions
from spool.commit import insert_message
from spool.states import check_transition

Q = QueueState
ALL_PAIRS = list(itertools.product(QueueState, QueueState))

#: The table as the design states it (spool/states.py docstring); a change to TRANSITIONS must be
#: a deliberate change to this test too.
EXPECTED = {
    Q.INCOMING: {Q.ACTIVE, Q.HOLD, Q.CORRUPT},
    Q.ACTIVE: {Q.DELIVERED, Q.BOUNCED, Q.DEFERRED, Q.INCOMING, Q.HOLD, Q.CORRUPT},
    Q.DEFERRED: {Q.ACTIVE, Q.HOLD, Q.INCOMING, Q.CORRUPT},
    Q.HOLD: {Q.INCOMING, Q.CORRUPT},
    Q.DELIVERED: set(),
    Q.BOUNCED: set(),
    Q.CORRUPT: {Q.HOLD},
}


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def _message_in(conn, state: QueueState) -> str:
    msg = NewMessage(mail_from="a@remote.test", rcpt_tos=("b@example.com",),
                     data=b"Subject: t\r\n\r\nbody\r\n", state=state)
    conn.execute("BEGIN IMMEDIATE")
    insert_message(conn, msg)
    conn.execute("COMMIT")
    return msg.queue_id


def test_table_is_the_documented_one():
    assert {k: set(v) for k, v in TRANSITIONS.items()} == EXPECTED
    assert set(TRANSITIONS) == set(QueueState)


def test_terminal_states_have_no_exit():
    assert {s for s in QueueState if s.terminal} == {Q.DELIVERED, Q.BOUNCED}
    for s in (Q.DELIVERED, Q.BOUNCED):
        assert TRANSITIONS[s] == frozenset()
    for s in QueueState:
        assert s not in TRANSITIONS[s], f"{s} -> {s} must not be a transition"


@pytest.mark.parametrize("src,dst", ALL_PAIRS, ids=[f"{a.value}->{b.value}" for a, b in ALL_PAIRS])
def test_every_pair_on_a_real_database(conn, src, dst):
    qid = _message_in(conn, src)
    conn.execute("BEGIN IMMEDIATE")
    if dst in EXPECTED[src]:
        left = transitions.move(conn, qid, src, dst, next_attempt_at=1234.5, error="why", now=1000.0)
        conn.execute("COMMIT")
        assert left is src
        m = query.get_message(conn, qid)
        assert m.state is dst
        assert m.next_attempt_at == 1234.5 and m.last_error == "why"
        check_transition(src, dst)  # no exception
    else:
        with pytest.raises(InvalidTransition) as exc:
            transitions.move(conn, qid, src, dst)
        conn.execute("ROLLBACK")
        assert exc.value.actual == src.value and exc.value.dst is dst
        assert query.get_message(conn, qid).state is src
        with pytest.raises(ValueError):
            check_transition(src, dst)


def test_move_is_guarded_by_the_expected_state(conn):
    """A message moved by someone else first is not moved again (UPDATE ... WHERE state=?)."""
    qid = _message_in(conn, Q.DEFERRED)
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(InvalidTransition) as exc:
        transitions.move(conn, qid, Q.INCOMING, Q.HOLD)   # allowed move, wrong source state
    conn.execute("ROLLBACK")
    assert exc.value.actual == "deferred"
    assert query.get_message(conn, qid).state is Q.DEFERRED


def test_move_accepts_any_of_several_sources(conn):
    a, b = _message_in(conn, Q.INCOMING), _message_in(conn, Q.DEFERRED)
    conn.execute("BEGIN IMMEDIATE")
    assert transitions.move(conn, a, (Q.INCOMING, Q.DEFERRED), Q.HOLD) is Q.INCOMING
    assert transitions.move(conn, b, (Q.INCOMING, Q.DEFERRED), Q.HOLD) is Q.DEFERRED
    conn.execute("COMMIT")
    assert {query.get_message(conn, q).state for q in (a, b)} == {Q.HOLD}


def test_missing_message(conn):
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(InvalidTransition) as exc:
        transitions.move(conn, "NOSUCHQUEUEID0", Q.INCOMING, Q.ACTIVE)
    conn.execute("ROLLBACK")
    assert exc.value.actual is None
    assert "no such message" in str(exc.value)
