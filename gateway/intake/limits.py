"""The intake's session limits (smtp.max_connections*, smtp.max_concurrent_data*): one of each per
IntakeServer, shared by all its listeners and sessions, used only from the running loop.

- ConnectionLimits: open sessions, in total and per client IP (a str, the PROXY header's source on
  a PROXY listener). ``acquire*`` return None when a slot was taken, else the 421 4.7.0 reply to
  send (gateway.intake.replies); nothing raises. Each taken slot is given back by one ``release*``.
- DataSlots: concurrent DATA transfers (each holds a whole message in memory), in total and per
  client IP. ``async with hold(ip)`` waits (never refuses) for the client's slot, then one of the
  total; an address no session holds or waits for is forgotten.
"""
from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from typing import AsyncIterator

from gateway.intake import replies


class ConnectionLimits:
    """Counts open SMTP sessions, in total and per client IP. A connection takes its total slot
    when it is accepted and its client slot once the client is known: at once on a plain
    listener, after the PROXY header (keyed by the real client) on a PROXY listener."""

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self.open = 0
        self.by_ip: Counter[str] = Counter()

    def acquire_total(self) -> str | None:
        """Take one of the ``total`` slots; return None, or the 421 reply if none is free."""
        if self.open >= self.total:
            return replies.TOO_MANY_CONNECTIONS
        self.open += 1
        return None

    def acquire_client(self, ip: str) -> str | None:
        """Take a slot of client ``ip``; return None, or the 421 reply if it has none left."""
        if self.by_ip[ip] >= self.per_client:
            return replies.TOO_MANY_CONNECTIONS_FROM_YOU
        self.by_ip[ip] += 1
        return None

    def acquire(self, ip: str) -> str | None:
        """Both slots for ``ip``; return None, or the 421 reply to send if over a limit."""
        refusal = self.acquire_total()
        if refusal is None:
            refusal = self.acquire_client(ip)
            if refusal is not None:
                self.release_total()
        return refusal

    def release_total(self) -> None:
        self.open -= 1

    def release_client(self, ip: str) -> None:
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]

    def release(self, ip: str) -> None:
        self.release_total()
        self.release_client(ip)


class DataSlots:
    """Concurrent DATA transfers: at most ``total`` at once, ``per_client`` per client IP. A
    transfer first waits for a slot of its address, then for one of the total, so sessions that
    wait for their own address never hold a slot another address could use."""

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self._all = asyncio.Semaphore(total)
        self._by_ip: dict[str, list] = {}    # ip -> [Semaphore, sessions holding or waiting]

    @contextlib.asynccontextmanager
    async def hold(self, ip: str) -> AsyncIterator[None]:
        entry = self._by_ip.setdefault(ip, [asyncio.Semaphore(self.per_client), 0])
        entry[1] += 1
        try:
            async with entry[0], self._all:
                yield
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._by_ip[ip]
