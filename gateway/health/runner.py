"""Probe runner: every probe on its own interval in the caller's event loop, results kept.

``run()`` starts one task per probe and runs until cancelled. Each probe is checked at once,
then every ``interval`` seconds measured from the start of the previous check (a check that takes
longer than its interval is followed by the next one at once; checks of one probe never overlap).
Each check is bounded by the probe's ``timeout`` (``asyncio.timeout``): a check that overruns, or
a probe that breaks its contract and raises, becomes a failed ``ProbeResult``, so one bad probe
never stops the others. The last ``history`` results per probe are kept, and ``on_result`` is
called with every result (its exceptions are logged, not raised). Reads and writes no queue state.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Callable

from .result import Probe, ProbeResult, describe, failure

__all__ = ["ProbeRunner", "next_check_delay"]

log = logging.getLogger("mailgate.health")


def next_check_delay(started: float, interval: float, now: float) -> float:
    """Seconds to wait before a probe's next check, its last check having started at ``started``
    (loop time, seconds): ``interval`` counts from that start, and a check that overran its
    interval is followed at once (0.0)."""
    return max(0.0, started + interval - now)


class ProbeRunner:
    """Runs each probe on its own interval in the caller's event loop, keeps results with
    timestamps and latency."""

    def __init__(self, probes: list[Probe], history: int = 100,
                 on_result: Callable[[ProbeResult], None] | None = None) -> None:
        names = [p.name for p in probes]
        if len(set(names)) != len(names):
            raise ValueError(f"probe names must be unique: {names}")
        if history < 1:
            raise ValueError("history must be at least 1")
        self.probes, self.on_result = list(probes), on_result
        self._history: dict[str, deque[ProbeResult]] = {n: deque(maxlen=history) for n in names}
        self._latest: dict[str, ProbeResult] = {}
        self._failures: dict[str, int] = {n: 0 for n in names}

    async def run(self) -> None:
        """Check every probe on its interval until cancelled."""
        async with asyncio.TaskGroup() as tg:
            for probe in self.probes:
                tg.create_task(self._loop(probe), name=f"probe:{probe.name}")

    async def run_once(self) -> list[ProbeResult]:
        """Check every probe once, concurrently (for a CLI or at start-up); results are kept."""
        return list(await asyncio.gather(*(self._check(p) for p in self.probes)))

    async def _loop(self, probe: Probe) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await self._check(probe)
            await asyncio.sleep(next_check_delay(started, probe.interval, loop.time()))

    async def _check(self, probe: Probe) -> ProbeResult:
        started = time.monotonic()
        try:
            async with asyncio.timeout(probe.timeout):
                result = await probe.check()
        except TimeoutError:
            result = failure(probe.name, started, f"timeout after {probe.timeout:g}s", probe.critical)
        except Exception as e:           # a probe must not raise; if one does, it failed
            log.exception("probe_raised", extra={"probe": probe.name})
            result = failure(probe.name, started, f"probe error: {describe(e)}", probe.critical)
        self._store(probe.name, result)
        return result

    def _store(self, name: str, result: ProbeResult) -> None:
        self._history[name].append(result)
        self._latest[name] = result
        self._failures[name] = 0 if result.ok else self._failures[name] + 1
        log.debug("probe_result", extra={"probe": name, "ok": result.ok, "critical": result.critical,
                                         "latency": round(result.latency, 4), "detail": result.detail})
        if self.on_result is not None:
            try:
                self.on_result(result)
            except Exception:
                log.exception("probe_callback_failed", extra={"probe": name})

    def latest(self) -> dict[str, ProbeResult]:
        """The most recent result of every probe checked so far, by probe name."""
        return dict(self._latest)

    def history(self, name: str | None = None) -> list[ProbeResult]:
        """Kept results of probe ``name`` oldest first; of every probe (by ``at``) if None."""
        if name is not None:
            return list(self._history.get(name, ()))
        return sorted((r for h in self._history.values() for r in h), key=lambda r: r.at)

    def consecutive_failures(self, name: str) -> int:
        """Failed checks of ``name`` since its last success (not limited by ``history``)."""
        return self._failures.get(name, 0)
