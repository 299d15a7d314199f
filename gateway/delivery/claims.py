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

from gateway.retry import FaultLog
from spool.claims import CLAIM_TTL
from spool.states import Claim


class ClaimKeeper:
    """The claims of ``spool``'s deliveries in flight, renewed while ``run()`` runs."""

    def __init__(self, spool, log, stats, ttl: float = CLAIM_TTL):
        self.spool, self.log, self.stats, self.ttl = spool, log, stats, ttl
        self.held: dict[str, Claim] = {}
        self._faults = FaultLog(log, "claim_renew_failed")

    def track(self, claim: Claim) -> None:
        self.held[claim.queue_id] = claim

    def drop(self, queue_id: str) -> None:
        self.held.pop(queue_id, None)

    async def renew_once(self) -> None:
        """Renew every claim held now; log and forget the ones the spool did not renew."""
        claims = list(self.held.values())
        if not claims:
            return
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
            else:
                del self.held[c.queue_id]
                self.stats["claims_lost"] += 1
                self.log.warning("claim_lost", queue_id=c.queue_id, token=c.token,
                                 reason="not renewed: the claim is no longer current")

    async def run(self) -> None:
        """Renew every ``ttl / 3`` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.ttl / 3)
            await self.renew_once()
