"""Runs the continuity engine in the gateway: gathers evidence, applies decisions and admin
commands, persists and audits every transition, alerts, holds mail, and drives the replay.

Every ``tick`` seconds: apply admin commands queued in the spool (by `mailgate continuity ...`
or the admin API), aggregate fresh probe evidence into Health, ask engine.decide(), and act on
the transition: entering continuity sets the queue manager to hold downstream mail (and makes
deferred mail due so it is held at once); recovering releases held mail in arrival order,
throttled, halving the rate when the downstream answers 4xx (Exchange back-pressure) and growing
it again when it takes mail; replay done → normal. State survives restarts (continuity_state).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict
from typing import Callable, Iterable

from gateway.continuity import engine
from gateway.continuity.engine import EngineState, Health, HealthTracker, Mode, Settings, Transition
from gateway.retry import Backoff, FaultLog, retry
from spool import SpoolError
from spool import continuity as store
from spool import mailbox

#: Seconds between steps while replaying: releases follow deliveries closely instead of waiting
#: for the next decision tick (else the replay could not exceed replay_concurrency / tick msg/s).
REPLAY_STEP = 0.05


def aggregate(results: Iterable, now: float, fresh_within: float) -> tuple[bool | None, str]:
    """Critical evidence → (ok, detail). ``results`` are probe results with ``probe``, ``ok``,
    ``at``, ``critical``, ``detail``. Synthetic probes decide when they have fresh results: ok if
    any passed (some path into Exchange works), False if all failed. The organic signal (real
    deliveries, named "organic") decides only when no probe has a fresh result, because its
    window still holds successes from before an outage. None: no fresh critical evidence."""
    fresh = [r for r in results if r is not None and r.critical and now - r.at <= fresh_within]
    probes = [r for r in fresh if r.probe != "organic"]
    use = probes or fresh
    if not use:
        return None, "no fresh evidence"
    detail = "; ".join(f"{r.probe}: {'ok' if r.ok else 'FAIL'} {r.detail}"[:160] for r in use)
    return any(r.ok for r in use), detail


class ContinuityController:
    def __init__(self, cfg, spool, qmgr, evidence: Callable[[], Iterable], alerter, log,
                 clock: Callable[[], float] = time.time):
        c = cfg.continuity
        self.cfg, self.spool, self.qmgr, self.evidence = c, spool, qmgr, evidence
        self.alerter, self.log, self.clock = alerter, log, clock
        self.settings = Settings(automatic=c.mode == "automatic", enter_after=c.enter_after,
                                 hold_down=c.hold_down)
        self.state = EngineState(since=clock())
        self.tracker = HealthTracker()
        self.health: Health | None = None
        self.replay = {"released": 0, "rate": c.replay_rate, "started_at": None, "remaining": 0}
        self._last_deferred = 0
        self._tokens, self._last_release, self._last_adapt = 1.0, 0.0, 0.0
        self._next_reminder = 0.0
        self._next_purge = 0.0

    async def start(self) -> None:
        """Load the persisted state (a restart during an event stays in the event). A failing
        spool is retried (logged once per distinct error, backing off) until it answers."""
        row = await retry(lambda: self.spool.read(store.load_state),
                          FaultLog(self.log, "continuity_start_failed"), retry_on=(SpoolError,))
        if row:
            self.state = EngineState(Mode(row["mode"]), row["since"], row["origin"], row["reason"],
                                     bool(row["awaiting_confirm"]), row["event_id"])
        self._apply_mode()
        self.log.info("continuity_state", mode=self.state.mode.value, origin=self.state.origin,
                      event_id=self.state.event_id)

    async def run(self) -> None:
        """Step until cancelled. A failing step (the spool cannot write: disk full) is logged once
        per distinct error and retried after a backoff (one tick, doubling to 10 s)."""
        faults = FaultLog(self.log, "continuity_step_failed")
        backoff = Backoff(self.cfg.tick, max(self.cfg.tick, 10.0))
        while True:
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                faults.failed(e)
                await asyncio.sleep(backoff.next())
                continue
            faults.recovered()
            backoff.reset()
            recovering = self.state.mode is Mode.RECOVERING
            await asyncio.sleep(min(self.cfg.tick, REPLAY_STEP) if recovering else self.cfg.tick)

    async def step(self) -> None:
        now = self.clock()
        for cmd in await self.spool.read(store.pending_commands):
            try:
                t = engine.admin(self.state, cmd["command"], now, cmd["actor"] or "admin", cmd["reason"])
                await self._commit(t)
                result = f"ok: {t.new.mode.value}"
            except engine.CommandRefused as e:
                result = f"refused: {e}"
            await self.spool.write(store.command_done, cmd["id"], result)
        ok, detail = aggregate(self.evidence(), now, self.cfg.fresh_within)
        self.health = self.tracker.observe(ok, now, detail)
        t = engine.decide(self.state, self.health, self.settings)
        if t is not None:
            await self._commit(t)
        if self.state.mode is Mode.RECOVERING:
            await self._replay_step(now)
        if now >= self._next_purge:
            self._next_purge = now + 3600.0
            n = await self.spool.write(mailbox.purge, now - self.cfg.mailbox_retention)
            if n:
                self.log.info("mailbox_purged", entries=n)
        if self.state.mode is Mode.CONTINUITY and now >= self._next_reminder:
            self._next_reminder = now + self.cfg.alert_repeat
            await self.alerter.send(f"reminder-{now // self.cfg.alert_repeat}",
                                    f"continuity event {self.state.event_id} still running",
                                    self._describe())

    async def command(self, command: str, reason: str, actor: str) -> Transition:
        """Apply an admin command now (admin API). Raises engine.CommandRefused."""
        t = engine.admin(self.state, command, self.clock(), actor, reason)
        await self._commit(t)
        return t

    async def _commit(self, t: Transition) -> None:
        n = t.new
        await self.spool.write(lambda c: store.save_transition(
            c, mode=n.mode.value, since=n.since, origin=n.origin, reason=n.reason,
            awaiting_confirm=n.awaiting_confirm, event_id=n.event_id, src=t.old.mode.value, actor=t.actor))
        self.state = n
        self.log.warning("continuity_transition", src=t.old.mode.value, dst=n.mode.value, actor=t.actor,
                         reason=t.reason, event_id=n.event_id, awaiting_confirm=n.awaiting_confirm)
        entering = n.mode is Mode.CONTINUITY and t.old.mode is not Mode.CONTINUITY
        self._apply_mode()
        if entering:
            self._next_reminder = self.clock() + self.cfg.alert_repeat
            await self.spool.write(store.hold_due_now)
            self.qmgr.notify()
        if n.mode is Mode.RECOVERING:
            self.replay.update(released=0, rate=self.cfg.replay_rate, started_at=self.clock())
            self._last_deferred = self.qmgr.stats["deferred"]
            self._tokens, self._last_release = 1.0, self.clock()
            self._last_adapt = self._last_release
        title = f"{t.old.mode.value} -> {n.mode.value}"
        if n.awaiting_confirm:
            title = "downstream down: confirm a continuity event"
            body = f"{t.reason}\n\nTo start the continuity event: mailgate continuity confirm"
        else:
            body = f"{t.reason}\nby: {t.actor}\n\n{self._describe()}"
        key = f"transition-{t.old.mode.value}-{n.mode.value}"
        if not {t.old.mode, n.mode} <= {Mode.NORMAL, Mode.DEGRADED} or n.awaiting_confirm:
            key += f"-{n.since}"     # normal <-> degraded (flapping): one alert per min_interval
        await self.alerter.send(key, title, body)

    def _apply_mode(self) -> None:
        self.qmgr.hold_downstream = engine.holds_mail(self.state)

    async def _replay_step(self, now: float) -> None:
        held = await self.spool.read(store.count_held)
        in_flight = await self.spool.read(store.replay_in_flight)
        rate = self.replay["rate"]
        if now - self._last_adapt >= self.cfg.tick:    # adapt the rate once per tick
            deferred = self.qmgr.stats["deferred"]
            if deferred > self._last_deferred:   # the downstream pushes back (4xx): slow down
                rate = max(1.0, rate / 2)
            else:
                rate = min(self.cfg.replay_rate, rate * 1.25 + 1)
            self._last_deferred, self._last_adapt = deferred, now
            self.replay["rate"] = rate
        # token bucket: ``rate`` releases per second, at most one tick's worth saved up
        self._tokens = min(self._tokens + rate * max(now - self._last_release, 0.0),
                           max(rate * self.cfg.tick, 1.0))
        self._last_release = now
        budget = min(int(self._tokens), self.cfg.replay_concurrency - in_flight)
        released = 0
        if held and budget > 0:
            ids = await self.spool.write(store.release_held, budget)
            released = len(ids)
            self._tokens -= released
            self.replay["released"] += released
            self.qmgr.notify()
            held -= released
        self.replay["remaining"] = held
        if held == 0 and in_flight == 0 and released == 0:   # in_flight was counted before this release
            t = engine.replay_finished(self.state, now)
            if t is not None:
                await self._commit(t)

    def status(self) -> dict:
        """Mode, event, evidence and replay progress, for the CLI, the admin API and metrics."""
        s = asdict(self.state)
        s["mode"] = self.state.mode.value
        s["health"] = asdict(self.health) if self.health else None
        r = dict(self.replay)
        if r["started_at"] and self.state.mode is Mode.RECOVERING:
            elapsed = max(self.clock() - r["started_at"], 1e-6)
            r["done_rate"] = r["released"] / elapsed
            r["eta_seconds"] = r["remaining"] / r["done_rate"] if r["done_rate"] else None
        s["replay"] = r
        return s

    def _describe(self) -> str:
        h = self.health
        return (f"mode: {self.state.mode.value} (since {time.ctime(self.state.since)}, {self.state.origin})\n"
                f"event: {self.state.event_id}\nevidence: {h.detail if h else 'none'}")
