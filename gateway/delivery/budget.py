"""A byte budget for deliveries: how many message bytes the queue manager holds in memory at once.

Each delivery (gateway.delivery.qmgr ``_deliver``) holds its message's size, in bytes, from
before the body is read from the spool until its attempt is recorded; aiosmtplib made about 3
more copies while sending (line-end normalising, dot-stuffing, the send buffer), so the
delivery's share of RSS was about 4 × the bytes held (bench/README.md, "Memory"). Our DATA writer
(gateway.delivery.datawriter) stuffs 256 KiB at a time and copies the whole body only for a
message with bare CR or LF line ends, so that bound is now loose (not re-measured).

``hold(n)`` waits while the bytes already held plus ``n`` would exceed the limit. Waiters are
served first come, first served, so a large message is never starved by a stream of small ones
(a small one may wait behind a large one: head-of-line, by design). A message larger than the
whole limit is charged the whole limit: it runs alone, when nothing else holds any, and is never
refused. Released on every exit: normal return, exception, cancellation (drain), also when
cancelled while still waiting. Pure asyncio, no I/O; one event loop.
"""
from __future__ import annotations

import asyncio
from collections import deque
from contextlib import asynccontextmanager
from typing import AsyncIterator

__all__ = ["ByteBudget"]


class ByteBudget:
    """At most ``limit`` bytes held at once (``limit`` ≥ 1, bytes); see the module docstring."""

    def __init__(self, limit: int):
        if limit < 1:
            raise ValueError(f"byte budget must be at least 1 byte, not {limit}")
        self.limit = limit
        self.held = 0                        # bytes held now
        self._waiters: deque[tuple[int, asyncio.Future]] = deque()

    def charge(self, size: int) -> int:
        """What a message of ``size`` bytes is charged: its size, capped at the limit."""
        return max(0, min(size, self.limit))

    @property
    def waiting(self) -> int:
        """How many holders are waiting for bytes."""
        return len(self._waiters)

    async def acquire(self, size: int) -> int:
        """Wait until ``size`` bytes (capped at the limit) fit; return the charge to release.
        Raises CancelledError if cancelled while waiting, holding nothing then."""
        n = self.charge(size)
        if not self._waiters and self.held + n <= self.limit:
            self.held += n
            return n
        fut = asyncio.get_running_loop().create_future()
        entry = (n, fut)
        self._waiters.append(entry)
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():   # granted just before the cancel landed
                self.release(n)
            else:
                if entry in self._waiters:           # _grant may have dropped it already
                    self._waiters.remove(entry)
                self._grant()                        # it may have blocked the ones behind it
            raise
        return n

    def release(self, n: int) -> None:
        """Give back a charge returned by ``acquire``; wakes the waiters that now fit."""
        self.held -= n
        if self.held < 0:
            raise RuntimeError(f"byte budget released more than it held ({self.held})")
        self._grant()

    @asynccontextmanager
    async def hold(self, size: int) -> AsyncIterator[int]:
        """``async with budget.hold(size):`` holds ``size`` bytes (capped) for the block."""
        n = await self.acquire(size)
        try:
            yield n
        finally:
            self.release(n)

    def _grant(self) -> None:
        while self._waiters:
            n, fut = self._waiters[0]
            if fut.done():                       # cancelled, its acquire removes it
                self._waiters.popleft()
                continue
            if self.held + n > self.limit:
                return
            self._waiters.popleft()
            self.held += n
            fut.set_result(None)
