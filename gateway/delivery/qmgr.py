"""The queue manager: takes due messages from the spool, delivers them, records the outcome.

Reads ``incoming`` and due ``deferred`` messages, moves them to ``active`` (one guarded UPDATE per
batch), groups each message's pending recipients by next hop (gateway.router), delivers the
groups concurrently in chunks (gateway.delivery.attempt), and records every recipient's outcome
(gateway.delivery.outcome, the OutcomeRecorder it inherits) in one transaction that also moves the message on: ``delivered``, ``bounced`` or ``deferred`` with the
next retry time (gateway.delivery.backoff, Postfix's schedule). Recipients that fail permanently,
or are still pending when the queue lifetime is over, get one RFC 3464 bounce to the envelope
sender, enqueued in the same transaction (never for a bounce: RFC 3464 §2, RFC 5321 §6.1).
With the journal on (continuity.journal = "all"), the recipients a smarthost route delivered
are filed into their continuity mailboxes in that transaction too (``journal`` hook); a filing
that fails is logged and counted, never holds up or fails the record.

With several chunks, each chunk's delivered recipients are written as soon as it completes. An
internal error in a chunk (ours: a route the resolver refuses, any exception) is a 4.3.0
temporary outcome for that chunk's recipients and counts as an attempt. The spool failing (disk
full) never ends the loop nor drops an outcome: both are retried with backoff (gateway.retry).
"""
from __future__ import annotations

import asyncio
import time
from collections import defaultdict

from gateway.config import Config
from gateway.continuity.filing import mailbox_key
from gateway.delivery.attempt import deliver_group
from gateway.delivery.backoff import RetryPolicy
from gateway.delivery.budget import ByteBudget
from gateway.delivery.claims import ClaimKeeper
from gateway.delivery.hostcache import HostCache
from gateway.delivery.mx import MxResolver
from gateway.delivery.outcome import INTERNAL_ERROR, OutcomeRecorder, internal_error
from gateway.delivery.transport import Transport
from gateway.retry import Backoff, FaultLog, retry
from gateway.router import Router
from spool import QueueState, RcptState, Spool, SpoolError
from spool.states import Claim, StaleClaim
from spool.query import StoredMessage
from spool.transitions import PURGE_BATCH, RcptOutcome

#: Seconds between looks at the queue when nothing wakes the manager (deferred mail, CLI flush).
POLL_INTERVAL = 1.0


class QueueManager(OutcomeRecorder):
    def __init__(self, cfg: Config, spool: Spool, router: Router, resolver: MxResolver,
                 transport: Transport, log, clock=time.time):
        d = cfg.delivery
        self.cfg, self.spool, self.router, self.resolver = cfg, spool, router, resolver
        self.transport, self.log, self.clock = transport, log, clock
        self.retry = RetryPolicy(d.minimal_backoff, d.maximal_backoff, d.maximal_lifetime,
                                 d.bounce_lifetime)
        self.hosts = HostCache(d.dead_host_ttl)
        self.capacity = d.max_concurrent
        #: Message bytes loaded by deliveries at once (gateway.delivery.budget).
        self.budget = ByteBudget(d.max_inflight_bytes)
        self.inflight: set[asyncio.Task] = set()
        self._wake = asyncio.Event()
        self.stats = defaultdict(int)   # delivered / deferred / bounced / held recipients, dsn sent
        #: Set by the continuity engine during an event: recipients for the downstream (smarthost
        #: routes) are not attempted; their messages go to hold, never bounce for the outage.
        self.hold_downstream = False
        #: Set by the continuity drill (gateway.continuity.drill): mailbox keys whose smarthost
        #: recipients are held (hold_reason 'drill') while no event holds everything; empty: none.
        self.drill_rcpts: frozenset[str] = frozenset()
        #: Called with each smarthost delivery outcome: (delivered, connection_failure, code).
        self.on_smarthost_outcome = None
        #: Set by the continuity engine: ``await filer(msg, held_addresses)`` → a
        #: spool.mailbox.FilingEntry (or None) filed in the same transaction as the hold.
        self.filer = None
        #: Set by gateway.continuity.journal when continuity.journal = "all": ``journal(msg,
        #: delivered_addresses)`` → a spool.journal.JournalEntry (or None), cheap and synchronous
        #: (no parsing), filed in the same transaction as the delivery record.
        self.journal = None
        #: Set by a claiming spool backend (the cluster's fencing, issue 9 item 5):
        #: ``final_dot_check(msg)`` → a callable (sync or async) asked just before each final
        #: dot of ``msg``'s deliveries, False when the claim's deadline has passed (the dot is
        #: withheld, gateway.delivery.datawriter). None: every dot is sent (the SQLite spool,
        #: one node, no claims to lose).
        self.final_dot_check = None
        # spool failures, logged once per distinct error (gateway.retry)
        self._loop_faults = FaultLog(log, "qmgr_claim_failed")
        self._purge_faults = FaultLog(log, "qmgr_purge_failed")
        self._record_faults = FaultLog(log, "spool_record_failed")
        #: The claims of deliveries in flight, renewed every ttl / 3 while run() runs.
        self.claims = ClaimKeeper(spool, log, self.stats, ttl=d.claim_ttl)
        if getattr(spool, "shared", False):   # several nodes: no dot once the claim may be gone
            self.final_dot_check = lambda msg: (lambda: self.claims.fresh(msg.queue_id))

    def notify(self, queue_id: str | None = None) -> None:
        """Something is due now (a new message was queued, a delivery finished)."""
        self._wake.set()

    async def _purge(self, before: float) -> int:
        """Purge finished records older than ``before`` in batches of PURGE_BATCH (one short
        write each, so commits of new mail interleave); returns how many were deleted."""
        total = 0
        while True:
            n = await self.spool.purge_finished(before, PURGE_BATCH)
            total += n
            if n < PURGE_BATCH:
                return total

    async def run(self) -> None:
        """Deliver until cancelled. Cancel it, then ``await drain()``. Once an hour, records of
        finished messages older than ``delivery.finished_retention`` are purged. A failing spool
        (disk full, I/O error) never ends the loop: the error is logged once, the loop backs off
        (0.5 s doubling to 10 s) and carries on by itself when the spool works again."""
        renewer = asyncio.create_task(self.claims.run(), name="qmgr-claims")
        try:
            await self._run()
        finally:
            renewer.cancel()

    async def _run(self) -> None:
        next_purge = 0.0
        backoff = Backoff()
        while True:
            if self.clock() >= next_purge:
                next_purge = self.clock() + 3600.0
                try:
                    n = await self._purge(self.clock() - self.cfg.delivery.finished_retention)
                except Exception as e:
                    self._purge_faults.failed(e)
                    next_purge = self.clock() + 60.0
                else:
                    self._purge_faults.recovered()
                    if n:
                        self.log.info("purged_finished", messages=n)
            self._wake.clear()
            free = self.capacity - len(self.inflight)
            if free > 0:
                try:
                    asked_at = self.claims.clock()
                    due = await self._claim(min(free, 256), asked_at)
                except Exception as e:
                    self._loop_faults.failed(e)
                    await asyncio.sleep(backoff.next())
                    continue
                self._loop_faults.recovered()
                backoff.reset()
                self._start(due, asked_at)
                if self.capacity - len(self.inflight) > 0 and self._wake.is_set():
                    continue
            try:
                await asyncio.wait_for(self._wake.wait(), POLL_INTERVAL)
            except asyncio.TimeoutError:
                pass

    async def _claim(self, limit: int, asked_at: float) -> list[Claim]:
        """``spool.claim_due(limit)``, not lost to a cancellation: a claim is committed by the
        spool's writer whether or not its caller still waits. When run() is cancelled (shutdown)
        during the claim, the claim is awaited all the same and its deliveries are started, so
        drain() finishes and records them instead of leaving the messages ``active`` until the
        next start; then the cancellation goes on."""
        claiming = asyncio.ensure_future(self.spool.claim_due(limit, self.claims.ttl))
        try:
            return await asyncio.shield(claiming)
        except asyncio.CancelledError:
            try:
                due = await claiming
            except Exception:            # nothing was claimed: nothing to finish
                raise asyncio.CancelledError from None
            self._start(due, asked_at)
            raise

    def _start(self, due: list[Claim], asked_at: float) -> None:
        """One delivery task per claim, tracked in self.inflight (drain() waits for them)."""
        for claim in due:
            self.claims.track(claim, asked_at)
            task = asyncio.create_task(self._deliver(claim), name=f"deliver-{claim}")
            self.inflight.add(task)
            task.add_done_callback(self._done)

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

    async def _spool(self, op, queue_id: str):
        """``await op()``, retried through SpoolError (logged once per distinct error, backing
        off): a message's outcome is never dropped because the disk is full for a while."""
        return await retry(op, self._record_faults, retry_on=(SpoolError,), queue_id=queue_id)

    async def _deliver(self, claim: Claim) -> None:
        """Deliver the claimed message. Every write names the claim's token: once the claim is
        no longer current (an operator moved the message, or it expired and was claimed again),
        the outcome is refused (StaleClaim), logged and counted, never retried. The claim is
        renewed (self.claims) until the delivery ends."""
        queue_id, token = claim.queue_id, claim.token
        read = getattr(claim, "message", None)      # read with the claim (small, on PostgreSQL)
        if read is not None:
            claim.message = None                    # held here only, let go with the delivery
        try:
            await self._deliver_claimed(queue_id, token, getattr(claim, "size", None), read)
        finally:
            self.claims.drop(queue_id)

    async def _deliver_claimed(self, queue_id: str, token: int, size: int | None = None,
                               read=None) -> None:
        """``read``: the message as the claim read it (with its bytes), or None: read here."""
        msg = None
        try:
            if size is None:          # a claim made without it (a spool that does not read it)
                size = await self._spool(lambda: self.spool.message_size(queue_id), queue_id)
            if size is None:
                return
            # its bytes are read only once they fit in delivery.max_inflight_bytes; meanwhile the
            # message stays active (recovery requeues it after a crash)
            async with self.budget.hold(size):
                msg, read = read, None
                if msg is None:
                    msg = await self._spool(lambda: self.spool.get(queue_id, with_data=True),
                                            queue_id)
                if msg is None:
                    return
                if msg.data is None:
                    await self._spool(lambda: self.spool.move(
                        queue_id, QueueState.ACTIVE, QueueState.CORRUPT,
                        error="message bytes missing", token=token), queue_id)
                    self.log.error("corrupt", queue_id=queue_id)
                    return
                if self.final_dot_check is not None and not self.claims.fresh(queue_id):
                    self._expired_locally(queue_id, token)
                    return
                await self._attempt(msg, token)
                msg = None              # its bytes are let go before the budget is
        except asyncio.CancelledError:
            raise
        except StaleClaim:
            msg = None
            self._claim_lost(queue_id, token)
        except Exception:
            msg = None                  # outside the budget now
            self.log.exception("delivery_error", queue_id=queue_id)
            try:  # never leave it active until the next restart
                await self._spool(lambda: self.spool.move(
                    queue_id, QueueState.ACTIVE, QueueState.DEFERRED,
                    next_attempt_at=self.clock() + self.retry.minimal_backoff,
                    error=INTERNAL_ERROR, token=token), queue_id)
            except asyncio.CancelledError:
                raise
            except StaleClaim:
                self._claim_lost(queue_id, token)
            except Exception:
                self.log.exception("defer_failed", queue_id=queue_id)

    def _expired_locally(self, queue_id: str, token: int) -> None:
        """A claim whose local deadline passed before its delivery began (the process was
        paused, or the budget or the spool kept it waiting): no session is opened (issue 9 item
        5); the claim expires in the database and any node's requeue returns the message."""
        self.stats["claims_expired_locally"] += 1
        self.log.warning("claim_expired_locally", queue_id=queue_id, token=token,
                         reason="its local deadline passed before the delivery began: no session "
                                "opened, the message returns to the queue when the claim expires")

    def _claim_lost(self, queue_id: str, token: int) -> None:
        self.stats["stale_claims"] += 1
        self.log.warning("claim_lost", queue_id=queue_id, token=token,
                         reason="the claim is no longer current: outcome not recorded")

    async def _attempt(self, msg: StoredMessage, token: int | None = None) -> None:
        """One attempt: every chunk delivered concurrently, each chunk's delivered recipients
        recorded as soon as it completes, then one record of the whole attempt. An internal
        error (ours, not the peer's) in a chunk or afterwards becomes a 4.3.0 temporary outcome
        of the recipients it left without one: it counts as an attempt, so backoff, the queue
        lifetime and the bounce apply, and recipients already delivered are never sent again."""
        done: list[tuple] = []        # (recipient, RcptResult, hop kind) as chunks complete
        held: list[str] = []
        recorded = False
        # an event holds every smarthost recipient; else a drill holds its own recipients only
        reason = "continuity" if self.hold_downstream else "drill"
        drill = self.drill_rcpts
        try:
            by_hop: dict = defaultdict(list)
            for r in msg.pending:
                hop = self.router.next_hop(r.address)
                if hop.kind == "smarthost" and (reason == "continuity" or
                                                (drill and mailbox_key(r.address) in drill)):
                    held.append(r.address)
                    continue
                by_hop[hop].append(r)
            step = self.cfg.delivery.recipients_per_delivery
            chunks = [(hop, rcpts[i:i + step]) for hop, rcpts in by_hop.items()
                      for i in range(0, len(rcpts), step)]
            await asyncio.gather(*(self._chunk(msg, hop, chunk, done, early=len(chunks) > 1,
                                               token=token) for hop, chunk in chunks))
            await self._finish(msg, done, held, hold_reason=reason, token=token)
            recorded = True
        except (asyncio.CancelledError, StaleClaim):
            raise
        except Exception as e:
            if recorded:
                raise
            self.log.exception("delivery_error", queue_id=msg.queue_id)
            got = {r.idx for r, _out, _kind in done}
            err = internal_error(e)
            done += [(r, err, "") for r in msg.pending if r.idx not in got and r.address not in held]
            await self._finish(msg, done, held, safe=True, hold_reason=reason, token=token)

    async def _chunk(self, msg: StoredMessage, hop, chunk: list, done: list, early: bool,
                     token: int | None = None) -> None:
        """Deliver one chunk; append its outcomes to ``done``; never raises (but CancelledError).
        With ``early``, its delivered recipients are recorded at once (the other chunks may still
        take a while: a kill meanwhile must not send these again)."""
        log = self.log.bind(queue_id=msg.queue_id)
        try:
            check = self.final_dot_check(msg) if self.final_dot_check is not None else None
            res = await deliver_group(
                hop, msg.mail_from, [r.address for r in chunk], msg.data,
                smtputf8=msg.smtputf8, body_8bit=msg.body_8bit, resolver=self.resolver,
                transport=self.transport, hosts=self.hosts, log=log, before_final_dot=check)
        except asyncio.CancelledError:
            raise
        except Exception as e:
            log.exception("chunk_error", next_hop=hop.spec, nrcpt=len(chunk))
            res = {r.address: internal_error(e) for r in chunk}
        outs = [(r, res.get(r.address) or internal_error(None), hop.kind) for r in chunk]
        done.extend(outs)
        delivered = [RcptOutcome(r.idx, out.state, out.code, out.text, out.host)
                     for r, out, _kind in outs if out.state is RcptState.DELIVERED]
        if early and delivered:
            local = [r.address for r, out, kind in outs
                     if kind == "smarthost" and out.state is RcptState.DELIVERED]
            journal = self._journal_entry(msg, local) if local else None
            try:   # best effort: the attempt's own record below writes them (and the journal) too
                await self.spool.record_delivered(msg.queue_id, delivered, journal, token=token)
            except StaleClaim:
                pass            # the attempt's own record reports the lost claim
            except Exception as e:
                self._record_faults.failed(e, queue_id=msg.queue_id)
