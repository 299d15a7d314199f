"""Continuity decisions as pure functions over probe evidence (no I/O, no clock of its own).

One explicit state machine::

    normal --(critical failure seen)--> degraded --(failure lasted enter_after s; automatic mode,
       ^                                   |        or an admin confirmed)--> continuity
       |                                   \\--(healthy again)--> normal           |
       |                                                                           | healthy for hold_down s
       \\------(replay finished)------ recovering <--------------------------------/ (automatic events),
                                          |  \\--(failure lasted enter_after s)--> continuity   or admin stop
    admin overrides always win: start (with a reason), stop, maintenance start/stop, confirm.

Hysteresis: entering needs failure to *persist* for ``enter_after`` seconds (any success restarts
the count), leaving needs success to persist for ``hold_down`` seconds; so a downstream failing
one probe in three, or gone for less than ``enter_after``, never starts an event, and a recovery
shorter than ``hold_down`` never ends one. The way back from recovering to continuity needs the
same ``enter_after`` of continuous failure as normal -> continuity: one failed probe during a
replay changes nothing. Events started by an admin (or maintenance) end only by
an admin. In alert-only mode (``automatic=False``) the engine stops at degraded with
``awaiting_confirm`` set and the admin confirms.

Clocks: ``Health.now`` and the runs in HealthTracker are monotonic seconds (durations: an NTP step
neither starts nor delays an event); ``Health.wall`` is the wall clock (unix seconds) stamped on
``EngineState.since`` and the event ID, which are persisted and shown.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace


class Mode(str, enum.Enum):
    NORMAL = "normal"
    DEGRADED = "degraded"
    CONTINUITY = "continuity"
    RECOVERING = "recovering"


@dataclass(frozen=True)
class Settings:
    automatic: bool = True        # False: alert-only, an admin confirms
    enter_after: float = 40.0     # seconds of continuous critical failure before an event
    hold_down: float = 300.0      # seconds of continuous success before an automatic event ends


@dataclass(frozen=True)
class Health:
    """Evidence at ``now`` (monotonic seconds): when the current run of failure (or of success)
    began, on the same clock; both None while nothing is known yet. ``wall`` is the wall-clock
    time (unix seconds) for ``since`` stamps; None: ``now`` is used (tests on one timeline)."""

    now: float
    failing_since: float | None
    healthy_since: float | None
    detail: str = ""
    wall: float | None = None

    @property
    def at(self) -> float:
        """Wall-clock seconds to stamp a transition with."""
        return self.now if self.wall is None else self.wall


@dataclass(frozen=True)
class EngineState:
    mode: Mode = Mode.NORMAL
    since: float = 0.0            # when this mode was entered (unix seconds, wall clock)
    origin: str = ""              # for continuity/recovering: "auto" | "admin" | "maintenance"
    reason: str = ""
    awaiting_confirm: bool = False
    event_id: str = ""            # set when an event starts, kept until normal


@dataclass(frozen=True)
class Transition:
    old: EngineState
    new: EngineState
    actor: str                    # "engine" or the admin's name
    reason: str


class CommandRefused(ValueError):
    """An admin command that makes no sense in the current state (message says why)."""


def _to(old: EngineState, mode: Mode, now: float, actor: str, reason: str, **kw) -> Transition:
    new = replace(old, mode=mode, since=now, reason=reason, awaiting_confirm=False, **kw)
    if mode is Mode.NORMAL:
        new = replace(new, origin="", event_id="")
    return Transition(old, new, actor, reason)


def decide(state: EngineState, health: Health, s: Settings) -> Transition | None:
    """The transition the evidence calls for, or None. Pure. Durations are taken on
    ``health.now``; a transition is stamped with ``health.at`` (wall clock)."""
    now, failing, healthy = health.now, health.failing_since, health.healthy_since
    at = health.at
    m = state.mode
    if m is Mode.NORMAL:
        if failing is not None:
            return _to(state, Mode.DEGRADED, at, "engine", f"downstream failing: {health.detail}")
    elif m is Mode.DEGRADED:
        if failing is None:
            return _to(state, Mode.NORMAL, at, "engine", "downstream healthy again before the threshold")
        if now - failing >= s.enter_after:
            why = f"downstream failing for {now - failing:.0f} s: {health.detail}"
            if s.automatic:
                return _to(state, Mode.CONTINUITY, at, "engine", why, origin="auto",
                           event_id=_event_id(at))
            if not state.awaiting_confirm:
                new = replace(state, awaiting_confirm=True, reason=why)
                return Transition(state, new, "engine", f"{why}; awaiting admin confirmation")
    elif m is Mode.CONTINUITY:
        if state.origin == "auto" and healthy is not None and now - healthy >= s.hold_down:
            return _to(state, Mode.RECOVERING, at, "engine",
                       f"downstream healthy for {now - healthy:.0f} s: replaying held mail")
    elif m is Mode.RECOVERING:
        if failing is not None and now - failing >= s.enter_after:
            return _to(state, Mode.CONTINUITY, at, "engine",
                       f"downstream failing again during replay for {now - failing:.0f} s: {health.detail}")
    return None


def admin(state: EngineState, command: str, now: float, actor: str, reason: str = "") -> Transition:
    """Apply an admin override: "start", "stop", "confirm", "maintenance-start",
    "maintenance-stop". Raises CommandRefused when it does not apply."""
    m = state.mode
    if command in ("start", "maintenance-start"):
        origin = "admin" if command == "start" else "maintenance"
        if m is Mode.CONTINUITY and state.origin == origin:
            raise CommandRefused(f"a continuity event ({origin}) is already running")
        if not reason:
            reason = "planned maintenance" if origin == "maintenance" else "started by admin"
        return _to(state, Mode.CONTINUITY, now, actor, reason, origin=origin,
                   event_id=state.event_id or _event_id(now))
    if command == "confirm":
        if not (m is Mode.DEGRADED and state.awaiting_confirm):
            raise CommandRefused("nothing awaits confirmation")
        return _to(state, Mode.CONTINUITY, now, actor, reason or f"confirmed: {state.reason}",
                   origin="admin", event_id=_event_id(now))
    if command in ("stop", "maintenance-stop"):
        if m is Mode.CONTINUITY:
            return _to(state, Mode.RECOVERING, now, actor, reason or "ended by admin: replaying held mail")
        if m is Mode.DEGRADED:
            return _to(state, Mode.NORMAL, now, actor, reason or "dismissed by admin")
        raise CommandRefused(f"no continuity event to stop (mode {m.value})")
    raise CommandRefused(f"unknown command {command!r}")


def replay_finished(state: EngineState, now: float) -> Transition | None:
    """RECOVERING with nothing left to replay → NORMAL."""
    if state.mode is Mode.RECOVERING:
        return _to(state, Mode.NORMAL, now, "engine", "replay finished")
    return None


def holds_mail(state: EngineState) -> bool:
    """During continuity, mail for the downstream goes to hold instead of delivery attempts."""
    return state.mode is Mode.CONTINUITY


def _event_id(now: float) -> str:
    import time as _t
    return "CE-" + _t.strftime("%Y%m%d-%H%M%S", _t.gmtime(now))


class HealthTracker:
    """Turns a stream of aggregate ok/failed observations into Health (runs of failure/success).
    ``observe(ok, now)`` with ok None (no fresh evidence) keeps the runs as they are. ``now`` is
    monotonic seconds; ``wall`` (unix seconds) is passed through to Health for ``since`` stamps."""

    def __init__(self):
        self.failing_since: float | None = None
        self.healthy_since: float | None = None

    def observe(self, ok: bool | None, now: float, detail: str = "", wall: float | None = None) -> Health:
        if ok is True:
            self.failing_since = None
            if self.healthy_since is None:
                self.healthy_since = now
        elif ok is False:
            self.healthy_since = None
            if self.failing_since is None:
                self.failing_since = now
        return Health(now, self.failing_since, self.healthy_since, detail, wall)
