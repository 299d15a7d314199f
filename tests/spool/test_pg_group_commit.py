"""The PostgreSQL group commit (spool.pg.store.PgSpool._commit_batch): a batch whose operations
all succeed commits in one transaction without a savepoint per operation; one operation that
fails with its own error (a duplicate queue ID, a stale claim) sends the batch through the
savepoint path once, so that operation alone fails and every other one is committed. A claim
carries the message's size (the queue manager reads nothing before its budget). Also the
pool's check (spool.pg.db._check): a connection back for less than CHECK_AFTER_IDLE is handed
out without the round trip, an older one is checked (a server-closed one replaced). The outcomes
of one batch are sent first and read after (spool.pg.queue.Sent), each with its own state and
bounce."""
from __future__ import annotations

import asyncio
import time

import psycopg

from spool import NewMessage, RcptState
from spool.states import StaleClaim
from spool.pg import PgSpool
from spool.pg import db as pgdb
from spool.transitions import RcptOutcome


def msg(i: int) -> NewMessage:
    return NewMessage(mail_from=f"s{i}@remote.test", rcpt_tos=("bob@example.com",),
                      data=f"Subject: {i}\r\n\r\n{i}\r\n".encode())


async def test_a_clean_batch_takes_no_savepoints_a_failing_operation_fails_alone(pg_dsn):
    s = await PgSpool.open(pg_dsn, node="gc")
    try:
        ids = await asyncio.gather(*(s.commit(msg(i)) for i in range(100)))
        assert len(set(ids)) == 100 and s.isolated_batches == 0 and s.batches < 50
        dup = msg(1000)
        await s.commit(dup)
        fresh = [msg(2000 + i) for i in range(20)]
        out = await asyncio.gather(*(s.commit(m) for m in fresh[:10]), s.commit(dup),
                                   *(s.commit(m) for m in fresh[10:]), return_exceptions=True)
        assert isinstance(out[10], psycopg.errors.UniqueViolation), out[10]
        assert [o for k, o in enumerate(out) if k != 10] == [m.queue_id for m in fresh]
        assert s.isolated_batches >= 1
        assert (await s.counts())["incoming"] == 121
        # a stale claim's write inside a batch of good ones: refused alone, the others kept
        claims = await s.claim_due(3)
        assert [c.size for c in claims] == [await s.message_size(c) for c in claims]  # read by the claim
        ok = RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx.example.com")
        out = await asyncio.gather(
            s.record_delivered(claims[0].queue_id, [ok], token=claims[0].token),
            s.record_delivered(claims[1].queue_id, [ok], token=claims[1].token + 999),
            s.record_delivered(claims[2].queue_id, [ok], token=claims[2].token),
            return_exceptions=True)
        assert isinstance(out[1], StaleClaim) and not isinstance(out[0], Exception) \
            and not isinstance(out[2], Exception), out
        states = [(await s.get(c.queue_id)).recipients[0].state for c in claims]
        assert states == [RcptState.DELIVERED, RcptState.PENDING, RcptState.DELIVERED], states
    finally:
        await s.close()


async def test_the_pool_checks_only_connections_idle_for_a_while(pg_dsn, monkeypatch):
    checked = []
    real = pgdb.AsyncConnectionPool.check_connection

    async def counting(conn):
        checked.append(conn)
        await real(conn)
    monkeypatch.setattr(pgdb.AsyncConnectionPool, "check_connection", staticmethod(counting))
    s = await PgSpool.open(pg_dsn, node="pc")
    try:
        await s.ping()
        n0 = len(checked)
        for _ in range(20):                   # back to back: no check round trip
            await s.ping()
        assert len(checked) == n0
        await asyncio.sleep(pgdb.CHECK_AFTER_IDLE + 0.1)
        await s.ping()                        # idle long enough: checked
        assert len(checked) == n0 + 1
        # a connection the server closed while idle is found by the check and replaced
        with psycopg.connect(pg_dsn, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                          "WHERE application_name = 'mailgate' AND pid <> pg_backend_pid() "
                          "AND datname = current_database()")
        await asyncio.sleep(pgdb.CHECK_AFTER_IDLE + 0.1)
        t0 = time.monotonic()
        await s.ping()                        # no error: the dead one was replaced
        assert time.monotonic() - t0 < 5
    finally:
        await s.close()


async def test_outcomes_in_one_batch_are_sent_first_and_read_after(pg_dsn):
    """record_attempt under a claim is one statement whose result is read after the whole batch
    is sent (spool.pg.queue.Sent): each message still gets its own state, attempts, error, hold
    reason and bounce; the bytes go only for a terminal state; a stale claim in the batch writes
    nothing, its bounce included, and the others are kept."""
    s = await PgSpool.open(pg_dsn, node="gc2")
    try:
        two = NewMessage(mail_from="s@remote.test", rcpt_tos=("a@example.com", "b@example.com"),
                         data=b"Subject: two\r\n\r\nx\r\n")
        ids = [await s.commit(msg(3000 + i)) for i in range(4)] + [await s.commit(two)]
        claims = {c.queue_id: c for c in await s.claim_due(10)}
        assert set(claims) == set(ids)
        t = lambda q: claims[q].token          # noqa: E731
        ok = RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx.example.com")
        later = RcptOutcome(0, RcptState.PENDING, 451, "4.3.0 try later", "mx.example.com")
        gone = RcptOutcome(0, RcptState.BOUNCED, 550, "5.1.1 no such user", "mx.example.com")
        dsn = NewMessage(mail_from="", rcpt_tos=("s3002@remote.test",), is_dsn=True,
                         data=b"Subject: bounce\r\n\r\nx\r\n")
        stale_dsn = NewMessage(mail_from="", rcpt_tos=("s3003@remote.test",), is_dsn=True,
                               data=b"Subject: lost bounce\r\n\r\nx\r\n")
        before = s.batches
        out = await asyncio.gather(
            s.record_attempt(ids[0], [ok], time.time() + 60, token=t(ids[0])),
            s.record_attempt(ids[1], [later], time.time() + 600, token=t(ids[1])),
            s.record_attempt(ids[2], [gone], time.time() + 60, dsn=dsn, token=t(ids[2])),
            s.record_attempt(ids[3], [gone], time.time() + 60, dsn=stale_dsn,
                             token=t(ids[3]) + 999),
            s.record_attempt(ids[4], [ok], time.time() + 60, hold=True, token=t(ids[4])),
            return_exceptions=True)
        assert s.batches - before <= 2
        assert [str(o.value) if hasattr(o, "value") else type(o).__name__ for o in out] == \
            ["delivered", "deferred", "bounced", "StaleClaim", "hold"]
        m = [await s.get(q, with_data=True) for q in ids]
        assert [x.state.value for x in m] == ["delivered", "deferred", "bounced", "active", "hold"]
        assert [x.attempts for x in m] == [1, 1, 1, 0, 1]
        assert m[1].last_error == "451 4.3.0 try later" and m[2].last_error.startswith("550")
        assert m[4].hold_reason == "continuity"
        assert [r.state for r in m[4].recipients] == [RcptState.DELIVERED, RcptState.PENDING]
        assert m[3].recipients[0].state is RcptState.PENDING
        # bytes: gone for the terminal two, kept for the deferred, the stale and the held one
        assert [x.data is not None for x in m] == [False, True, False, True, True]
        assert (await s.get(dsn.queue_id)) is not None
        assert (await s.get(stale_dsn.queue_id)) is None
    finally:
        await s.close()
