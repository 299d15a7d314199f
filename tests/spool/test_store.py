"""The Spool façade: group commit through one writer thread, per-operation failure isolation,
outcomes and bounces recorded in one transaction, reads on their own connections."""
from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest

from spool import NewMessage, QueueState, RcptState, Spool, SpoolError
from spool import db, query
from tests.support.smalldisk import SmallDisk
from spool.transitions import RcptOutcome

CONCURRENT = 1000


def msg(i: int = 0, **kw) -> NewMessage:
    kw.setdefault("rcpt_tos", ("bob@example.com",))
    return NewMessage(mail_from=f"a{i}@remote.test", data=f"Subject: {i}\r\n\r\nbody {i}\r\n".encode(),
                      **kw)


@pytest.fixture
async def spool(tmp_path):
    s = await Spool.open(tmp_path / "spool.db")
    yield s
    await s.close()


async def test_group_commit_of_1000_concurrent_messages(tmp_path):
    spool = await Spool.open(tmp_path / "spool.db")
    msgs = [msg(i) for i in range(CONCURRENT)]
    batches_before = spool.batches          # open() ran recovery as one batch
    t0 = time.perf_counter()
    ids = await asyncio.gather(*(spool.commit(m) for m in msgs))
    elapsed = time.perf_counter() - t0
    batches = spool.batches - batches_before
    await spool.close()
    assert ids == [m.queue_id for m in msgs]
    assert len(set(ids)) == CONCURRENT
    assert batches <= CONCURRENT // 10, f"{batches} batches for {CONCURRENT} commits"
    print(f"\n{CONCURRENT} commits in {elapsed:.3f}s, {batches} group commits")
    conn = db.connect(tmp_path / "spool.db")          # a fresh connection after close()
    try:
        assert query.count_by_state(conn)["incoming"] == CONCURRENT
        stored = query.get_message(conn, ids[777], with_data=True)
        assert stored.data == msgs[777].data and stored.mail_from == "a777@remote.test"
        n = conn.execute("SELECT count(*) FROM bodies").fetchone()[0]
        assert n == CONCURRENT
    finally:
        conn.close()


async def test_a_failing_operation_fails_only_its_caller(spool):
    first = msg(1)
    await spool.commit(first)
    # hold the writer busy so that the next operations queue up and share one batch
    blocker = asyncio.create_task(spool.write(lambda conn: time.sleep(0.3)))
    await asyncio.sleep(0.05)
    before = spool.batches
    ok = [msg(i) for i in range(2, 12)]
    dup = msg(99, queue_id=first.queue_id)               # a duplicate queue ID
    empty = NewMessage(mail_from="", rcpt_tos=(), data=b"x")   # no recipient: ValueError
    results = await asyncio.gather(*(spool.commit(m) for m in ok[:5]), spool.commit(dup),
                                   spool.commit(empty), *(spool.commit(m) for m in ok[5:]),
                                   return_exceptions=True)
    await blocker
    assert spool.batches - before <= 2                   # the blocker's batch and the next one
    assert isinstance(results[5], sqlite3.IntegrityError)
    assert isinstance(results[6], ValueError)
    assert results[:5] + results[7:] == [m.queue_id for m in ok]
    for m in ok:
        assert (await spool.get(m.queue_id, with_data=True)).data == m.data
    kept = await spool.get(first.queue_id, with_data=True)
    assert kept.mail_from == "a1@remote.test" and kept.data == first.data   # not overwritten
    assert (await spool.counts())["incoming"] == 11


async def test_failed_commit_fails_every_caller_with_spool_error(tmp_path):
    """A COMMIT that cannot happen (another process holds the write lock past the busy timeout)
    must fail the whole batch with SpoolError: nothing of it may be acknowledged."""
    spool = await Spool.open(tmp_path / "spool.db")
    other = sqlite3.connect(tmp_path / "spool.db", isolation_level=None)
    other.execute("BEGIN IMMEDIATE")                    # an operator's long transaction
    db_busy = db.BUSY_TIMEOUT_MS
    try:
        # a fresh writer connection gets the short busy timeout
        db.BUSY_TIMEOUT_MS = 200
        await spool.close()
        spool = await Spool.open(tmp_path / "spool.db", recover=False)
        # (before the fix in spool/store.py these futures were never resolved: a hang)
        results = await asyncio.wait_for(asyncio.gather(
            *(spool.commit(msg(i)) for i in range(3)), return_exceptions=True), 10)
    finally:
        db.BUSY_TIMEOUT_MS = db_busy
        other.execute("ROLLBACK")
        other.close()
    assert all(isinstance(r, SpoolError) for r in results), results
    assert (await spool.counts())["incoming"] == 0
    assert isinstance(await spool.commit(msg(5)), str)   # works again once the lock is gone
    await spool.close()


async def test_record_attempt_enqueues_the_bounce_in_the_same_transaction(spool):
    m = msg(1, rcpt_tos=("ok@example.com", "gone@example.com"))
    await spool.commit(m)
    assert await spool.claim_due(10) == [m.queue_id]
    dsn = NewMessage(mail_from="", rcpt_tos=(m.mail_from,), is_dsn=True,
                     data=b"Subject: Undelivered Mail\r\n\r\nreport\r\n")
    outs = [RcptOutcome(0, RcptState.DELIVERED, 250, "ok"), RcptOutcome(1, RcptState.BOUNCED, 550, "5.1.1")]
    assert await spool.record_attempt(m.queue_id, outs, time.time() + 300, dsn) is QueueState.BOUNCED
    original = await spool.get(m.queue_id, with_data=True)
    assert original.state is QueueState.BOUNCED and original.data is None
    bounce = await spool.get(dsn.queue_id, with_data=True)
    assert bounce.state is QueueState.INCOMING and bounce.is_dsn and bounce.mail_from == ""
    assert [r.address for r in bounce.recipients] == ["a1@remote.test"]


async def test_record_attempt_failure_does_not_enqueue_the_bounce(spool):
    m = msg(2)
    await spool.commit(m)                                # incoming, never claimed
    dsn = NewMessage(mail_from="", rcpt_tos=(m.mail_from,), is_dsn=True, data=b"x\r\n")
    with pytest.raises(Exception) as exc:
        await spool.record_attempt(m.queue_id, [RcptOutcome(0, RcptState.BOUNCED, 550, "no")], 0.0, dsn)
    assert type(exc.value).__name__ == "InvalidTransition"
    assert await spool.get(dsn.queue_id) is None          # savepoint rolled back both parts
    assert (await spool.get(m.queue_id)).state is QueueState.INCOMING


async def test_move_and_next_due(spool):
    a, b = msg(1), msg(2)
    await spool.commit(a)
    await spool.commit(b)
    assert await spool.move(a.queue_id, QueueState.INCOMING, QueueState.HOLD) is QueueState.INCOMING
    assert (await spool.counts())["hold"] == 1
    due = await spool.next_due_at()
    assert due == (await spool.get(b.queue_id)).next_attempt_at     # the held one does not count
    assert await spool.claim_due(10) == [b.queue_id]
    assert await spool.next_due_at() is None


async def test_open_reports_an_unusable_file(tmp_path):
    bad = tmp_path / "spool.db"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(SpoolError, match="cannot open spool"):
        await Spool.open(bad)


@pytest.mark.skipif(not SmallDisk.available(), reason="mounting a tmpfs needs root")
async def test_a_full_disk_fails_with_a_storage_full_spool_error_then_recovers(tmp_path):
    """A real full disk (tmpfs): the commit fails with SpoolError marked ``full`` (intake answers
    452 4.3.1 from it), nothing is half-stored, and the same spool works once space is back."""
    with SmallDisk(tmp_path / "small", "4M") as disk:
        spool = await Spool.open(disk.path / "spool.db")
        try:
            await spool.commit(msg(1))
            disk.fill()
            big = [msg(i, rcpt_tos=("bob@example.com",)) for i in range(2, 40)]
            results = await asyncio.gather(
                *(spool.commit(NewMessage(m.mail_from, m.rcpt_tos, m.data + b"x" * 60_000))
                  for m in big), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            assert failures, "the disk was full but every commit succeeded"
            assert all(isinstance(r, SpoolError) and r.full for r in failures), failures
            assert "database or disk is full" in str(failures[0])
            disk.free()
            again = await spool.commit(msg(50))
            assert (await spool.get(again)).state is QueueState.INCOMING
            assert await spool.claim_due(100)              # writes work again
        finally:
            await spool.close()
