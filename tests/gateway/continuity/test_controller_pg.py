"""The continuity controller on a real PostgreSQL spool shared by two nodes (issue 9 items 4
and 5): one leader decides and writes (every audit row carries its node and epoch), the follower
re-reads the shared state each tick and holds as it says; a leader whose lease was taken over is
fenced (its write refused and counted) and steps down; a node whose monotonic clock jumped past
the renew interval has no authority until it re-read the state. Clocks are the test's; the
lease's expiry is PostgreSQL's, so a takeover is made by expiring the row."""
from __future__ import annotations

import io
import time

import pytest

from gateway.config import parse
from gateway.continuity.alerts import Alerter
from gateway.continuity.controller import ContinuityController
from gateway.continuity.engine import Mode
from gateway.logs import make_logger
from spool import NewMessage, RcptState
from spool.transitions import RcptOutcome
from tests.gateway.continuity.test_controller import Clocks, Probe, QmgrDouble
from tests.support import postgres as pg

pytestmark = pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")


def _cfg():
    return parse({"server": {"hostname": "gw.test"},
                  "routing": {"default_smarthost": "[127.0.0.1]:2"},
                  "spool": {"backend": "postgresql", "dsn": "host=127.0.0.1", "node": "x"},
                  "webmail": {"enabled": False},
                  "continuity": {"mode": "automatic", "enter_after": 3.0, "hold_down": 3.0,
                                 "tick": 1.0, "replay_rate": 50.0, "replay_concurrency": 20}},
                 "test")


async def _node(dsn: str, name: str, clocks: Clocks):
    from spool.pg import PgSpool
    spool = await PgSpool.open(dsn, node=name)
    log = make_logger(stream=io.StringIO())
    alerter = Alerter(urls=[], mail_to=[], spool=spool, hostname=f"{name}.test", log=log,
                      clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    probe = Probe(clocks)
    c = ContinuityController(_cfg(), spool, QmgrDouble(), probe, alerter, log,
                             clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    await c.start()
    c.probe = probe
    return c


@pytest.fixture
async def pair(pg_dsn):
    clocks = Clocks()
    a = await _node(pg_dsn, "gw1", clocks)
    b = await _node(pg_dsn, "gw2", clocks)
    yield a, b, clocks
    for c in (a, b):
        await c.spool.close()


async def steps(nodes, clocks, n: int) -> None:
    for _ in range(n):
        clocks.tick(1.0)
        for c in nodes:
            await c.step()


async def _rows(spool, sql: str, *args) -> list[tuple]:
    async def q(conn):
        cur = await conn.execute(sql, args)
        return await cur.fetchall()
    return await spool.read(q)


async def _hold(spool, n: int) -> list[str]:
    ids = [await spool.commit(NewMessage("a@remote.test", ("bob@example.com",), b"m%d" % i))
           for i in range(n)]
    for claim in await spool.claim_due(n):
        await spool.record_attempt(claim.queue_id, [], time.time(), hold=True, token=claim.token)
    return ids


async def _deliver_all(spool) -> int:
    n = 0
    for claim in await spool.claim_due(100):
        await spool.record_attempt(claim.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "x")],
                                   time.time(), token=claim.token)
        n += 1
    return n


async def test_one_leader_decides_the_follower_holds_and_the_replay_ends(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    assert (a.lead.leading, a.epoch, b.lead.leading, b.epoch) == (True, 1, False, None)
    a.probe.ok = b.probe.ok = False
    await steps([a, b], clocks, 5)
    assert a.state.mode is b.state.mode is Mode.CONTINUITY
    assert a.qmgr.hold_downstream and b.qmgr.hold_downstream
    held = await _hold(b.spool, 7)
    a.probe.ok = b.probe.ok = True
    for _ in range(30):
        await steps([a, b], clocks, 1)
        await _deliver_all(b.spool)             # the follower delivers what the leader released
        if a.state.mode is Mode.NORMAL and b.state.mode is Mode.NORMAL:
            break
    assert not b.qmgr.hold_downstream
    rows = await _rows(a.spool, "SELECT src, dst, node, epoch FROM continuity_audit ORDER BY id")
    assert [(r[0], r[1]) for r in rows] == [("normal", "degraded"), ("degraded", "continuity"),
                                            ("continuity", "recovering"), ("recovering", "normal")]
    assert {(r[2], r[3]) for r in rows} == {("gw1", 1)}
    states = await _rows(a.spool, "SELECT state, replay_id <> '' FROM messages WHERE queue_id = ANY(%s)",
                         held)
    assert states == [("delivered", True)] * 7


async def _expire_lease(spool) -> None:
    await spool.transaction(lambda c: c.execute(
        "UPDATE leases SET expires_at = clock_timestamp() - interval '1 second'"))


async def test_a_leader_whose_lease_was_taken_is_fenced_and_steps_down(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    a.probe.ok = b.probe.ok = False
    await steps([a, b], clocks, 5)
    assert a.state.mode is Mode.CONTINUITY
    await _expire_lease(a.spool)                 # a "paused" past its lease, its clock did not see it
    await b.step()                               # b takes the lease with a higher epoch
    assert (b.lead.leading, b.epoch) == (True, 2)
    a.probe.ok = True
    for _ in range(5):                           # a's hold_down passes; its write is fenced
        clocks.tick(1.0)
        await a.step()
    assert a.spool.fenced_refused == 1 and a.lead.stepdowns == 1 and not a.lead.leading
    assert a.state.mode is Mode.CONTINUITY       # re-read: the shared state, unchanged
    rows = await _rows(a.spool, "SELECT dst, node, epoch FROM continuity_audit WHERE epoch = 1"
                                " AND dst = 'recovering'")
    assert rows == []
    assert a.status()["leader"]["last_reason"] == "lease_lost"


async def test_a_paused_node_acts_on_nothing_before_it_re_read_the_state(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    assert a.lead.leading and a.state.mode is Mode.NORMAL
    # while a is paused (its monotonic clock jumps 7 s > tick + renew), the shared state changes
    await a.spool.transaction(lambda c: c.execute(
        "INSERT INTO continuity_state (id, mode, since, origin, reason, awaiting_confirm, event_id,"
        " updated_at) VALUES (1, 'continuity', 1, 'admin', 'x', false, 'CE-1', clock_timestamp())"))
    clocks.tick(7.0)
    await a.step()
    assert a.lead.stepdowns == 1 and a.status()["leader"]["last_reason"] == "paused"
    assert a.state.mode is Mode.CONTINUITY and a.qmgr.hold_downstream
    assert a.lead.leading and a.epoch == 1       # the lease had not expired: taken again


async def test_a_follower_refuses_admin_commands(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    from gateway.continuity.engine import CommandRefused
    with pytest.raises(CommandRefused, match="not the continuity leader"):
        await b.command("start", "maintenance", "ops")
    t = await a.command("start", "maintenance", "ops")
    assert t.new.mode is Mode.CONTINUITY
    await steps([b], clocks, 1)
    assert b.state.mode is Mode.CONTINUITY and b.qmgr.hold_downstream


async def test_a_clean_shutdown_hands_the_lease_over_at_once(pair):
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    assert a.lead.leading and not b.lead.leading
    await a.close()                               # the lease's TTL (15 s) has not run out
    await steps([b], clocks, 1)
    assert (b.lead.leading, b.epoch) == (True, 2)


async def test_the_leader_counts_the_other_nodes_probes(pair):
    """One node still reaches Exchange: no event; once its results are older than three probe
    intervals (a dead node's last word), the leader's own failures decide."""
    a, b, clocks = pair
    await steps([a, b], clocks, 1)
    a.probe.ok = False                            # the leader's own path is broken
    for _ in range(6):
        await b.spool.record_probe("smtp:exchange", True, clocks.wall, 0.01, "250", True)
        await steps([a], clocks, 1)
    assert a.state.mode is Mode.NORMAL and "gw2/smtp:exchange: ok" in a.health.detail
    fresh = a.remote.fresh
    await b.spool.transaction(lambda c: c.execute(
        "UPDATE probe_results SET recorded_at = clock_timestamp() - %s * interval '1 second'",
        (fresh + 1,)))
    await steps([a], clocks, 5)
    assert a.state.mode is Mode.CONTINUITY
