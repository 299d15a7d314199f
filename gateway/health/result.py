"""What every health probe returns, and the interface the runner and the continuity engine use.

A probe is an object with ``name``, ``interval``, ``timeout``, ``critical`` and an async
``check()`` that never raises (other than ``CancelledError``): every failure, whatever its cause,
is a ``ProbeResult`` with ``ok=False`` and a ``detail`` an admin can read. Reads and writes no
queue state.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ProbeResult", "Probe", "failure"]


@dataclass(frozen=True)
class ProbeResult:
    """One outcome of one probe.

    ``probe``: the probe's name (``"smtp:inbound"``, ``"http:owa"``; one host of an SMTP probe is
    ``"smtp:mx1.site-a.smarthost.test[127.0.0.11]:25"``); ``at``: unix seconds when the check
    finished; ``latency``: seconds the check took; ``detail``: the reply or error
    (``"250 2.1.5 OK"``, ``"connect: refused"``, ``"HTTP 503"``); ``critical``: True if the result
    counts for "can Exchange take mail" (SMTP probes, organic), False if it is informative (HTTP).
    """

    probe: str
    ok: bool
    at: float
    latency: float
    detail: str
    critical: bool


@runtime_checkable
class Probe(Protocol):
    name: str
    interval: float
    timeout: float
    critical: bool

    async def check(self) -> ProbeResult:
        """Run the check once; never raises except ``asyncio.CancelledError``."""
        ...


def check_budget(timeout: float) -> float:
    """Seconds a check may spend: a little less than ``timeout`` (10 %, at most 0.5 s), so the
    check times out itself, before the runner's hard bound, and its detail says what timed out."""
    return max(timeout - min(0.5, timeout * 0.1), timeout * 0.5)


def failure(probe: str, started: float, detail: str, critical: bool) -> ProbeResult:
    """A failed result for ``probe`` whose check started at ``started`` (time.monotonic())."""
    return ProbeResult(probe, False, time.time(), time.monotonic() - started, detail, critical)


def describe(exc: BaseException) -> str:
    """A short, readable description of a network failure (for ``detail``)."""
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, TimeoutError):
        return "timeout"
    text = str(exc).strip() or type(exc).__name__
    return f"{type(exc).__name__}: {text}"[:200]
