"""Node identity on the PostgreSQL spool (spool.pg.nodes): heartbeats on the database's clock,
the continuity leader and its epoch, claims held and mail queued per node, against rows made by
PgSpool's own verbs."""
from __future__ import annotations

import asyncio
import time

from spool import NewMessage, QueueState, RcptState
from spool.pg import PgSpool
from spool.pg import nodes as pgnodes
from spool.transitions import RcptOutcome


def msg(i: int) -> NewMessage:
    return NewMessage(mail_from=f"s{i}@remote.test", rcpt_tos=("bob@example.com",),
                      data=f"Subject: {i}\r\n\r\n{i}\r\n".encode())


def by_name(nodes) -> dict:
    return {n.name: n for n in nodes}


async def test_heartbeat_stamps_the_database_clock_and_the_version(pg_dsn):
    a = await PgSpool.open(pg_dsn, node="node-a")
    try:
        [n] = await a.nodes()
        assert (n.name, n.version, n.leader, n.lease_epoch, n.claims_held, n.queued) == \
            ("node-a", "", False, None, 0, 0)
        assert n.seconds_since_seen < 5 and abs(n.last_seen - time.time()) < 5
        await a.transaction(lambda c: c.execute(          # as if its last heartbeat was 30 s ago
            "UPDATE nodes SET last_seen = clock_timestamp() - interval '30 seconds'"))
        [old] = await a.nodes()
        assert 29.5 < old.seconds_since_seen < 35
        assert await a.heartbeat("1.2.3") is True
        [new] = await a.nodes()
        assert new.version == "1.2.3" and new.seconds_since_seen < 2
        assert new.last_seen - old.last_seen > 29 and new.started_at == n.started_at
        # a heartbeat never registers a node: only PgSpool.open does (it gives the id)
        assert await a.transaction(pgnodes.heartbeat, "ghost", "9") is False
        assert [x.name for x in await a.nodes()] == ["node-a"]
    finally:
        await a.close()


async def test_leader_is_the_unexpired_continuity_lease_with_its_epoch(pg_dsn):
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    try:
        assert not any(n.leader for n in await a.nodes())
        assert await a.acquire_lease(ttl=0.3) == 1
        got = by_name(await b.nodes())
        assert (got["node-a"].leader, got["node-a"].lease_epoch) == (True, 1)
        assert (got["node-b"].leader, got["node-b"].lease_epoch) == (False, None)
        await asyncio.sleep(0.4)                   # node-a's lease runs out
        got = by_name(await b.nodes())
        assert (got["node-a"].leader, got["node-a"].lease_epoch) == (False, 1)
        assert await b.acquire_lease() == 2        # node-b takes over with a higher epoch
        got = by_name(await a.nodes())
        assert (got["node-a"].leader, got["node-a"].lease_epoch) == (False, None)
        assert (got["node-b"].leader, got["node-b"].lease_epoch) == (True, 2)
        assert await b.acquire_lease(name="other") == 1     # another lease is not leadership
        assert by_name(await a.nodes())["node-b"].lease_epoch == 2
    finally:
        await a.close()
        await b.close()


async def test_claims_held_and_queued_per_node(pg_dsn):
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    try:
        mine = [await a.commit(msg(i)) for i in range(3)]     # node-a accepts 3, node-b 2
        theirs = [await b.commit(msg(i)) for i in range(3, 5)]
        got = by_name(await a.nodes())
        assert (got["node-a"].queued, got["node-b"].queued) == (3, 2)
        assert (got["node-a"].claims_held, got["node-b"].claims_held) == (0, 0)
        ca = await a.claim_due(2)                  # oldest first: node-a's first two
        cb = await b.claim_due(1)                  # node-b claims node-a's third
        assert [c.queue_id for c in ca] == mine[:2] and [c.queue_id for c in cb] == mine[2:]
        got = by_name(await b.nodes())
        assert (got["node-a"].claims_held, got["node-b"].claims_held) == (2, 1)
        assert (got["node-a"].queued, got["node-b"].queued) == (3, 2)   # claimed is still queued
        ok = RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx.test")
        assert await b.record_attempt(cb[0].queue_id, [ok], time.time(), token=cb[0].token) \
            is QueueState.DELIVERED
        soft = RcptOutcome(0, RcptState.PENDING, 451, "later", "mx.test")
        assert await a.record_attempt(ca[0].queue_id, [soft], time.time() + 600,
                                      token=ca[0].token) is QueueState.DEFERRED
        got = by_name(await a.nodes())
        # node-b's delivery ends node-a's third message (it counted for node-a, who accepted it)
        assert (got["node-a"].claims_held, got["node-b"].claims_held) == (1, 0)
        assert (got["node-a"].queued, got["node-b"].queued) == (2, 2)
        await a.move(theirs[0], (QueueState.INCOMING,), QueueState.HOLD)
        assert by_name(await a.nodes())["node-b"].queued == 2          # hold is still queued
    finally:
        await a.close()
        await b.close()


async def test_a_process_joining_a_node_with_its_tag_registers_nothing(pg_dsn):
    """PgSpool.open(node_tag=...) (an intake worker, gateway.worker): the supervisor's nodes row
    is not rewritten (started_at, last_seen), its commits are the node's, its queue IDs carry the
    node's tag then its id_tag; an unreachable database does not fail the open."""
    from spool.commit import node_tag
    a = await PgSpool.open(pg_dsn, node="node-a")
    try:
        [before] = await a.nodes()
        await asyncio.sleep(0.05)
        w = await PgSpool.open(pg_dsn, node="node-a", min_size=1, max_size=2, node_tag=a.node_tag)
        w.id_tag = node_tag(2)
        try:
            qid = w.new_queue_id()
            assert len(qid) == 18 and qid[10:12] == a.node_tag and qid[12:14] == "02", qid
            m = msg(1)
            got = await w.commit(NewMessage(**{**m.__dict__, "queue_id": qid}))
            assert got == qid
            [after] = await a.nodes()
            assert (after.started_at, after.last_seen) == (before.started_at, before.last_seen)
            assert after.queued == 1                          # the node's mail, seen by the node
            assert (await a.get(qid)).queue_id == qid
            assert w.pool.max_size == 2
        finally:
            await w.close()
    finally:
        await a.close()
    # nothing listens on port 1: the open succeeds, the first commit raises SpoolError
    from spool import SpoolError
    down = await PgSpool.open("host=127.0.0.1 port=1 dbname=x", node="node-a", min_size=1,
                              max_size=2, timeout=0.5, node_tag="01")
    try:
        try:
            await down.commit(msg(2))
        except SpoolError:
            pass
        else:
            raise AssertionError("a commit without a database did not fail")
    finally:
        await down.close()
