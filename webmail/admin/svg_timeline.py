"""The geometry of the admin console's timeline: probe results per probe, continuity state
bands and audit marks laid out on one time axis, for the server-side SVG written by
webmail.admin.svg_render (no script; colours come from admin.css classes).

Time is cut into buckets aligned to multiples of the bucket width (unix seconds), so a result
falls in the same bucket whatever the moment the page is rendered: bucket ``i`` of a window is
``[start + i*bucket, start + (i+1)*bucket)``. Each probe has a lane with one *ok mark* per bucket
holding at least one successful result and one *fail mark* per bucket holding at least one
failed result (``count`` says how many), and a latency line (the bucket's worst latency). State
bands cover the window: the mode in force at its start, then a new band at each state change
whose destination differs from the current mode; when there are more than MAX_BANDS of them (a
flapping week), each bucket shows the most severe mode in force during it instead (SEVERITY) and
equal neighbours merge. Every audit record given (state changes and admin commands, even
refused ones; the views pass the newest AUDIT_MAX of the window) gets an audit mark.
"""
from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field

#: The ranges the console offers: (window seconds, bucket seconds). "1h" is for the admin who
#: just got an alert: the last minutes in 5-second buckets.
RANGES = {"1h": (3600.0, 5.0), "24h": (86400.0, 60.0), "7d": (7 * 86400.0, 600.0)}
LABELS = {"1h": "last hour", "24h": "last 24 hours", "7d": "last 7 days"}

MAX_BANDS = 600      # more state changes than this in a window: bands coalesce per bucket
AUDIT_MAX = 500      # audit entries marked and listed per window (the newest)
SEVERITY = {"normal": 0, "degraded": 1, "recovering": 2, "continuity": 3}

WIDTH, LEFT, PLOT = 1200.0, 120.0, 1064.0   # SVG user units: the plot spans [LEFT, LEFT+PLOT]
TOP, BAND_H, LANE_H, AXIS_H = 8.0, 18.0, 60.0, 26.0
MARK_H, MARK_GAP = 12.0, 2.0


@dataclass(frozen=True)
class Mark:
    x: float
    y: float
    w: float
    h: float
    count: int
    t0: float
    t1: float
    title: str


@dataclass
class Lane:
    probe: str
    y: float
    ok_marks: list[Mark] = field(default_factory=list)
    fail_marks: list[Mark] = field(default_factory=list)
    latency_points: str = ""
    ok: int = 0
    fail: int = 0
    latency_avg: float | None = None    # seconds
    latency_max: float | None = None    # seconds
    last_fail_detail: str = ""


@dataclass(frozen=True)
class Band:
    x: float
    w: float
    mode: str
    t0: float
    t1: float
    title: str


@dataclass(frozen=True)
class AuditMark:
    x: float
    row: dict
    kind: str        # 'change' (src != dst) or 'command' (a command that changed nothing)
    title: str


@dataclass
class Timeline:
    range_name: str
    start: float
    end: float
    bucket: float
    height: float
    lanes: list[Lane]
    bands: list[Band]
    audit_marks: list[AuditMark]
    ticks: list[tuple[float, str]]
    title: str
    desc: str
    width: float = WIDTH
    left: float = LEFT
    plot: float = PLOT
    band_y: float = TOP
    band_h: float = BAND_H
    plot_bottom: float = 0.0
    audit_total: int = 0      # audit records in the window (audit_marks may hold only the newest)
    coalesced: int = 0        # state changes, when bands show the worst mode per bucket; else 0


def window(range_name: str, now: float) -> tuple[float, float, float]:
    """(start, end, bucket) of the window ``range_name`` (a key of RANGES) ending at the bucket
    boundary at or after ``now``. Raises KeyError for an unknown range."""
    span, bucket = RANGES[range_name]
    end = math.ceil(now / bucket) * bucket
    return end - span, end, bucket


def _hm(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M")


def _span(seconds: float) -> str:
    return f"{seconds:g}-second" if seconds < 60 else f"{seconds / 60:g}-minute"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _clock(ts: float, bucket: float) -> str:
    fmt = "%H:%M:%S" if bucket < 60 else "%H:%M" if bucket < 600 else "%a %H:%M"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime(fmt) + " UTC"


def _x(t: float, start: float, end: float) -> float:
    return round(LEFT + (t - start) / (end - start) * PLOT, 2)


def build(range_name: str, start: float, end: float, bucket: float, probes: list[str],
          results: list[dict], audit: list[dict], mode_before: str | None,
          changes: list[dict] | None = None, audit_total: int | None = None) -> Timeline:
    """The Timeline of ``results`` (spool.console.probe_results_between rows) for the lanes of
    ``probes`` (sorted names; a probe of ``results`` missing from it is added), ``audit``
    (spool.console.continuity_audit_between rows, oldest first) and ``mode_before`` (the mode in
    force at ``start``, spool.console.mode_at; None: the engine never ran). ``changes``: every
    state change of the window (spool.console.mode_changes_between), when ``audit`` is only the
    newest of the window's records; ``audit_total``: how many records the window has."""
    n = round((end - start) / bucket)
    step = PLOT / n
    names = sorted(set(probes) | {r["probe"] for r in results})
    lanes = [Lane(p, TOP + BAND_H + 10 + i * LANE_H) for i, p in enumerate(names)]
    by_name = {lane.probe: lane for lane in lanes}
    grouped: dict[str, dict[int, list[dict]]] = {p: {} for p in names}
    for r in results:
        i = int((r["at"] - start) // bucket)
        if 0 <= i < n:
            grouped[r["probe"]].setdefault(i, []).append(r)
    for name, buckets in grouped.items():
        _fill_lane(by_name[name], buckets, start, bucket, step)
    plot_bottom = TOP + BAND_H + 10 + len(lanes) * LANE_H
    bands, coalesced = _bands(audit if changes is None else changes, mode_before, start, end, bucket)
    marks = [AuditMark(_x(a["at"], start, end), a, "change" if a["src"] != a["dst"] else "command",
                       _audit_title(a)) for a in audit if start <= a["at"] < end]
    ticks = _ticks(range_name, start, end)
    title = f"Probe results and continuity state, {LABELS[range_name]}"
    ok, fail = sum(lane.ok for lane in lanes), sum(lane.fail for lane in lanes)
    desc = (f"From {_hm(start)} to {_hm(end)} UTC in {_span(bucket)} buckets: "
            + ("; ".join(f"probe {lane.probe}: {lane.ok} ok, {lane.fail} failed" for lane in lanes)
               or "no probe results")
            + f" ({ok} ok, {fail} failed in all). {len(bands)} state band(s): "
            + (f"the most severe mode of each {_span(bucket)} bucket (state changed {coalesced} times)"
               if coalesced else ", ".join(b.mode for b in bands))
            + f". {len(marks)} audit entries, listed in the table below"
            + (f" (the newest of {audit_total})" if audit_total and audit_total > len(marks) else "") + ".")
    return Timeline(range_name, start, end, bucket, plot_bottom + AXIS_H, lanes, bands, marks,
                    ticks, title, desc, plot_bottom=plot_bottom,
                    audit_total=len(marks) if audit_total is None else audit_total, coalesced=coalesced)


def _fill_lane(lane: Lane, buckets: dict[int, list[dict]], start: float, bucket: float,
               step: float) -> None:
    w = round(max(step, 1.2), 2)
    lat_all = [r["latency"] for rows in buckets.values() for r in rows]
    top = max(lat_all, default=0.0) or 1e-3
    points = []
    for i in sorted(buckets):
        rows = buckets[i]
        t0, t1 = start + i * bucket, start + (i + 1) * bucket
        x = round(LEFT + i * step, 2)
        oks = [r for r in rows if r["ok"]]
        fails = [r for r in rows if not r["ok"]]
        worst = max(r["latency"] for r in rows)
        when = _clock(t0, bucket)
        if oks:
            lane.ok_marks.append(Mark(x, lane.y, w, MARK_H, len(oks), t0, t1,
                                      f"{when}: {len(oks)} ok, up to {_ms(max(r['latency'] for r in oks))}"))
        if fails:
            lane.last_fail_detail = fails[-1]["detail"]
            lane.fail_marks.append(Mark(x, lane.y + MARK_H + MARK_GAP, w, MARK_H, len(fails), t0, t1,
                                        f"{when}: {len(fails)} failed: {fails[-1]['detail'][:120]}"))
        lane.ok += len(oks)
        lane.fail += len(fails)
        base = lane.y + 2 * (MARK_H + MARK_GAP) + 26
        points.append(f"{x + w / 2:.2f},{base - worst / top * 24:.2f}")
    lane.latency_points = " ".join(points)
    if lat_all:
        lane.latency_avg = sum(lat_all) / len(lat_all)
        lane.latency_max = max(lat_all)


def _bands(changes: list[dict], mode_before: str | None, start: float, end: float,
           bucket: float) -> tuple[list[Band], int]:
    segments: list[list] = []     # [t0, mode]
    mode = mode_before
    if mode is None and changes:
        mode = changes[0]["src"]
    if mode is not None:
        segments.append([start, mode])
    for a in changes:
        if start <= a["at"] < end and a["dst"] != mode:
            mode = a["dst"]
            segments.append([a["at"], mode])
    spans = [(t0, segments[k + 1][0] if k + 1 < len(segments) else end, m)
             for k, (t0, m) in enumerate(segments)]
    coalesced = 0
    if len(spans) > MAX_BANDS:
        coalesced = len(spans) - 1
        spans = _worst_per_bucket(spans, start, end, bucket)
    out = []
    for t0, t1, m in spans:
        x0, x1 = _x(t0, start, end), _x(t1, start, end)
        out.append(Band(x0, round(max(x1 - x0, 0.5), 2), m, t0, t1,
                        f"{m} from {_hm(t0)} to {_hm(t1)} UTC" + (" (most severe mode of each bucket)"
                                                                 if coalesced else "")))
    return out, coalesced


def _worst_per_bucket(spans: list[tuple], start: float, end: float, bucket: float) -> list[tuple]:
    """Spans (t0, t1, mode) → one per bucket with the most severe mode in force during it,
    equal neighbours merged."""
    out: list[list] = []
    k = 0
    n = round((end - start) / bucket)
    for i in range(n):
        t0, t1 = start + i * bucket, start + (i + 1) * bucket
        while k < len(spans) and spans[k][1] <= t0:
            k += 1
        j, worst = k, None
        while j < len(spans) and spans[j][0] < t1:
            if worst is None or SEVERITY.get(spans[j][2], 9) > SEVERITY.get(worst, 9):
                worst = spans[j][2]
            j += 1
        if worst is None:
            continue
        if out and out[-1][2] == worst and out[-1][1] == t0:
            out[-1][1] = t1
        else:
            out.append([t0, t1, worst])
    return [tuple(s) for s in out]


def _audit_title(a: dict) -> str:
    what = f"{a['src']} -> {a['dst']}" if a["src"] != a["dst"] else f"{a['command'] or 'command'} ({a['dst']}, unchanged)"
    return f"{_hm(a['at'])} UTC: {what} by {a['actor']}: {a['reason'][:160]}"


def _ticks(range_name: str, start: float, end: float) -> list[tuple[float, str]]:
    every = {"1h": 600.0, "24h": 3 * 3600.0}.get(range_name, 86400.0)
    fmt = "%a %d %b" if range_name == "7d" else "%H:%M"
    t = math.ceil(start / every) * every
    out = []
    while t <= end:
        out.append((_x(t, start, end), dt.datetime.fromtimestamp(t, dt.UTC).strftime(fmt)))
        t += every
    return out


__all__ = ["AUDIT_MAX", "MAX_BANDS", "RANGES", "SEVERITY", "AuditMark", "Band", "Lane", "Mark", "Timeline", "build", "window"]
