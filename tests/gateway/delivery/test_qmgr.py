"""The queue manager (gateway/delivery/qmgr.py) in this process, with a real spool, the real
router, resolver and SMTP transport, and a real sink process: an internal error in one chunk of
an attempt (here: a recipient domain the resolver refuses as a route, ValueError) must not discard
what the other chunks delivered, counts as an attempt, and ends in a bounce at the queue lifetime.
Also ``status_of`` (gateway.delivery.outcome): an enhanced status RFC 3463 does not allow becomes
the class default."""
from __future__ import annotations

import asyncio
import io
import email
import email.policy

import pytest

from gateway.app import build_resolver
from gateway.config import parse
from gateway.delivery.outcome import status_of
from gateway.delivery.qmgr import QueueManager
from gateway.delivery.transport import SmtpTransport
from gateway.logs import make_logger
from gateway.router import Router
from spool import NewMessage, QueueState, RcptState, Spool
from tests.support.peers import until

SENDER = "alice@example.com"
RCPTS = ("bob@example.com", "x@-weird.test", "carol@example.com")
DATA = b"From: alice@example.com\r\nSubject: chunks\r\n\r\nbody\r\n"


@pytest.fixture
async def stage(peers, tmp_path):
    sink = peers.sink("127.0.0.41", None, "exchange")
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "routing": {"default_smarthost": f"[127.0.0.41]:{sink.port}", "smarthost_tls": "none"},
                 "relay": {"trusted_networks": ["127.0.0.0/8"]},
                 "delivery": {"recipients_per_delivery": 1, "minimal_backoff": 0.3,
                              "maximal_backoff": 0.6, "maximal_lifetime": 2.0,
                              "connect_timeout": 2.0},
                 "continuity": {"mode": "off"}}, "test")
    spool = await Spool.open(cfg.spool_path)
    transport = SmtpTransport("gw.test", connect_timeout=2.0, command_timeout=10.0,
                              data_timeout=10.0, idle_timeout=0.0)
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport, make_logger("error"))
    task = asyncio.create_task(qmgr.run())
    yield sink, spool, qmgr
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await qmgr.drain(5)
    await transport.close()
    await spool.close()


async def test_an_internal_error_in_one_chunk_keeps_the_others_outcomes_and_bounces_at_expiry(stage):
    sink, spool, qmgr = stage
    m = NewMessage(mail_from=SENDER, rcpt_tos=RCPTS, data=DATA)
    await spool.commit(m)
    qmgr.notify()

    async def finished():
        got = await spool.get(m.queue_id)
        return got if got.state is QueueState.BOUNCED else None

    # before the fix: the chunk's ValueError deferred the whole message without counting the
    # attempt, so bob and carol got a copy at every retry and the message never expired
    msg = await until(finished, 30, "the message to bounce at its queue lifetime")
    by_addr = {r.address: r for r in msg.recipients}
    assert by_addr["bob@example.com"].state is RcptState.DELIVERED
    assert by_addr["carol@example.com"].state is RcptState.DELIVERED
    weird = by_addr["x@-weird.test"]
    assert weird.state is RcptState.BOUNCED and weird.reply_text.startswith("4.4.7 "), weird
    assert "4.3.0" in weird.reply_text
    assert msg.attempts >= 2                  # every attempt with the internal error counted
    originals = [env for env, _ in sink.messages() if env["mail_from"] == SENDER]
    assert sorted(r for env in originals for r in env["rcpt_tos"]) == [
        "bob@example.com", "carol@example.com"]          # each delivered exactly once
    bounces = await until(lambda: _dsns(sink), 20, "the DSN at the sink")
    [(env, dsn)] = bounces
    assert env["rcpt_tos"] == [SENDER]
    report = [p for p in dsn.walk() if p.get_content_type() == "message/delivery-status"][0]
    _per_message, per_rcpt = report.get_payload()
    assert per_rcpt["Final-Recipient"] == "rfc822; x@-weird.test"
    assert per_rcpt["Status"] == "4.4.7"


async def _dsns(sink):
    return [(env, email.message_from_bytes(data, policy=email.policy.default))
            for env, data in sink.messages() if env["mail_from"] == "<>"]


@pytest.mark.parametrize("code,text,status", [
    (550, "5.1.1 User unknown", "5.1.1"),
    (550, "5.1.100 three digits are allowed", "5.1.100"),
    (550, "5.1.1000 No such user", "5.0.0"),          # RFC 3463: 1-3 digits per field
    (550, "5.1000.1 No such user", "5.0.0"),
    (550, "5.1. empty detail", "5.0.0"),
    (452, "4.2.2000 Over quota", "4.0.0"),
    (550, "User unknown", "5.0.0"),
    (None, "4.4.1 connect failed", "4.4.1"),
    (None, "connect failed", "4.0.0"),
])
def test_status_of_keeps_only_rfc_3463_codes(code, text, status):
    assert status_of(code, text) == status


async def test_each_chunk_is_recorded_as_soon_as_it_completes(peers, tmp_path):
    """bob's chunk goes to a fast Exchange, dan's to one that takes 4 s after the final dot: bob
    is recorded delivered while dan's chunk is still running (a kill -9 now re-sends only dan)."""
    fast = peers.sink("127.0.0.43", None, "fast")
    slow = peers.sink("127.0.0.44", None, "slow", "--data-delay", "4")
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "relay": {"accepted_domains": ["example.com", "slow.test"]},
                 "routing": {"default_smarthost": f"[127.0.0.43]:{fast.port}", "smarthost_tls": "none",
                             "routes": [{"domain": "slow.test",
                                         "smarthost": f"[127.0.0.44]:{slow.port}"}]},
                 "continuity": {"mode": "off"}}, "test")
    spool = await Spool.open(cfg.spool_path)
    transport = SmtpTransport("gw.test", idle_timeout=0.0)
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport, make_logger("error"))
    task = asyncio.create_task(qmgr.run())
    try:
        m = NewMessage(mail_from=SENDER, rcpt_tos=("bob@example.com", "dan@slow.test"), data=DATA)
        await spool.commit(m)
        qmgr.notify()

        async def bob_recorded_while_active():
            got = await spool.get(m.queue_id)
            states = {r.address: r.state for r in got.recipients}
            return got.state is QueueState.ACTIVE and states["bob@example.com"] is RcptState.DELIVERED

        await until(bob_recorded_while_active, 10, "bob recorded while dan's chunk still runs")
        assert slow.count() == 0 and fast.count() == 1

        async def delivered():
            return (await spool.get(m.queue_id)).state is QueueState.DELIVERED

        await until(delivered, 20, "the whole message delivered")
        got = await spool.get(m.queue_id)
        assert [r.attempts for r in got.recipients] == [1, 1]
        assert fast.count() == 1 and slow.count() == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await qmgr.drain(5)
        await transport.close()
        await spool.close()


async def test_a_delivery_whose_claim_was_taken_over_records_nothing(peers, tmp_path):
    """The operator holds a message while its delivery is in flight and releases it at once; the
    queue manager claims it again (a new token) and starts a second delivery. When the first
    one ends, its outcome is refused (StaleClaim: logged claim_lost, counted), so it cannot land
    on the second claim: only the second delivery records the message (one attempt)."""
    slow = peers.sink("127.0.0.45", None, "slow", "--data-delay", "4")
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "routing": {"default_smarthost": f"[127.0.0.45]:{slow.port}", "smarthost_tls": "none"},
                 "continuity": {"mode": "off"}}, "test")
    spool = await Spool.open(cfg.spool_path)
    transport = SmtpTransport("gw.test", idle_timeout=0.0)
    stream = io.StringIO()
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport,
                        make_logger("info", "kv", stream=stream))
    task = asyncio.create_task(qmgr.run())
    try:
        m = NewMessage(mail_from=SENDER, rcpt_tos=("bob@example.com",), data=DATA)
        await spool.commit(m)
        qmgr.notify()

        async def active():
            return (await spool.get(m.queue_id)).state is QueueState.ACTIVE

        await until(active, 10, "the first claim")
        first = await spool.read(lambda c: c.execute(
            "SELECT claim_token FROM messages WHERE queue_id=?", (m.queue_id,)).fetchone()[0])
        await spool.move(m.queue_id, QueueState.ACTIVE, QueueState.HOLD)       # the operator
        await spool.move(m.queue_id, QueueState.HOLD, QueueState.INCOMING)
        qmgr.notify()

        async def refused():
            return qmgr.stats["stale_claims"] == 1

        await until(refused, 15, "the first delivery's outcome refused")
        assert spool.stale_claims == 1
        lost = [line for line in stream.getvalue().splitlines() if "event='claim_lost'" in line]
        assert len(lost) == 1 and f"token={first}" in lost[0]   # the first claim's, not the second's

        async def delivered():
            return (await spool.get(m.queue_id)).state is QueueState.DELIVERED

        await until(delivered, 15, "the second delivery recorded")
        got = await spool.get(m.queue_id)
        assert got.recipients[0].attempts == 1 and slow.count() == 2
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await qmgr.drain(5)
        await transport.close()
        await spool.close()


async def test_a_long_delivery_keeps_its_claim_while_another_node_requeues_expired_ones(peers, tmp_path):
    """Claims of 2 s, a downstream that takes 5 s after the final dot, and "another node"
    requeueing expired claims every 0.1 s: the queue manager renews the claim every 0.67 s, so
    the message is never requeued, delivered once, and its outcome is recorded."""
    slow = peers.sink("127.0.0.46", None, "slow", "--data-delay", "5")
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "routing": {"default_smarthost": f"[127.0.0.46]:{slow.port}", "smarthost_tls": "none"},
                 "continuity": {"mode": "off"}}, "test")
    spool = await Spool.open(cfg.spool_path)
    transport = SmtpTransport("gw.test", idle_timeout=0.0)
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport, make_logger("error"))
    qmgr.claims.ttl = 2.0
    requeued = []

    async def other_node():
        while True:
            requeued.append(await spool.requeue_expired())
            await asyncio.sleep(0.1)

    task = asyncio.create_task(qmgr.run())
    other = asyncio.create_task(other_node())
    try:
        m = NewMessage(mail_from=SENDER, rcpt_tos=("bob@example.com",), data=DATA)
        await spool.commit(m)
        qmgr.notify()

        async def delivered():
            return (await spool.get(m.queue_id)).state is QueueState.DELIVERED

        await until(delivered, 20, "the delivery recorded")
        assert sum(requeued) == 0 and len(requeued) > 20
        assert slow.count() == 1 and qmgr.stats["stale_claims"] == 0
        assert qmgr.stats["claims_lost"] == 0 and spool.stale_claims == 0
    finally:
        for t in (task, other):
            t.cancel()
        await asyncio.gather(task, other, return_exceptions=True)
        await qmgr.drain(5)
        await transport.close()
        await spool.close()


class _SlowToAnswerClaims(Spool):
    """The real SQLite spool; its claim_due answers 0.5 s after the claim is committed (the
    window a SIGTERM can fall into: the writer has committed, the awaiting task is cancelled)."""
    claimed: asyncio.Event

    async def claim_due(self, limit, ttl=60.0):
        due = await super().claim_due(limit, ttl)
        if due:
            self.claimed.set()
            await asyncio.sleep(0.5)
        return due


async def test_a_shutdown_during_a_claim_delivers_and_records_what_was_claimed(peers, tmp_path):
    """The shutdown path (run() cancelled, then drain(), gateway.app on SIGTERM) arriving while a
    claim is being committed: the claimed messages are delivered and recorded, none is left
    ``active`` (that was CI's failure in tests/e2e/test_continuity_crash.py: 5 active)."""
    sink = peers.sink("127.0.0.46", None, "exchange")
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "routing": {"default_smarthost": f"[127.0.0.46]:{sink.port}", "smarthost_tls": "none"},
                 "continuity": {"mode": "off"}}, "test")
    spool = await _SlowToAnswerClaims.open(cfg.spool_path)
    spool.claimed = asyncio.Event()
    transport = SmtpTransport("gw.test", idle_timeout=0.0)
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport, make_logger("error"))
    try:
        ids = []
        for i in range(5):
            m = NewMessage(mail_from=SENDER, rcpt_tos=("bob@example.com",), data=DATA)
            await spool.commit(m)
            ids.append(m.queue_id)
        task = asyncio.create_task(qmgr.run())
        await asyncio.wait_for(spool.claimed.wait(), 10)
        task.cancel()                                   # the claim is committed, its answer not back
        await asyncio.gather(task, return_exceptions=True)
        await qmgr.drain(10)
        states = {(await spool.get(q)).state for q in ids}
        assert states == {QueueState.DELIVERED}, states
        assert sink.count() == 5
    finally:
        await transport.close()
        await spool.close()
