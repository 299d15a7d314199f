"""Critical probe evidence aggregated into one verdict for the continuity engine (pure; used by
gateway.continuity.controller, which re-exports ``aggregate``)."""
from __future__ import annotations

from collections.abc import Iterable


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


__all__ = ["aggregate"]
