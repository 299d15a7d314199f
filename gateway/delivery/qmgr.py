"""The queue manager: takes due messages from the spool, delivers them, records the outcome.

Reads ``incoming`` and due ``deferred`` messages, moves them to ``active`` (one guarded UPDATE per
batch), groups each message's pending recipients by next hop (gateway.router), delivers the
groups concurrently (gateway.delivery.attempt), and records every recipient's outcome in one
transaction that also moves the message on: ``delivered``, ``bounced`` or ``deferred`` with the
next retry time (gateway.delivery.backoff, Postfix's schedule). Recipients that fail permanently,
or are still pending when the queue lifetime is over, get one RFC 3464 bounce to the envelope
sender, enqueued in the same transaction (never for a bounce: RFC 3464 §2, RFC 5321 §6.1).
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from gateway.config import Config
from gateway.delivery.attempt import RcptResult, deliver_group
from gateway.delivery.backoff import RetryPolicy, expired, next_attempt
from gateway.delivery.dsn import FailedRecipient, build_dsn, should_bounce
from gateway.delivery.hostcache import HostCache
from gateway.delivery.mx import MxResolver
from gateway.delivery.transport import Transport
from gateway.router import Router
from spool import NewMessage, QueueState, RcptState, Spool
from spool.query import StoredMessage
from spool.transitions import RcptOutcome, purge_finished

#: Seconds between looks at the queue when nothing wakes the manager (deferred mail, CLI flush).
POLL_INTERVAL = 1.0


class QueueManager:
    def __init__(self, cfg: Config, spool: Spool, router: Router, resolver: MxResolver,
                 transport: Transport, log, clock=time.time):
        d = cfg.delivery
        self.cfg, self.spool, self.router, self.resolver = cfg, spool, router, resolver
        self.transport, self.log, self.clock = transport, log, clock
        self.retry = RetryPolicy(d.minimal_backoff, d.maximal_backoff, d.maximal_lifetime,
                                 d.bounce_lifetime)
        self.hosts = HostCache(d.dead_host_ttl)
        self.capacity = d.max_concurrent
        self.inflight: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.stats = defaultdict(int)   # delivered / deferred / bounced / held recipients, dsn sent
        #: Set by the continuity engine during an event: recipients for the downstream (smarthost
        #: routes) are not attempted; their messages go to hold, never bounce for the outage.
        self.hold_downstream = False
        #: Called with each smarthost delivery outcome: (delivered, connection_failure, code).
        self.on_smarthost_outcome = None
        #: Set by the continuity engine: ``await filer(msg, held_addresses)`` → a
        #: spool.mailbox.FilingEntry (or None) filed in the same transaction as the hold.
        self.filer = None

    def notify(self, queue_id: str | None = None) -> None:
        """Something is due now (a new message was queued, a delivery finished)."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled. Cancel it, then ``await drain()``. Once an hour, records of
        finished messages older than ``delivery.finished_retention`` are purged."""
        next_purge = 0.0
        while True:
            if self.clock() >= next_purge:
                next_purge = self.clock() + 3600.0
                n = await self.spool.write(purge_finished, self.clock() - self.cfg.delivery.finished_retention)
                if n:
                    self.log.info("purged_finished", messages=n)
            self._wake.clear()
            free = self.capacity - len(self.inflight)
            if free > 0:
                for qid in await self.spool.claim_due(min(free, 256)):
                    task = asyncio.create_task(self._deliver(qid), name=f"deliver-{qid}")
                    self.inflight.add(task)
                    task.add_done_callback(self._done)
                if self.capacity - len(self.inflight) > 0 and self._wake.is_set():
                    continue
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            except asyncio.TimeoutError:
                pass

    def _done(self, task: asyncio.Task) -> None:
        self.inflight.discard(task)
        self._wake.set()

    async def drain(self, timeout: float = 30.0) -> None:
        """Wait for deliveries in flight; those still running after ``timeout`` are cancelled
        (their messages stay ``active`` and recovery requeues them at the next start)."""
        if self.inflight:
            _done, pending = await asyncio.wait(set(self.inflight), timeout=timeout)
            for t in pending:
                t.cancel()

    async def _deliver(self, queue_id: str) -> None:
        try:
            msg = await self.spool.get(queue_id, with_data=True)
            if msg is None:
                return
            if msg.data is None:
                await self.spool.move(queue_id, QueueState.ACTIVE, QueueState.CORRUPT,
                                      error="message bytes missing")
                self.log.error("corrupt", queue_id=queue_id)
                return
            await self._attempt(msg)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("delivery_error", queue_id=queue_id)
            try:  # never leave it active until the next restart
                await self.spool.move(queue_id, QueueState.ACTIVE, QueueState.DEFERRED,
                                      next_attempt_at=self.clock() + self.retry.minimal_backoff,
                                      error="4.3.0 internal error during delivery")
            except Exception:
                self.log.exception("defer_failed", queue_id=queue_id)

    async def _attempt(self, msg: StoredMessage) -> None:
        by_hop: dict = defaultdict(list)
        holding = self.hold_downstream
        held: list[str] = []
        for r in msg.pending:
            hop = self.router.next_hop(r.address)
            if holding and hop.kind == "smarthost":
                held.append(r.address)
                continue
            by_hop[hop].append(r)
        step = self.cfg.delivery.recipients_per_delivery
        jobs, chunks, hop_kinds = [], [], {}
        for hop, rcpts in by_hop.items():
            for i in range(0, len(rcpts), step):
                chunk = rcpts[i:i + step]
                chunks.append(chunk)
                hop_kinds[id(chunk)] = hop.kind
                jobs.append(deliver_group(
                    hop, msg.mail_from, [r.address for r in chunk], msg.data,
                    smtputf8=msg.smtputf8, body_8bit=msg.body_8bit, resolver=self.resolver,
                    transport=self.transport, hosts=self.hosts, log=self.log.bind(queue_id=msg.queue_id)))
        results = await asyncio.gather(*jobs)
        now = self.clock()
        too_old = expired(self.retry, msg.arrived_at + msg.held_seconds, now, msg.is_dsn)
        outcomes: list[RcptOutcome] = []
        failed: list[FailedRecipient] = []
        for chunk, res in zip(chunks, results):
            for r in chunk:
                out: RcptResult = res[r.address]
                if hop_kinds[id(chunk)] == "smarthost" and self.on_smarthost_outcome is not None:
                    self.on_smarthost_outcome(out.state is RcptState.DELIVERED,
                                              out.code is None, out.code)
                state, text = out.state, out.text
                if state is RcptState.PENDING and too_old:
                    state, text = RcptState.BOUNCED, f"4.4.7 delivery time expired: {out.text}"
                outcomes.append(RcptOutcome(r.idx, state, out.code, text, out.host))
                self._log_outcome(msg, r.address, state, out, text, now)
                if state is RcptState.BOUNCED:
                    failed.append(FailedRecipient(
                        r.address, _status_of(out.code, text), f"{out.code or ''} {text}".strip(),
                        out.host.split("[")[0] if out.host else ""))
        dsn = None
        if failed and should_bounce(msg.mail_from, msg.is_dsn):
            dsn = NewMessage(
                mail_from="", rcpt_tos=(msg.mail_from,), is_dsn=True,
                smtputf8=not msg.mail_from.isascii(),   # a non-ASCII sender: RFC 6533 §3
                data=build_dsn(reporting_mta=self.cfg.server.hostname,
                               original_mail_from=msg.mail_from, original_queue_id=msg.queue_id,
                               arrival_date=msg.arrived_at, recipients=failed, original=msg.data, now=now))
        state = await self.spool.record_attempt(
            msg.queue_id, outcomes, next_attempt(self.retry, msg.attempts + 1, now), dsn,
            hold=bool(held), filing=await self._filing(msg, held))
        if held:
            self.stats["held"] += len(held)
            self.log.info("held", queue_id=msg.queue_id, nrcpt=len(held), reason="continuity event")
        if dsn is not None:
            self.stats["dsn"] += 1
            self.log.info("bounce_queued", queue_id=dsn.queue_id, original=msg.queue_id,
                          to=msg.mail_from)
            self.notify()
        self.log.debug("attempt_done", queue_id=msg.queue_id, state=state.value)

    async def _filing(self, msg: StoredMessage, held: list[str]):
        """The continuity-mailbox filing for a message being held (never blocks the hold)."""
        if not held or self.filer is None:
            return None
        try:
            return await self.filer(msg, held)
        except Exception:
            self.log.exception("filing_failed", queue_id=msg.queue_id)
            return None

    def _log_outcome(self, msg, rcpt, state, out, text, now) -> None:
        word = {RcptState.DELIVERED: "delivered", RcptState.BOUNCED: "bounced",
                RcptState.PENDING: "deferred"}[state]
        self.stats[word] += 1
        self.log.info(word, queue_id=msg.queue_id, to=rcpt, relay=out.host or "none",
                      delay=round(now - msg.arrived_at, 3), reply=f"{out.code or ''} {text}".strip()[:300])


def _status_of(code: int | None, text: str) -> str:
    """The RFC 3463 status of a reply: its enhanced code if it has one, else from the code."""
    head = text.split(" ", 1)[0]
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts) and head[0] in "245":
        return head
    if code and code >= 500:
        return "5.0.0"
    return "4.0.0"
