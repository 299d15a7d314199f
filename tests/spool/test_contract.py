"""The queue core contract (spool.api.QueueSpool), run on both backends: the SQLite spool and the
PostgreSQL spool (a real PostgreSQL 15 from tests/support/postgres.py, a fresh database per test).
Every assertion is on state read back through the spool."""
from __future__ import annotations

import asyncio
import re
import time

import pytest

from spool import InvalidTransition, NewMessage, QueueState, RcptState
from spool.api import QueueSpool
from spool.states import Claim, StaleClaim
from spool.transitions import RcptOutcome

QUEUE_ID = re.compile(r"^[0-9B-Z]{14}([0-9B-Z]{2})?$")


def msg(i: int = 0, rcpts=("bob@example.com",), **kw) -> NewMessage:
    return NewMessage(mail_from=f"a{i}@remote.test", rcpt_tos=tuple(rcpts),
                      data=f"Subject: {i}\r\n\r\nbody {i}\r\n".encode(), **kw)


DELIVERED = RcptOutcome(0, RcptState.DELIVERED, 250, "2.0.0 ok", "mx.example.com[192.0.2.1]")
DEFERRED = RcptOutcome(0, RcptState.PENDING, 451, "4.7.1 try later", "mx.example.com[192.0.2.1]")
BOUNCED = RcptOutcome(0, RcptState.BOUNCED, 550, "5.1.1 no such user", "mx.example.com[192.0.2.1]")


async def test_satisfies_the_protocol(qspool):
    assert isinstance(qspool, QueueSpool)
    assert QUEUE_ID.match(qspool.new_queue_id())


async def test_commit_then_get_returns_envelope_recipients_and_bytes(qspool):
    m = msg(1, rcpts=("bob@example.com", "carol@example.com"), client_addr="192.0.2.9",
            client_helo="client.test", smtputf8=True, body_8bit=True)
    before = time.time()
    assert await qspool.commit(m) == m.queue_id
    got = await qspool.get(m.queue_id, with_data=True)
    assert got.state is QueueState.INCOMING
    assert got.mail_from == "a1@remote.test" and got.data == m.data and got.size == len(m.data)
    assert [(r.idx, r.address, r.state) for r in got.recipients] == [
        (0, "bob@example.com", RcptState.PENDING), (1, "carol@example.com", RcptState.PENDING)]
    assert (got.client_addr, got.client_helo, got.smtputf8, got.body_8bit, got.is_dsn) == \
        ("192.0.2.9", "client.test", True, True, False)
    assert before - 5 < got.arrived_at < time.time() + 5
    assert (await qspool.get(m.queue_id)).data is None
    assert await qspool.get("NOSUCHID") is None


async def test_commit_without_recipients_or_twice_is_refused_alone(qspool):
    with pytest.raises(ValueError):
        await qspool.commit(msg(rcpts=()))
    m = msg(2)
    await qspool.commit(m)
    with pytest.raises(Exception):
        await qspool.commit(m)             # the same queue ID: the integrity error of the backend
    assert (await qspool.counts())["incoming"] == 1
    # in one group commit, the failing operation is undone alone
    a, b = msg(3), msg(4)
    out = await asyncio.gather(qspool.commit(a), qspool.commit(m), qspool.commit(msg(5, rcpts=())),
                               qspool.commit(b), return_exceptions=True)
    assert out[0] == a.queue_id and out[3] == b.queue_id
    assert isinstance(out[1], Exception) and isinstance(out[2], ValueError)
    assert (await qspool.counts())["incoming"] == 3
    assert (await qspool.get(b.queue_id, with_data=True)).data == b.data


async def test_group_commit_of_concurrent_messages(qspool):
    msgs = [msg(i) for i in range(200)]
    before = qspool.batches
    ids = await asyncio.gather(*(qspool.commit(m) for m in msgs))
    assert sorted(ids) == sorted(m.queue_id for m in msgs)
    assert (await qspool.counts())["incoming"] == 200
    assert qspool.batches - before < 200 / 4      # many messages per transaction


async def test_claim_due_takes_each_due_message_once_with_growing_tokens(qspool):
    for i in range(5):
        await qspool.commit(msg(i))
    first = await qspool.claim_due(3)
    second = await qspool.claim_due(10)
    assert len(first) == 3 and len(second) == 2 and await qspool.claim_due(10) == []
    assert all(isinstance(c, Claim) for c in first + second)
    assert len({c.queue_id for c in first + second}) == 5
    tokens = [c.token for c in first + second]
    assert len(set(tokens)) == 5 and max(c.token for c in first) < min(c.token for c in second)
    assert all(c.expires_at > time.time() + 30 for c in first)
    assert (await qspool.counts())["active"] == 5
    # each claim carries its message's size, read by the claim (no read of its own later)
    sizes = {c.queue_id: c.size for c in first + second}
    for q, size in sizes.items():
        assert size == (await qspool.get(q)).size > 0


async def test_record_attempt_delivered_bounced_deferred(qspool):
    ids = [await qspool.commit(msg(i)) for i in range(3)]
    claims = {c.queue_id: c for c in await qspool.claim_due(10)}
    t = lambda q: claims[q].token           # noqa: E731
    assert await qspool.record_attempt(ids[0], [DELIVERED], time.time() + 60, token=t(ids[0])) \
        is QueueState.DELIVERED
    assert await qspool.record_attempt(ids[1], [DEFERRED], time.time() + 3600, token=t(ids[1])) \
        is QueueState.DEFERRED
    dsn = NewMessage(mail_from="", rcpt_tos=("a2@remote.test",), data=b"Subject: bounce\r\n\r\nx\r\n",
                     is_dsn=True)
    assert await qspool.record_attempt(ids[2], [BOUNCED], time.time(), dsn, token=t(ids[2])) \
        is QueueState.BOUNCED
    delivered, deferred, bounced = [await qspool.get(q, with_data=True) for q in ids]
    assert delivered.recipients[0].state is RcptState.DELIVERED and delivered.data is None
    assert delivered.recipients[0].reply_code == 250 and delivered.attempts == 1
    assert deferred.recipients[0].state is RcptState.PENDING and deferred.attempts == 1
    assert "4.7.1" in deferred.last_error
    assert deferred.next_attempt_at > time.time() + 3500
    assert bounced.state is QueueState.BOUNCED and bounced.recipients[0].reply_code == 550
    bounce = await qspool.get(dsn.queue_id, with_data=True)
    assert bounce.is_dsn and bounce.state is QueueState.INCOMING and bounce.mail_from == ""
    counts = await qspool.counts()
    assert (counts["delivered"], counts["deferred"], counts["bounced"], counts["incoming"]) == (1, 1, 1, 1)


async def test_record_attempt_with_hold(qspool):
    q = await qspool.commit(msg())
    [c] = await qspool.claim_due(1)
    assert await qspool.record_attempt(q, [], time.time(), hold=True, token=c.token) is QueueState.HOLD
    got = await qspool.get(q)
    assert got.state is QueueState.HOLD and got.hold_reason == "continuity"


async def test_a_stale_tokens_write_changes_nothing_and_is_counted(qspool):
    q = await qspool.commit(msg())
    [old] = await qspool.claim_due(1, ttl=0.2)
    await asyncio.sleep(0.3)
    assert await qspool.requeue_expired() == 1                 # any node may do this
    assert (await qspool.get(q)).state is QueueState.INCOMING
    [new] = await qspool.claim_due(1)
    assert new.queue_id == q and new.token > old.token
    with pytest.raises(StaleClaim):
        await qspool.record_attempt(q, [DELIVERED], time.time(), token=old.token)
    with pytest.raises(StaleClaim):
        await qspool.move(q, QueueState.ACTIVE, QueueState.DEFERRED, token=old.token)
    assert await qspool.renew([old]) == []
    assert qspool.stale_claims == 2
    got = await qspool.get(q, with_data=True)
    assert got.state is QueueState.ACTIVE and got.recipients[0].state is RcptState.PENDING
    assert got.attempts == 0 and got.data is not None
    assert await qspool.record_attempt(q, [DELIVERED], time.time(), token=new.token) \
        is QueueState.DELIVERED


async def test_renew_keeps_a_claim_past_its_first_expiry(qspool):
    q = await qspool.commit(msg())
    [c] = await qspool.claim_due(1, ttl=0.5)
    [r] = await qspool.renew([c], ttl=30)
    assert r.queue_id == q and r.token == c.token and r.expires_at > c.expires_at + 20
    await asyncio.sleep(0.6)
    assert await qspool.requeue_expired() == 0
    assert (await qspool.get(q)).state is QueueState.ACTIVE


async def test_move_follows_the_transition_table(qspool):
    q = await qspool.commit(msg())
    assert await qspool.move(q, QueueState.INCOMING, QueueState.HOLD) is QueueState.INCOMING
    with pytest.raises(InvalidTransition):
        await qspool.move(q, QueueState.INCOMING, QueueState.ACTIVE)     # it is on hold
    with pytest.raises(InvalidTransition):
        await qspool.move(q, QueueState.HOLD, QueueState.DELIVERED)      # not an allowed move
    with pytest.raises(InvalidTransition):
        await qspool.move("NOSUCHID", QueueState.INCOMING, QueueState.HOLD)
    assert await qspool.move(q, (QueueState.DEFERRED, QueueState.HOLD), QueueState.INCOMING) \
        is QueueState.HOLD
    [c] = await qspool.claim_due(1)
    assert await qspool.move(q, QueueState.ACTIVE, QueueState.DEFERRED, token=c.token,
                             next_attempt_at=time.time() + 600, error="4.3.0 internal") \
        is QueueState.ACTIVE
    got = await qspool.get(q)
    assert got.state is QueueState.DEFERRED and got.last_error == "4.3.0 internal"


async def test_next_due_at_and_scheduling(qspool):
    assert await qspool.next_due_at() is None
    q = await qspool.commit(msg())
    due = await qspool.next_due_at()
    assert abs(due - time.time()) < 5
    [c] = await qspool.claim_due(1)
    assert await qspool.next_due_at() is None                 # active mail is not due
    await qspool.record_attempt(q, [DEFERRED], time.time() + 3600, token=c.token)
    assert await qspool.claim_due(10) == []                   # not due for an hour
    assert abs(await qspool.next_due_at() - (time.time() + 3600)) < 5
    q2 = await qspool.commit(msg(2))
    [c2] = await qspool.claim_due(1)
    await qspool.record_attempt(q2, [DEFERRED], time.time() - 1, token=c2.token)
    assert [c.queue_id for c in await qspool.claim_due(10)] == [q2]


async def test_counts_lists_every_state(qspool):
    counts = await qspool.counts()
    assert counts == {s.value: 0 for s in QueueState}


async def test_message_size_is_the_committed_size(qspool):
    m = msg(7)
    await qspool.commit(m)
    assert await qspool.message_size(m.queue_id) == len(m.data)
    assert await qspool.message_size("NOSUCHID") is None


async def test_record_delivered_writes_delivered_recipients_early_under_the_claim(qspool):
    m = msg(8, rcpts=("bob@example.com", "carol@example.com"))
    await qspool.commit(m)
    (c,) = await qspool.claim_due(10)
    carol_later = RcptOutcome(1, RcptState.PENDING, 451, "4.7.1 later", "mx")
    assert await qspool.record_delivered(m.queue_id, [DELIVERED, carol_later], token=c.token) == 1
    got = await qspool.get(m.queue_id)
    assert got.state is QueueState.ACTIVE          # the attempt has not ended
    assert [r.state for r in got.recipients] == [RcptState.DELIVERED, RcptState.PENDING]
    assert got.recipients[0].reply_code == 250
    # written once: the same outcome again changes nothing
    assert await qspool.record_delivered(m.queue_id, [DELIVERED], token=c.token) == 0
    # under a stale token nothing is written and the refusal is counted
    await qspool.move(m.queue_id, QueueState.ACTIVE, QueueState.DEFERRED, token=c.token)
    before = qspool.stale_claims
    with pytest.raises(StaleClaim):
        await qspool.record_delivered(m.queue_id, [RcptOutcome(1, RcptState.DELIVERED, 250, "ok",
                                                               "mx")], token=c.token)
    assert qspool.stale_claims == before + 1
    assert (await qspool.get(m.queue_id)).recipients[1].state is RcptState.PENDING


async def test_purge_finished_deletes_only_old_finished_messages_in_batches(qspool):
    done = []
    for i in range(5):
        m = msg(20 + i)
        await qspool.commit(m)
        done.append(m.queue_id)
    waiting = msg(30)
    await qspool.commit(waiting)
    claims = [c for c in await qspool.claim_due(10) if c.queue_id in done]
    for c in claims:
        await qspool.record_attempt(c.queue_id, [DELIVERED], time.time(), token=c.token)
    assert await qspool.purge_finished(time.time() - 3600) == 0      # none is an hour old
    await asyncio.sleep(0.05)
    assert await qspool.purge_finished(time.time(), limit=3) == 3     # a batch at most
    assert await qspool.purge_finished(time.time(), limit=3) == 2
    assert await qspool.purge_finished(time.time(), limit=3) == 0
    assert [await qspool.get(q) for q in done] == [None] * 5
    assert (await qspool.get(waiting.queue_id)).state is QueueState.ACTIVE   # not finished: kept


async def test_shared_says_whether_other_nodes_may_requeue_expired_claims(qspool):
    assert qspool.shared is (type(qspool).__name__ == "PgSpool")
