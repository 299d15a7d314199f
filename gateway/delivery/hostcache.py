"""Memory of next-hop addresses that just failed, so that later messages skip them instead of
waiting for their connect timeout again (Postfix's smtp_connection_cache / "host down" state).

An address is marked down when a connection to it fails; it is skipped for ``ttl`` seconds. The
memory must never turn into a deferral by itself: ``order()`` puts the addresses marked down after
the live ones instead of dropping them, so an attempt tries them last when every live address has
failed (site A failed a minute ago and is back, site B fails now: site A still gets the mail).
"""
from __future__ import annotations

import time
from typing import Callable


class HostCache:
    def __init__(self, ttl: float, clock: Callable[[], float] = time.monotonic):
        self.ttl, self._clock = ttl, clock
        self._down: dict[tuple[str, int], float] = {}

    def mark_down(self, address: str, port: int) -> None:
        self._down[(address, port)] = self._clock() + self.ttl

    def mark_up(self, address: str, port: int) -> None:
        self._down.pop((address, port), None)

    def is_down(self, address: str, port: int) -> bool:
        until = self._down.get((address, port))
        if until is None:
            return False
        if until <= self._clock():
            del self._down[(address, port)]
            return False
        return True

    def order(self, candidates: list[tuple]) -> list[tuple]:
        """``candidates`` as ``(..., address, port)`` tuples (the last two items), in the order to
        try: those not marked down first, then those marked down, each part in the given order."""
        live = [c for c in candidates if not self.is_down(c[-2], c[-1])]
        return live + [c for c in candidates if c not in live]

    def down(self) -> list[tuple[str, int, float]]:
        """[(address, port, seconds left)] for `mailgate` status output."""
        now = self._clock()
        return [(a, p, t - now) for (a, p), t in self._down.items() if t > now]
