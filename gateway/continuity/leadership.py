"""Who may act on the continuity state of a shared (PostgreSQL) spool: the "continuity" leader
lease, renewed on the monotonic clock, and the DAC rule.

``sync(now)`` is called at the start of every controller step (``now``: monotonic seconds). It
takes or renews the lease every ``renew`` s (TTL ``ttl`` s, on the database's clock) and reports
whether this node holds it; the epoch returned is the fencing token of every leader write. A
node has no authority (``epoch`` None, ``needs_read`` set) after ``lose(reason)``: at start, on
LeaseLost, on a spool error, when its local lease deadline (the start of its last successful
renewal + ``ttl`` - ``margin``) passed, or when the monotonic clock jumped more than ``renew`` s
past the expected step interval between two syncs (it was paused). It regains it only by
re-reading the shared state (the controller, after ``sync``; then ``read_done()``) and, to lead,
taking the lease again. Counts: ``stepdowns`` (times authority was lost while leading).
Errors: SpoolError from the spool propagates (the caller calls ``lose("spool_error")``).
"""
from __future__ import annotations

from collections.abc import Callable

#: Seconds between lease renewals and the lease TTL (CLUSTER-NOTES.md: 5 s / 15 s).
RENEW_INTERVAL = 5.0
LEASE_TTL = 15.0
#: Local safety margin (s) on the monotonic clock before the lease's expiry.
SAFETY_MARGIN = 2.0


class Leadership:
    def __init__(self, spool, log, monotonic: Callable[[], float], *, step: float = 1.0,
                 renew: float = RENEW_INTERVAL, ttl: float = LEASE_TTL,
                 margin: float = SAFETY_MARGIN, name: str = "continuity"):
        self.spool, self.log, self.monotonic = spool, log, monotonic
        self.step, self.renew, self.ttl, self.margin, self.name = step, renew, ttl, margin, name
        self.epoch: int | None = None
        self.needs_read = True          # DAC: nothing is acted on before a fresh read
        self.stepdowns = 0
        self.last_reason = "start"
        self._last_sync: float | None = None
        self._renew_at = 0.0
        self._deadline = 0.0

    @property
    def leading(self) -> bool:
        return self.epoch is not None and not self.needs_read

    def lose(self, reason: str, **detail) -> None:
        """No authority from now on until a fresh read (and a new lease to lead)."""
        if self.epoch is not None:
            self.stepdowns += 1
            self.log.warning("continuity_step_down", node=self.spool.node, epoch=self.epoch,
                             reason=reason, **detail)
        self.epoch = None
        self.needs_read = True
        self.last_reason = reason
        self._renew_at = 0.0

    def read_done(self) -> None:
        """The shared state was re-read in a fresh transaction after this sync."""
        self.needs_read = False

    async def sync(self, now: float) -> bool:
        """Check the clock, take or renew the lease when due; True if this node holds it."""
        if self._last_sync is not None and now - self._last_sync > self.step + self.renew:
            self.lose("paused", gap=round(now - self._last_sync, 3))
        self._last_sync = now
        if self.epoch is not None and now >= self._deadline:
            self.lose("lease_deadline")
        if self.epoch is None or now >= self._renew_at:
            t0 = self.monotonic()
            epoch = await self.spool.acquire_lease(self.name, self.ttl)
            if epoch is None:
                if self.epoch is not None:
                    self.lose("lease_taken")
            else:
                if epoch != self.epoch:
                    if self.epoch is not None:      # a new epoch is a new term: re-read first
                        self.lose("epoch_changed", new_epoch=epoch)
                    self.log.warning("continuity_leader", node=self.spool.node, epoch=epoch)
                self.epoch = epoch
                self._deadline = t0 + self.ttl - self.margin
                self._renew_at = t0 + self.renew
        return self.epoch is not None

    async def release(self) -> None:
        """Give the lease up (clean shutdown): the next node need not wait for the TTL."""
        if self.epoch is not None:
            epoch, self.epoch = self.epoch, None
            await self.spool.release_lease(epoch, self.name)


__all__ = ["LEASE_TTL", "RENEW_INTERVAL", "SAFETY_MARGIN", "Leadership"]
