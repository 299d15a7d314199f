"""Keeping the claims of deliveries in flight: every ``ttl / 3`` seconds the claims still held are
renewed for ``ttl`` seconds in one spool write (CLUSTER-NOTES: claims of 60 s renewed every 20 s),
so a long SMTP session does not outlive its claim and get its message requeued by another node.

A claim the spool does not renew was lost (it expired and was requeued, or an operator moved the
message): it is logged (``claim_lost``) and counted; the delivery carries on, and its outcome
will be refused (spool.states.StaleClaim). A failing spool is logged once and tried again at the
next tick (gateway.retry.FaultLog). Reads and writes claims only through the spool's ``renew``.
"""
from __future__ import annotations

import asyncio
import time

from gateway.retry import FaultLog
from spool.claims import CLAIM_TTL
from spool.states import Claim


#: Seconds before a claim's local deadline at which its final dots are no longer sent.
DOT_MARGIN = 2.0


class ClaimKeeper:
    """The claims of ``spool``'s deliveries in flight, renewed while ``run()`` runs.

    Each claim also has a *local deadline* on this process's monotonic clock: the moment the
    claim (or its last renewal) was asked for, plus ``ttl``. The database's expiry is later than
    that, whatever this node's clock or a pause did, so ``fresh()`` is a safe local answer to
    "may I still send the final dot?" (issue 9 item 5: a node that was paused past its claim
    sends no final dot for it; another node may be delivering the message by then)."""

    def __init__(self, spool, log, stats, ttl: float = CLAIM_TTL, clock=time.monotonic):
        self.spool, self.log, self.stats, self.ttl, self.clock = spool, log, stats, ttl, clock
        self.held: dict[str, Claim] = {}
        self.deadline: dict[str, float] = {}
        self._faults = FaultLog(log, "claim_renew_failed")

    def track(self, claim: Claim, asked_at: float | None = None) -> None:
        """Keep ``claim``; ``asked_at`` (monotonic s) is when claim_due was called (default now)."""
        self.held[claim.queue_id] = claim
        self.deadline[claim.queue_id] = (self.clock() if asked_at is None else asked_at) + self.ttl

    def drop(self, queue_id: str) -> None:
        self.held.pop(queue_id, None)
        self.deadline.pop(queue_id, None)

    def fresh(self, queue_id: str) -> bool:
        """True while ``queue_id``'s claim is held and its local deadline is more than DOT_MARGIN
        seconds away."""
        d = self.deadline.get(queue_id)
        return d is not None and self.clock() < d - DOT_MARGIN

    async def renew_once(self) -> None:
        """Renew every claim held now; log and forget the ones the spool did not renew."""
        claims = list(self.held.values())
        if not claims:
            return
        asked_at = self.clock()
        try:
            renewed = {c.queue_id: c for c in await self.spool.renew(claims, self.ttl)}
        except Exception as e:
            self._faults.failed(e)
            return
        self._faults.recovered()
        for c in claims:
            if self.held.get(c.queue_id) is not c:
                continue                        # finished meanwhile
            if c.queue_id in renewed:
                self.held[c.queue_id] = renewed[c.queue_id]
                self.deadline[c.queue_id] = asked_at + self.ttl
            else:
                self.drop(c.queue_id)
                self.stats["claims_lost"] += 1
                self.log.warning("claim_lost", queue_id=c.queue_id, token=c.token,
                                 reason="not renewed: the claim is no longer current")

    async def requeue_expired(self) -> int:
        """On a shared spool (several nodes), return every expired claim (a dead or paused
        node's) to the queue; returns how many. A failing spool is logged once."""
        try:
            n = await self.spool.requeue_expired()
        except Exception as e:
            self._faults.failed(e)
            return 0
        if n:
            self.stats["claims_requeued"] += n
            self.log.warning("claims_requeued", messages=n, reason="claim expired (its node died"
                             " or was cut off); any node delivers them now")
        return n

    async def run(self) -> None:
        """Renew every ``ttl / 3`` seconds until cancelled; on a shared spool also requeue the
        expired claims of other nodes then (so a dead node's mail is delivered within the claim
        TTL plus a third of it)."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.renew_once()
            if getattr(self.spool, "shared", False):
                await self.requeue_expired()
