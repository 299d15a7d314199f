"""The PostgreSQL spool with several nodes: two OS processes claiming one queue, stale claim
tokens, the leader lease and fenced writes, and the database going away and coming back."""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time

import pytest

from spool import NewMessage, QueueState, RcptState, SpoolError
from spool.pg import LeaseLost, PgSpool
from spool.states import StaleClaim
from spool.transitions import RcptOutcome
from tests.support import postgres as pg

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MESSAGES = 10_000
TASKS = 4


def msg(i: int) -> NewMessage:
    return NewMessage(mail_from=f"s{i}@remote.test", rcpt_tos=("bob@example.com",),
                      data=f"Subject: {i}\r\n\r\n{i}\r\n".encode())


async def test_two_processes_claim_10000_messages_each_exactly_once(pg_dsn, tmp_path):
    seeder = await PgSpool.open(pg_dsn, node="seeder")
    ids = []
    for start in range(0, MESSAGES, 1000):
        ids += await asyncio.gather(*(seeder.commit(msg(i)) for i in range(start, start + 1000)))
    assert (await seeder.counts())["incoming"] == MESSAGES
    procs = [subprocess.Popen([sys.executable, "-m", "tests.spool.pg_claimer", pg_dsn, node,
                               str(TASKS), str(tmp_path)], cwd=ROOT)
             for node in ("node-a", "node-b")]
    try:
        await asyncio.to_thread(pg.wait_until, lambda: all(
            (tmp_path / f"ready-{n}").exists() or p.poll() is not None
            for n, p in zip(("node-a", "node-b"), procs)), 60)
        (tmp_path / "go").touch()
        t0 = time.monotonic()
        rcs = [await asyncio.to_thread(p.wait, 300) for p in procs]
        elapsed = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert rcs == [0, 0]
    results = {n: json.loads((tmp_path / f"claims-{n}.json").read_text()) for n in ("node-a", "node-b")}
    claimed = [tuple(c) for r in results.values() for c in r["claims"]]
    print(f"\n{MESSAGES} claims by 2 processes x {TASKS} tasks in {elapsed:.1f} s; "
          + ", ".join(f"{n}: {len(r['claims'])} claims, {r['batches']} group commits"
                      for n, r in results.items()))
    assert len(claimed) == MESSAGES                              # nothing claimed twice ...
    assert {q for q, _t in claimed} == set(ids)                  # ... nothing left out
    assert len({t for _q, t in claimed}) == MESSAGES             # one token per claim
    assert all(len(r["claims"]) > 0 and r["stale"] == 0 for r in results.values())
    counts = await seeder.counts()
    assert counts["delivered"] == MESSAGES and counts["active"] == 0 and counts["incoming"] == 0
    token_of = dict(claimed)
    for q in ids[:: MESSAGES // 50]:                             # the record is the claimer's
        got = await seeder.get(q)
        assert got.recipients[0].state is RcptState.DELIVERED
        owner = got.recipients[0].remote_host
        assert (q, token_of[q]) in {tuple(c) for c in results[owner]["claims"]}
    await seeder.close()


async def test_a_stale_token_from_another_node_changes_nothing(pg_dsn):
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    try:
        q = await a.commit(msg(1))
        [ca] = await a.claim_due(1, ttl=0.3)
        await asyncio.sleep(0.4)                   # node-a "paused" past its claim
        assert await b.requeue_expired() == 1
        [cb] = await b.claim_due(1)
        assert cb.queue_id == q and cb.token > ca.token
        out = RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "a")
        with pytest.raises(StaleClaim):
            await a.record_attempt(q, [out], time.time(), token=ca.token)
        assert a.stale_claims == 1
        got = await b.get(q, with_data=True)
        assert got.state is QueueState.ACTIVE and got.recipients[0].state is RcptState.PENDING
        assert got.data is not None
        assert await b.record_attempt(q, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "b")],
                                      time.time(), token=cb.token) is QueueState.DELIVERED
        assert (await a.get(q)).recipients[0].remote_host == "b"
    finally:
        await a.close()
        await b.close()


async def test_a_hold_records_its_reason(pg_dsn):
    s = await PgSpool.open(pg_dsn, node="node-a")
    try:
        q1, q2 = await s.commit(msg(1)), await s.commit(msg(2))
        claims = {c.queue_id: c for c in await s.claim_due(2)}
        await s.record_attempt(q1, [], time.time(), hold=True, token=claims[q1].token)
        await s.record_attempt(q2, [], time.time(), hold=True, token=claims[q2].token,
                               hold_reason="drill")
        assert [(await s.get(q)).hold_reason for q in (q1, q2)] == ["continuity", "drill"]
    finally:
        await s.close()


async def test_queue_ids_carry_a_distinct_node_tag(pg_dsn):
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    again = await PgSpool.open(pg_dsn, node="node-a")
    try:
        assert a.node_tag != b.node_tag and again.node_tag == a.node_tag
        qa, qb = a.new_queue_id(), b.new_queue_id()
        assert len(qa) == len(qb) == 16 and qa[10:12] == a.node_tag and qb[10:12] == b.node_tag
    finally:
        for s in (a, b, again):
            await s.close()


async def _insert_mark(conn, who: str) -> int:
    cur = await conn.execute("INSERT INTO marks (who) VALUES (%s)", (who,))
    return cur.rowcount


async def test_lease_epoch_increases_on_takeover_and_a_stale_leader_is_fenced(pg_dsn):
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    try:
        await a.transaction(lambda c: c.execute("CREATE TABLE marks (who text NOT NULL)"))
        e1 = await a.acquire_lease(ttl=0.5)
        assert e1 == 1
        assert await b.acquire_lease(ttl=0.5) is None            # held: b is not the leader
        assert await a.acquire_lease(ttl=0.5) == e1              # renewal keeps the epoch
        assert await a.fenced(e1, _insert_mark, "a-leading") == 1
        await asyncio.sleep(0.6)                                  # a "paused" past its lease
        e2 = await b.acquire_lease(ttl=30)
        assert e2 == e1 + 1
        assert await a.acquire_lease(ttl=30) is None             # a stale renew changes nothing
        with pytest.raises(LeaseLost):
            await a.fenced(e1, _insert_mark, "a-stale")
        assert a.fenced_refused == 1
        assert await b.fenced(e2, _insert_mark, "b-leading") == 1
        rows = await a.read(lambda c: _fetch(c, "SELECT who FROM marks ORDER BY who"))
        assert rows == [("a-leading",), ("b-leading",)]
        lease = await a.leader()
        assert (lease.holder, lease.epoch, lease.expired) == ("node-b", e2, False)
        assert await b.release_lease(e2)
        assert await a.acquire_lease() == e2 + 1                  # released: taken at once
    finally:
        await a.close()
        await b.close()


async def test_a_takeover_waits_for_the_fenced_write_in_flight(pg_dsn):
    """FOR SHARE: a takeover of an expired lease cannot slip in between the check and the
    commit of the old leader's write; it waits, then the epoch goes up."""
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    try:
        await a.transaction(lambda c: c.execute("CREATE TABLE marks (who text NOT NULL)"))
        e1 = await a.acquire_lease(ttl=1.0)
        entered = asyncio.Event()

        async def slow_write(conn):
            entered.set()
            await asyncio.sleep(1.5)       # the lease expires while the write is open
            return await _insert_mark(conn, "a-slow")

        write = asyncio.create_task(a.fenced(e1, slow_write))
        await entered.wait()
        await asyncio.sleep(1.1)
        t0 = time.monotonic()
        e2 = await b.acquire_lease(ttl=30)
        waited = time.monotonic() - t0
        assert await write == 1 and e2 == e1 + 1 and waited > 0.2
    finally:
        await a.close()
        await b.close()


async def _fetch(conn, sql):
    cur = await conn.execute(sql)
    return await cur.fetchall()


async def test_database_stopped_gives_spool_error_then_works_again():
    cluster = pg.started_cluster()
    try:
        pg.make_template(cluster)
        _name, dsn = pg.fresh_database(cluster)
        s = await PgSpool.open(dsn, node="node-a", timeout=2.0)
        q1 = await s.commit(msg(1))
        await asyncio.to_thread(cluster.stop, "immediate")
        t0 = time.monotonic()
        with pytest.raises(SpoolError):
            await s.commit(msg(2))
        with pytest.raises(SpoolError):
            await s.claim_due(10)
        with pytest.raises(SpoolError):
            await s.counts()
        with pytest.raises(SpoolError):
            await s.ping()
        down = time.monotonic() - t0
        assert down < 20
        await asyncio.to_thread(cluster.start)
        t1 = time.monotonic()
        q3 = None
        deadline = time.monotonic() + 30
        while q3 is None:                      # the pool reconnects by itself
            try:
                q3 = await s.commit(msg(3))
            except SpoolError:
                assert time.monotonic() < deadline, "the spool did not recover"
                await asyncio.sleep(0.2)
        print(f"\nthree SpoolErrors in {down:.1f} s with the database down; first commit"
              f" {time.monotonic() - t1:.1f} s after it was back")
        assert {c.queue_id for c in await s.claim_due(10)} == {q1, q3}
        await s.close()
        with pytest.raises(SpoolError):        # unreachable at open: SpoolError, not a crash
            cluster.stop("immediate")
            await PgSpool.open(dsn, node="node-a", timeout=1.0)
    finally:
        cluster.destroy()
