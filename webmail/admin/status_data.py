"""What the status page (and /admin/status.json) shows, gathered in one call.

``gather(ctx)`` returns a dict (JSON-ready; times are unix seconds, durations seconds, rates
messages per second)::

    {"continuity": None | {"mode", "since", "origin", "reason", "awaiting_confirm", "event_id",
                           "who", "health"},
     "held": int,                              # messages held for the downstream (continuity)
     "replay": None | {"done", "deferred", "in_flight", "remaining", "rate", "eta_seconds",
                       "percent"},             # only while recovering
     "queue": {state: count},                  # every queue state, zeros included
     "probes": [{"probe", "ok", "at", "latency", "detail", "critical"}],
     "domains": [accepted domain, ...]}

``who`` is the actor of the newest continuity audit record (the engine, or ``admin:NAME``).
Raises spool.SpoolError when the spool cannot be read.
"""
from __future__ import annotations

from dataclasses import asdict

from spool import continuity as store


async def gather(ctx) -> dict:
    controller = ctx.controller
    cont = None
    replay = None
    if controller is not None:
        s = controller.status()
        last = await ctx.spool.continuity_audit(1)
        cont = {k: s.get(k) for k in ("mode", "since", "origin", "reason", "awaiting_confirm",
                                      "event_id", "health")}
        cont["who"] = last[0]["actor"] if last else ""
        if s["mode"] == "recovering":
            rid = store.replay_id(s["event_id"], s["since"])
            replay = await ctx.spool.replay_progress(rid, s["since"])
            total = replay["done"] + replay["deferred"] + replay["in_flight"] + replay["remaining"]
            replay["percent"] = round(100.0 * replay["done"] / total, 1) if total else 100.0
    held = await ctx.spool.count_held()
    queue = await ctx.spool.counts()
    probes = []
    if ctx.runner is not None:
        probes = [asdict(r) for _, r in sorted(ctx.runner.latest().items())]
    return {"continuity": cont, "held": held, "replay": replay, "queue": queue, "probes": probes,
            "domains": list(ctx.cfg.relay.accepted_domains)}


def duration(seconds: float | None) -> str:
    """``seconds`` as "1 h 5 min", "4 min 10 s", "12 s"; "" for None."""
    if seconds is None:
        return ""
    s = int(max(seconds, 0))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60} min"
    if s >= 60:
        return f"{s // 60} min {s % 60} s"
    return f"{s} s"
