"""Critical probe evidence aggregated into one verdict for the continuity engine (pure; used by
gateway.continuity.controller, which re-exports ``aggregate``). On a shared spool the leader
adds every other node's fresh results (``remote``): one node that still reaches Exchange keeps
the cluster out of an event, so nodes whose probes disagree cause no event and no flapping."""
from __future__ import annotations

from collections.abc import Iterable

from gateway.health.result import ProbeResult


def aggregate(results: Iterable, now: float, fresh_within: float) -> tuple[bool | None, str]:
    """Critical evidence → (ok, detail). ``results`` are probe results with ``probe``, ``ok``,
    ``at``, ``critical``, ``detail``. Synthetic probes decide when they have fresh results: ok if
    any passed (some path into Exchange works), False if all failed. The organic signal (real
    deliveries, named "organic") decides only when no probe has a fresh result, because its
    window still holds successes from before an outage. None: no fresh critical evidence.
    ``at`` and ``now`` are on one clock (the controller passes monotonic seconds)."""
    fresh = [r for r in results if r is not None and r.critical and now - r.at <= fresh_within]
    probes = [r for r in fresh if r.probe != "organic"]
    use = probes or fresh
    if not use:
        return None, "no fresh evidence"
    detail = "; ".join(f"{r.probe}: {'ok' if r.ok else 'FAIL'} {r.detail}"[:160] for r in use)
    return any(r.ok for r in use), detail


def remote(rows: Iterable[dict], now: float) -> list[ProbeResult]:
    """Other nodes' results (spool ``cluster_probes`` rows: node, probe, ok, latency, detail,
    age in s on the database clock) as critical ProbeResults named ``node/probe``, stamped on
    this node's monotonic clock (``now`` - age), for ``aggregate``."""
    return [ProbeResult(f"{r['node']}/{r['probe']}", bool(r["ok"]), now - max(r["age"], 0.0),
                        r["latency"], r["detail"], True) for r in rows]


class RemoteEvidence:
    """Other nodes' results of a shared spool, read at most every ``every`` s (the leader steps
    every 0.05 s while replaying); ``fresh`` s (database clock) is how long a result counts."""

    def __init__(self, spool, fresh: float, every: float):
        self.spool, self.fresh, self.every = spool, fresh, every
        self._rows: list[dict] = []
        self._at: float | None = None

    async def get(self, now: float) -> list[ProbeResult]:
        """The results at ``now`` (monotonic s); SpoolError if the database cannot be read."""
        if self._at is None or now - self._at >= self.every or now < self._at:
            self._rows = await self.spool.cluster_probes(self.fresh)
            self._at = now
        return remote([{**r, "age": r["age"] + now - self._at} for r in self._rows], now)


__all__ = ["RemoteEvidence", "aggregate", "remote"]
