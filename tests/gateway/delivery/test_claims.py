"""Claims in the queue manager (gateway/delivery/claims.py, issue 9 items 3 and 5), with real
spools and a real sink process:

- a claim's local deadline (monotonic clock, from the moment claim_due was asked) and its
  renewal on the SQLite spool;
- on a PostgreSQL spool, a node that was paused past its claim's local deadline (its monotonic
  clock jumps between DATA's 354 and the final dot) withholds the final dot: the sink receives
  nothing, the message is deferred, not delivered twice later;
- paused between the claim and the delivery, it opens no session at all: nothing is written,
  the claim expires, is requeued and the message delivered once;
- on a PostgreSQL spool, expired claims of a node that died are requeued by another node's
  ClaimKeeper and counted.
"""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.app import build_resolver
from gateway.config import parse
from gateway.delivery.claims import DOT_MARGIN, ClaimKeeper
from gateway.delivery.qmgr import QueueManager
from gateway.delivery.transport import SmtpTransport
from gateway.logs import make_logger
from gateway.router import Router
from spool import NewMessage, QueueState, Spool
from tests.support.peers import until


def msg(i: int) -> NewMessage:
    return NewMessage(mail_from="a@remote.test", rcpt_tos=("bob@example.com",),
                      data=f"Subject: {i}\r\n\r\nbody {i}\r\n".encode())


async def test_local_deadline_runs_from_the_claim_and_moves_with_each_renewal(tmp_path):
    spool = await Spool.open(tmp_path / "spool.db")
    try:
        now = [1000.0]
        keeper = ClaimKeeper(spool, make_logger("error"), {}, ttl=30.0, clock=lambda: now[0])
        m = msg(1)
        await spool.commit(m)
        asked = now[0]
        (c,) = await spool.claim_due(10, 30.0)
        now[0] += 5                            # the claim's reply took 5 s to come back
        keeper.track(c, asked)
        assert keeper.deadline[m.queue_id] == asked + 30.0
        now[0] = asked + 30.0 - DOT_MARGIN - 0.1
        assert keeper.fresh(m.queue_id)
        now[0] = asked + 30.0 - DOT_MARGIN
        assert not keeper.fresh(m.queue_id)    # too close to the deadline for a final dot
        await keeper.renew_once()              # renewed now: the deadline moves on
        assert keeper.deadline[m.queue_id] == now[0] + 30.0 and keeper.fresh(m.queue_id)
        keeper.drop(m.queue_id)
        assert not keeper.fresh(m.queue_id) and m.queue_id not in keeper.deadline
    finally:
        await spool.close()


def pg_cfg(tmp_path, sink_port: int, dsn: str, node: str):
    return parse({"server": {"hostname": f"{node}.test", "data_dir": str(tmp_path / node)},
                  "routing": {"default_smarthost": f"[127.0.0.1]:{sink_port}",
                              "smarthost_tls": "none"},
                  "delivery": {"minimal_backoff": 30.0, "maximal_backoff": 60.0,
                               "connect_timeout": 2.0, "claim_ttl": 6.0},
                  "spool": {"backend": "postgresql", "dsn": dsn, "node": node},
                  "continuity": {"mode": "off"}, "webmail": {"enabled": False}}, "test")


@pytest.fixture
async def pg_stage(peers, tmp_path, pg_dsn):
    from spool.pg import PgSpool
    sink = peers.sink(name="exchange")
    made = []

    async def node(name: str):
        cfg = pg_cfg(tmp_path, sink.port, pg_dsn, name)
        spool = await PgSpool.open(pg_dsn, node=name)
        transport = SmtpTransport(f"{name}.test", connect_timeout=2.0, command_timeout=10.0,
                                  data_timeout=10.0, idle_timeout=0.0)
        qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport,
                            make_logger("error"))
        made.append((qmgr, transport, spool))
        return qmgr, spool

    yield sink, node
    for qmgr, transport, spool in made:
        await qmgr.drain(5)
        await transport.close()
        await spool.close()


async def test_paused_past_its_claim_a_node_sends_no_final_dot(pg_stage):
    sink, node = pg_stage
    qmgr, spool = await node("n1")
    assert qmgr.final_dot_check is not None        # a shared spool fences the final dot
    jump = [0.0]
    qmgr.claims.clock = lambda: time.monotonic() + jump[0]
    dot_check = qmgr.final_dot_check

    def paused_before_the_dot(m):                  # the process stops after DATA's 354
        inner = dot_check(m)

        def check():
            jump[0] = 60.0
            return inner()
        return check
    qmgr.final_dot_check = paused_before_the_dot
    m = msg(2)
    await spool.commit(m)
    task = asyncio.create_task(qmgr.run())
    try:
        got = await until(lambda: _state_if(spool, m.queue_id, QueueState.DEFERRED), 20,
                          "the message deferred")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.count() == 0                        # no final dot: the sink stored nothing
    assert got.recipients[0].state.value == "pending" and got.attempts == 1
    assert got.last_error.startswith("451 4.3.0 final dot not sent"), got.last_error


async def _state_if(spool, queue_id, state):
    got = await spool.get(queue_id)
    return got if got is not None and got.state is state else None


async def test_expired_claims_of_a_dead_node_are_requeued_and_delivered_by_another(pg_stage):
    sink, node = pg_stage
    dead, dead_spool = await node("dead")
    m = msg(3)
    await dead_spool.commit(m)
    (c,) = await dead_spool.claim_due(10, 1.0)      # claimed for 1 s, then the node "dies"
    alive, spool = await node("alive")
    await asyncio.sleep(1.2)
    assert await alive.claims.requeue_expired() == 1
    assert alive.stats["claims_requeued"] == 1
    task = asyncio.create_task(alive.run())
    try:
        await until(lambda: _state_if(spool, m.queue_id, QueueState.DELIVERED), 20, "delivered")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.count() == 1
    from spool import RcptState
    from spool.states import StaleClaim
    from spool.transitions import RcptOutcome
    with pytest.raises(StaleClaim):                 # the dead node's late outcome is refused
        await dead_spool.record_attempt(m.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250,
                                                                 "ok", "x")], time.time(),
                                        token=c.token)
    assert (await spool.get(m.queue_id)).state is QueueState.DELIVERED


async def test_paused_between_claim_and_session_a_node_opens_no_session(pg_stage):
    sink, node = pg_stage
    qmgr, spool = await node("n1")
    jump = [0.0]
    qmgr.claims.clock = lambda: time.monotonic() + jump[0]
    real_claim = spool.claim_due

    async def claim_then_pause(*a, **kw):          # the process stops right after its claim
        got = await real_claim(*a, **kw)
        if got and not jump[0]:
            jump[0] = 60.0
        return got
    spool.claim_due = claim_then_pause
    m = msg(4)
    await spool.commit(m)
    task = asyncio.create_task(qmgr.run())
    try:
        await until(lambda: _expired(qmgr), 10, "the claim given up")
        got = await spool.get(m.queue_id)
        assert got.state is QueueState.ACTIVE and got.attempts == 0   # nothing tried, nothing written
        assert sink.count() == 0
        # the claim expires in the database (6 s), is requeued and delivered, once
        await until(lambda: _state_if(spool, m.queue_id, QueueState.DELIVERED), 20, "delivered")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert sink.count() == 1 and qmgr.stats["claims_requeued"] == 1


async def _expired(qmgr):
    return qmgr.stats["claims_expired_locally"] == 1
