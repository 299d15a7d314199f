"""What the end of a delivery attempt writes: each recipient's outcome, the message's next state,
its bounce, its continuity filing and its journal entry, in one spool transaction.

``OutcomeRecorder`` is the recording half of gateway.delivery.qmgr.QueueManager (which inherits
it); it reads the host's ``cfg``, ``clock`` (seconds since the epoch), ``retry``
(backoff.RetryPolicy), ``spool``, ``log``, ``stats`` (a defaultdict(int)), the hooks ``filer``,
``journal`` and ``on_smarthost_outcome`` (each None or a callable, set at any time), ``notify()``
and ``_spool(op, queue_id)`` (a spool write retried through SpoolError). An attempt's outcomes
are ``done``: a list of (spool Recipient, attempt.RcptResult, hop kind: "smarthost", "mx" or ""
after an internal error).

``_finish`` retries the write through SpoolError until the spool takes it; StaleClaim (the claim
is no longer current) propagates, and so does a bounce that cannot be built unless ``safe``. A
failing filer or journal hook is logged and counted, never raised. Pure helpers: ``status_of``
(the RFC 3463 status of a reply) and ``internal_error`` (the 4.3.0 outcome, a RcptResult).
"""
from __future__ import annotations

import re

from gateway.delivery.attempt import RcptResult
from gateway.delivery.backoff import expired, next_attempt, spread_of
from gateway.delivery.dsn import FailedRecipient, build_dsn, should_bounce
from spool import NewMessage, RcptState
from spool.query import StoredMessage
from spool.transitions import RcptOutcome

#: What a recipient is told (queue show, and the DSN at the lifetime) when we failed, not the peer.
INTERNAL_ERROR = "4.3.0 internal error during delivery"
_ENHANCED = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")     # RFC 3463 §2


class OutcomeRecorder:
    """Records an attempt's end (see the module docstring for what it reads from its host)."""

    async def _finish(self, msg: StoredMessage, done: list, held: list[str],
                      safe: bool = False, hold_reason: str = "continuity",
                      token: int | None = None) -> None:
        """Record the attempt's outcomes, the message's next state and its bounce in one
        transaction, retried until the spool takes it. ``safe`` (after an internal error):
        skip the outcome hook and record even if the bounce cannot be built. ``held`` are the
        recipients left pending on hold for ``hold_reason`` ('continuity' or 'drill')."""
        now = self.clock()
        too_old = expired(self.retry, msg.arrived_at + msg.held_seconds, now, msg.is_dsn)
        outcomes: list[RcptOutcome] = []
        failed: list[FailedRecipient] = []
        for r, out, kind in done:
            if kind == "smarthost" and self.on_smarthost_outcome is not None and not safe:
                self.on_smarthost_outcome(out.state is RcptState.DELIVERED, out.code is None, out.code)
            state, text = out.state, out.text
            if state is RcptState.PENDING and too_old:
                state, text = RcptState.BOUNCED, f"4.4.7 delivery time expired: {out.text}"
            outcomes.append(RcptOutcome(r.idx, state, out.code, text, out.host))
            self._log_outcome(msg, r.address, state, out, text, now)
            if state is RcptState.BOUNCED:
                failed.append(FailedRecipient(
                    r.address, status_of(out.code, text), f"{out.code or ''} {text}".strip(),
                    out.host.split("[")[0] if out.host else ""))
        dsn = None
        if failed and should_bounce(msg.mail_from, msg.is_dsn):
            try:
                dsn = NewMessage(
                    mail_from="", rcpt_tos=(msg.mail_from,), is_dsn=True,
                    queue_id=self.spool.new_queue_id(),     # with the node tag on a shared spool
                    smtputf8=not msg.mail_from.isascii(),   # a non-ASCII sender: RFC 6533 §3
                    data=build_dsn(reporting_mta=self.cfg.server.hostname,
                                   original_mail_from=msg.mail_from, original_queue_id=msg.queue_id,
                                   arrival_date=msg.arrived_at, recipients=failed,
                                   original=msg.data, now=now))
            except Exception:
                if not safe:
                    raise
                self.log.exception("dsn_failed", queue_id=msg.queue_id)
        filing = await self._filing(msg, held)
        journal = self._journal(msg, outcomes, done)
        next_at = next_attempt(self.retry, msg.attempts + 1, now,
                               spread_of(msg.queue_id, msg.attempts + 1))
        state = await self._spool(lambda: self.spool.record_attempt(
            msg.queue_id, outcomes, next_at, dsn, hold=bool(held), filing=filing, journal=journal,
            on_journal_error=lambda e: self._journal_failed(msg.queue_id, e),
            hold_reason=hold_reason, token=token), msg.queue_id)
        if journal is not None:
            self.stats["journaled"] += 1
        if held:
            self.stats["held" if hold_reason == "continuity" else "drill_held"] += len(held)
            self.log.info("held", queue_id=msg.queue_id, nrcpt=len(held),
                          reason="continuity event" if hold_reason == "continuity" else "continuity drill")
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

    def _journal(self, msg: StoredMessage, outcomes: list[RcptOutcome], done: list):
        """The journal entry for the recipients of this attempt that a smarthost route delivered
        (local mailboxes), or None; a failure is logged and counted, never raised."""
        delivered = [r.address for (r, _out, kind), o in zip(done, outcomes)
                     if kind == "smarthost" and o.state is RcptState.DELIVERED]
        return self._journal_entry(msg, delivered) if delivered else None

    def _journal_entry(self, msg: StoredMessage, delivered: list[str]):
        if self.journal is None:
            return None
        try:
            return self.journal(msg, delivered)
        except Exception as e:
            self._journal_failed(msg.queue_id, e)
            return None

    def _journal_failed(self, queue_id: str, exc: Exception) -> None:
        self.stats["journal_failed"] += 1
        self.log.error("journal_failed", queue_id=queue_id, error=f"{type(exc).__name__}: {exc}"[:300])

    def _log_outcome(self, msg, rcpt, state, out, text, now) -> None:
        word = {RcptState.DELIVERED: "delivered", RcptState.BOUNCED: "bounced",
                RcptState.PENDING: "deferred"}[state]
        self.stats[word] += 1
        self.log.info(word, queue_id=msg.queue_id, to=rcpt, relay=out.host or "none",
                      delay=round(now - msg.arrived_at, 3), reply=f"{out.code or ''} {text}".strip()[:300])


def status_of(code: int | None, text: str) -> str:
    """The RFC 3463 status of a reply: its enhanced code if it is a valid one (class 2/4/5, then
    1-3 digits per subject and detail field), else the class default from the reply code
    ("5.0.0" for 5xx, "4.0.0" otherwise): "550 5.1.1000 ..." gives "5.0.0"."""
    head = text.split(" ", 1)[0]
    if _ENHANCED.match(head):
        return head
    if code and code >= 500:
        return "5.0.0"
    return "4.0.0"


def internal_error(exc: BaseException | None) -> RcptResult:
    """The temporary outcome of a recipient that an internal error of ours left without one."""
    what = f" ({type(exc).__name__})" if exc is not None else ""
    return RcptResult(RcptState.PENDING, 451, f"{INTERNAL_ERROR}{what}")
