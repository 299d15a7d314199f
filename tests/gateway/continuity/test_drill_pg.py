"""Drills on a real PostgreSQL spool shared by two controllers (issue 9, drills in a cluster): the
leader applies drill-start / drill-end (every audit row at its node and epoch), the follower
re-reads the running drill each tick and its queue manager holds the drill's recipients; a
drill-start under a lost lease is refused by the fence (counted, nothing written, the command
left pending) and applied by the new leader after it re-read the drill; a node that takes the
lead during a drill resumes it (drill_max_duration on the database's clock); a real event ends
the drill on every node, its held mail made continuity holds. Clocks are the test's."""
from __future__ import annotations

import time

import pytest

from gateway.continuity.engine import Mode
from spool import NewMessage
from tests.gateway.continuity.test_controller import Clocks
from tests.gateway.continuity.test_controller_pg import (
    _expire_lease,
    _node,
    _rows,
    steps,
)
from tests.support import postgres as pg

pytestmark = pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")

DRILL = "drill@example.com"


@pytest.fixture
async def pair(pg_dsn):
    """Two controllers on one database, gw1 then gw2, stepped by one pair of test clocks."""
    clocks = Clocks()
    a = await _node(pg_dsn, "gw1", clocks)
    b = await _node(pg_dsn, "gw2", clocks)
    yield a, b, clocks
    for c in (a, b):
        await c.spool.close()


async def _request(spool, drill_id: str, command: str = "drill-start") -> int:
    """What `mailgate drill` does: the drills row (with a start), then the command; its id."""
    if command == "drill-start":
        await spool.request_drill(drill_id, [DRILL], "tester")
    return await spool.queue_command(command, drill_id, "cli")


async def _drill_hold(spool, n: int) -> list[str]:
    """``n`` messages to the drill recipient put on drill hold, as a queue manager would."""
    ids = [await spool.commit(NewMessage("a@remote.test", (DRILL,), b"d%d" % i)) for i in range(n)]
    for claim in await spool.claim_due(n):
        await spool.record_attempt(claim.queue_id, [], time.time(), hold=True, token=claim.token,
                                   hold_reason="drill")
    return ids


async def test_the_leader_runs_the_drill_and_the_follower_holds_its_recipients(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    assert a.lead.leading and not b.lead.leading
    cid = await _request(b.spool, "DR-1")          # queued through any node's spool
    await steps([a, b], clocks, 1)                 # a applies it, b re-reads after it in the step
    assert (await a.spool.get_command(cid))["result"] == "ok: drill DR-1 running"
    assert a.qmgr.drill_rcpts == b.qmgr.drill_rcpts == frozenset({DRILL})
    assert b.status()["drill"]["id"] == "DR-1"
    held = await _drill_hold(b.spool, 3)           # the follower's queue manager held them
    end = await _request(b.spool, "DR-1", "drill-end")
    await steps([a, b], clocks, 1)
    assert (await a.spool.get_command(end))["result"] == "ok: drill DR-1 ended, 3 message(s) released"
    assert a.qmgr.drill_rcpts == b.qmgr.drill_rcpts == frozenset()
    assert b.drill.current is None
    states = await _rows(a.spool, "SELECT state, replay_id FROM messages WHERE queue_id = ANY(%s)", held)
    assert states == [("incoming", "DR-1")] * 3
    audit = await _rows(a.spool, "SELECT src, dst, node, epoch, command_id FROM continuity_audit ORDER BY id")
    assert audit == [("normal", "normal", "gw1", 1, cid), ("normal", "normal", "gw1", 1, end)]
    drills = await _rows(a.spool, "SELECT state, node, released FROM drills")
    assert drills == [("ended", "gw1", 3)]


async def test_a_drill_write_under_a_lost_lease_is_fenced_and_left_to_the_new_leader(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    await _expire_lease(a.spool)                   # a "paused" past its lease, unaware
    await b.step()                                 # b leads at epoch 2
    assert (b.lead.leading, b.epoch) == (True, 2)
    cid = await _request(a.spool, "DR-2")
    clocks.tick(1.0)
    await a.step()                                 # a still believes it leads: its write is fenced
    assert a.spool.fenced_refused == 1 and a.lead.stepdowns == 1 and not a.lead.leading
    assert a.status()["leader"]["last_reason"] == "lease_lost"
    assert a.drill.current is None and a.qmgr.drill_rcpts == frozenset()
    assert (await a.spool.get_command(cid))["done_at"] is None      # not applied, not retried
    assert (await a.spool.get_drill("DR-2"))["state"] == "requested"
    assert await _rows(a.spool, "SELECT count(*) FROM continuity_audit") == [(0,)]
    await steps([b, a], clocks, 1)                 # the new leader applies it; a follows
    assert (await b.spool.get_command(cid))["result"] == "ok: drill DR-2 running"
    assert await _rows(a.spool, "SELECT node, epoch FROM continuity_audit") == [("gw2", 2)]
    assert a.qmgr.drill_rcpts == frozenset({DRILL}) and a.spool.fenced_refused == 1


async def test_a_node_that_takes_the_lead_during_a_drill_resumes_it(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    await _request(a.spool, "DR-3")
    await steps([a, b], clocks, 1)
    await _drill_hold(a.spool, 2)
    await a.close()                                # clean shutdown: the lease is free at once
    await steps([b], clocks, 1)
    assert (b.lead.leading, b.epoch) == (True, 2) and b.drill.drill_id == "DR-3"
    # nobody ends it: drill_max_duration counts on the database's clock (its started_at), also
    # for a node that re-reads it (here after a pause past the renew interval)
    await b.spool.transaction(lambda c: c.execute(
        "UPDATE drills SET started_at = started_at - %s", (b.drill.max_duration,)))
    clocks.tick(10.0)
    await b.step()
    assert b.lead.last_reason == "paused" and b.lead.leading
    assert b.drill.current is None and b.qmgr.drill_rcpts == frozenset()
    (state, why, released, node), = await _rows(
        b.spool, "SELECT d.state, d.end_reason, d.released, a.node FROM drills d,"
                 " webmail_audit a WHERE a.action = 'drill_end'")
    assert (state, released, node) == ("ended", 2, "gw2") and "drill_max_duration" in why


async def test_a_real_event_ends_the_drill_on_every_node(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    await _request(a.spool, "DR-4")
    await steps([a, b], clocks, 1)
    await _drill_hold(b.spool, 2)
    a.probe.ok = b.probe.ok = False                # Exchange goes down: the leader enters an event
    await steps([a, b], clocks, 5)
    assert a.state.mode is b.state.mode is Mode.CONTINUITY
    assert b.drill.current is None and b.qmgr.drill_rcpts == frozenset() and b.qmgr.hold_downstream
    (state, why), = await _rows(a.spool, "SELECT state, end_reason FROM drills")
    assert state == "ended" and why.startswith(f"superseded by continuity event {a.state.event_id}")
    assert await _rows(a.spool, "SELECT hold_reason, count(*) FROM messages WHERE state='hold'"
                                " GROUP BY 1") == [("continuity", 2)]
    assert await _rows(a.spool, "SELECT DISTINCT node, epoch FROM continuity_audit") == [("gw1", 1)]
