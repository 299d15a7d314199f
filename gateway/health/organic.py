"""Organic signal: what real deliveries to the smarthost say about Exchange, over a sliding window.

The queue manager calls ``record()`` once per delivery attempt to a smarthost. An attempt counts
as *unavailable* when it failed without Exchange answering for the message: a connection failure
(refused, timeout, TLS, 421 greeting), a 4xx reply, or a failure without any reply code. A 5xx
is Exchange answering (it is up and refuses that one message), so it does not count against it.

``snapshot()`` is None while the window holds fewer than ``min_events`` attempts (too little
traffic to say anything); otherwise a critical ``ProbeResult`` named ``organic`` that is ok
unless *every* attempt in the window was unavailable. Pure: no I/O, the clocks are injected: the
window runs on ``clock`` (monotonic seconds: a wall-clock step neither empties nor stretches it),
the result's ``at`` is ``wall`` (unix seconds, shown).
Reads and writes no queue state.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable

from .result import ProbeResult

__all__ = ["OrganicSignal"]


class OrganicSignal:
    """Outcomes of real deliveries to the smarthost over a sliding window (seconds)."""

    name = "organic"
    critical = True

    def __init__(self, window: float = 120.0, min_events: int = 5,
                 clock: Callable[[], float] = time.monotonic,
                 wall: Callable[[], float] = time.time) -> None:
        if window <= 0 or min_events < 1:
            raise ValueError("window must be positive and min_events at least 1")
        self.window, self.min_events, self.clock, self.wall = window, min_events, clock, wall
        # (at, ok, connection_failure, code)
        self._events: deque[tuple[float, bool, bool, int | None]] = deque()

    def record(self, ok: bool, *, connection_failure: bool, code: int | None) -> None:
        """One delivery attempt to the smarthost: ``ok`` it was accepted; ``connection_failure``
        no SMTP session came up; ``code`` the reply that decided it (None if there was none)."""
        now = self.clock()
        self._events.append((now, bool(ok), bool(connection_failure), code))
        self._prune(now)

    def _prune(self, now: float) -> None:
        while self._events and self._events[0][0] <= now - self.window:
            self._events.popleft()

    def snapshot(self) -> ProbeResult | None:
        now = self.clock()
        self._prune(now)
        events = list(self._events)
        if len(events) < self.min_events:
            return None
        delivered = sum(1 for _, ok, _, _ in events if ok)
        conn = sum(1 for _, ok, cf, _ in events if not ok and cf)
        soft = sum(1 for _, ok, cf, c in events if not ok and not cf and (c is None or 400 <= c < 500))
        hard = len(events) - delivered - conn - soft
        unavailable = conn + soft
        n = len(events)
        detail = (f"{n} deliveries in {self.window:g}s: {delivered} ok, {conn} connection failures, "
                  f"{soft} temporary failures, {hard} permanent failures; "
                  f"unavailable {unavailable / n:.0%}, delivered {delivered / n:.0%}")
        return ProbeResult(self.name, unavailable < n, self.wall(), 0.0, detail, self.critical)
