"""Runs the continuity engine in the gateway: gathers evidence, applies decisions and admin
commands, persists and audits every transition, alerts, holds mail, and drives the replay.

Every ``tick`` seconds: apply admin commands queued in the spool (by `mailgate continuity ...`
or the admin API), aggregate fresh probe evidence into Health, ask engine.decide(), and act on
the transition: entering continuity sets the queue manager to hold downstream mail (and makes
deferred mail due so it is held at once); recovering releases held mail in arrival order,
throttled, halving the rate when the downstream answers 4xx (Exchange back-pressure) and growing
it again when it takes mail; replay done → normal. State survives restarts (continuity_state).

One owner of the state: every read-modify-write of the engine state and its spool write runs
under one asyncio.Lock (a whole step, or one admin command). Admin commands, from the CLI or the
API, all go through the spool's command table and are applied in the order they were queued;
each gets exactly one audit record in the same transaction as its effect (applied, refused, or
expired when older than ``command_ttl`` seconds on pick-up).

On a shared spool (PostgreSQL, ``spool.shared``) one node leads (gateway.continuity.leadership:
the "continuity" lease, its epoch the fencing token): only the leader applies admin commands,
decides, writes transitions and releases held mail, each write fenced with its epoch; LeaseLost
makes it step down at once. Every other node re-reads the shared state every tick and applies
its mode (holds downstream mail or not, delivers released mail). Drills run there too: the
leader applies drill-start / drill-end and writes every drill change fenced with its epoch (a
refused one is counted in the spool's ``fenced_refused`` and makes it step down; the command
stays pending for whoever leads next); every node re-reads the running drill whenever it re-reads
the shared state (a follower: every tick) and holds its recipients' mail as it says.

Clocks: durations and deadlines (hysteresis, probe freshness, the replay's token bucket,
reminders) use ``monotonic``; ``clock`` (wall, unix seconds) stamps what is persisted or
shown (``since``, audit records, command ages across processes).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, replace
from typing import Awaitable, Callable, Iterable

from gateway.continuity import engine
from gateway.continuity.drill import DrillKeeper
from gateway.continuity.engine import EngineState, Health, HealthTracker, Mode, Settings, Transition
from gateway.continuity.evidence import RemoteEvidence, aggregate
from gateway.continuity.leadership import Leadership
from gateway.retry import Backoff, FaultLog, retry
from spool import SpoolError
from spool import continuity as store
from spool.states import LeaseLost

__all__ = ["REPLAY_STEP", "ContinuityController", "aggregate"]

#: Seconds between steps while replaying: releases follow deliveries closely instead of waiting
#: for the next decision tick (else the replay could not exceed replay_concurrency / tick msg/s).
REPLAY_STEP = 0.05


class ContinuityController:
    def __init__(self, cfg, spool, qmgr, evidence: Callable[[], Iterable], alerter, log,
                 clock: Callable[[], float] = time.time,
                 monotonic: Callable[[], float] = time.monotonic):
        c = cfg.continuity
        self.cfg, self.spool, self.qmgr, self.evidence = c, spool, qmgr, evidence
        self.alerter, self.log, self.clock, self.monotonic = alerter, log, clock, monotonic
        self.settings = Settings(automatic=c.mode == "automatic", enter_after=c.enter_after,
                                 hold_down=c.hold_down)
        self.state = EngineState(since=clock())
        self.tracker = HealthTracker()
        self.health: Health | None = None
        self.replay = {"released": 0, "rate": c.replay_rate, "started_at": None, "remaining": 0}
        self._replay_t0 = 0.0                 # monotonic start of this replay (for its rate)
        self._last_deferred = 0
        self._tokens, self._last_release, self._last_adapt = 1.0, 0.0, 0.0
        self._next_reminder = 0.0
        self._seen: dict[str, tuple[object, float]] = {}   # probe -> (its latest result, first seen)
        self._lock = asyncio.Lock()           # the one owner of self.state and its spool record
        self.shared = bool(getattr(spool, "shared", False))
        #: other nodes' probes (a dead node's last result counts only 3 probe intervals)
        self.remote = RemoteEvidence(spool, min(c.fresh_within, 3 * cfg.probes.smtp_interval
                                                + cfg.probes.smtp_timeout), min(c.tick, 1.0))
        #: the leader lease on a shared spool (None: this node owns its spool and always leads)
        self.lead = (Leadership(spool, log, monotonic, step=c.tick) if self.shared
                     else None)
        #: `mailgate drill` (on a shared spool: the leader writes, every node follows)
        self.drill = DrillKeeper(cfg, spool, qmgr, log, clock=clock, epoch=lambda: self.epoch)
        #: async () -> URL or None: a signed, single-use link to the admin console's confirm page,
        #: put in every alert that asks for a decision (set by gateway.app when the webmail runs)
        self.decision_link: Callable[[], Awaitable[str | None]] | None = None

    async def start(self) -> None:
        """Load the persisted state (a restart during an event stays in the event). A failing
        spool is retried (logged once per distinct error, backing off) until it answers."""
        row = await retry(self.spool.continuity_state,
                          FaultLog(self.log, "continuity_start_failed"), retry_on=(SpoolError,))
        self._adopt(row)
        await retry(self.drill.load, FaultLog(self.log, "continuity_start_failed"),
                    retry_on=(SpoolError,))
        self.log.info("continuity_state", mode=self.state.mode.value, origin=self.state.origin,
                      event_id=self.state.event_id)

    async def close(self) -> None:
        """Clean shutdown: a leader on a shared spool releases its lease (errors are logged)."""
        if self.lead is not None:
            try:
                await self.lead.release()
            except SpoolError as e:
                self.log.warning("continuity_lease_release_failed", error=str(e))

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
                if self.lead is not None and isinstance(e, SpoolError):
                    self.lead.lose("spool_error", error=str(e)[:200])   # DAC: re-read first
                faults.failed(e)
                await asyncio.sleep(backoff.next())
                continue
            faults.recovered()
            backoff.reset()
            recovering = self.state.mode is Mode.RECOVERING
            await asyncio.sleep(min(self.cfg.tick, REPLAY_STEP) if recovering else self.cfg.tick)

    async def step(self) -> None:
        """One decision: admin commands, evidence, the engine, the replay, reminders (the
        continuity mailboxes' retention purge is gateway.continuity.journal's)."""
        async with self._lock:
            try:
                await self._step()
            except LeaseLost as e:
                self.lead.lose("lease_lost", error=str(e))

    @property
    def epoch(self) -> int | None:
        """The fencing token of this node's writes (None on a spool of its own)."""
        return None if self.lead is None else self.lead.epoch

    async def _authority(self, now: float) -> bool:
        """Shared spool: renew or take the lease, re-read the state when this node just gained
        (or lost) authority, or every tick as a follower; True if it leads (DAC rule)."""
        await self.lead.sync(now)
        if self.lead.needs_read or self.lead.epoch is None:
            self._adopt(await self.spool.continuity_state())   # a fresh transaction
            await self.drill.follow()                          # the running drill, as stored
            if self.lead.epoch is not None:
                self.lead.read_done()
        return self.lead.leading

    def _adopt(self, row: dict | None) -> None:
        """Take the persisted (shared) state as this node's; a replay adopted mid-way goes on
        from where the queue says it is."""
        if row:
            new = EngineState(Mode(row["mode"]), row["since"], row["origin"], row["reason"],
                              bool(row["awaiting_confirm"]), row["event_id"])
            if new != self.state:
                mono = self.monotonic()
                if new.mode is Mode.RECOVERING and (self.state.mode, self.state.since) != (new.mode, new.since):
                    self.replay.update(released=0, rate=self.cfg.replay_rate, started_at=new.since)
                    self._replay_t0, self._tokens, self._last_release = mono, 1.0, mono
                    self._last_adapt, self._last_deferred = mono, self.qmgr.stats["deferred"]
                if new.mode is Mode.CONTINUITY and self.state.mode is not Mode.CONTINUITY:
                    self._next_reminder = mono + self.cfg.alert_repeat
                if self.lead is not None:
                    self.log.info("continuity_state_adopted", mode=new.mode.value,
                                  event_id=new.event_id, leader=row.get("node"), epoch=row.get("epoch"))
                self.state = new
        self._apply_mode()

    async def _step(self) -> None:
        now, wall = self.monotonic(), self.clock()
        if self.lead is not None and not await self._authority(now):
            ok, detail = aggregate(self._stamped(self.evidence(), now), now, self.cfg.fresh_within)
            self.health = self.tracker.observe(ok, now, detail, wall=wall)   # warm, to take over
            return
        await self._apply_commands()
        seen = self._stamped(self.evidence(), now)
        if self.lead is not None:      # every node's probes: Exchange is down only if all fail
            seen += await self.remote.get(now)
        ok, detail = aggregate(seen, now, self.cfg.fresh_within)
        self.health = self.tracker.observe(ok, now, detail, wall=wall)
        t = engine.decide(self.state, self.health, self.settings)
        if t is not None:
            await self._commit(t)
        await self.drill.tick(self.state)
        if self.state.mode is Mode.RECOVERING:
            await self._replay_step(now)
        if self.state.mode is Mode.CONTINUITY and now >= self._next_reminder:
            self._next_reminder = now + self.cfg.alert_repeat
            await self.alerter.send(f"reminder-{self.state.event_id}-{now // self.cfg.alert_repeat}",
                                    f"continuity event {self.state.event_id} still running",
                                    self._describe())

    async def command(self, command: str, reason: str, actor: str) -> Transition:
        """Apply an admin command (admin API) and return its transition: queued in the spool's
        command table behind any command the CLI queued earlier, applied in that order under the
        state lock, audited once. Raises engine.CommandRefused (refused in the current state)."""
        async with self._lock:
            if self.lead is not None and not self.lead.leading:
                raise engine.CommandRefused("this node is not the continuity leader: send the"
                                            " command to the leader (mailgate cluster status)")
            cid = await self.spool.queue_command(command, reason, actor, self.clock())
            try:
                outcome = (await self._apply_commands())[cid]
            except LeaseLost as e:
                self.lead.lose("lease_lost", error=str(e))
                raise engine.CommandRefused("this node lost the continuity leadership; the new"
                                            " leader applies the queued command") from e
        if isinstance(outcome, engine.CommandRefused):
            raise outcome
        return outcome

    async def _apply_commands(self) -> dict[int, Transition | engine.CommandRefused]:
        """Apply every pending command in queue order (the caller holds the lock). A command
        older than command_ttl is expired: audited, not applied. ``drill-start`` / ``drill-end``
        go to the DrillKeeper (gateway.continuity.drill): ok → its result string."""
        out: dict[int, Transition | engine.CommandRefused] = {}
        ttl = self.cfg.command_ttl
        for cmd in await self.spool.pending_commands():
            wall, cid, actor = self.clock(), cmd["id"], cmd["actor"] or "admin"
            age = cmd["age"] if "age" in cmd else wall - cmd["at"]   # PostgreSQL: its clock
            if abs(age) > ttl:
                result = f"expired: the gateway did not pick it up within {ttl:g} s"
                await self.spool.audit_command(
                    cid, mode=self.state.mode.value, event_id=self.state.event_id, actor=actor,
                    reason=f"{cmd['command']} expired: queued {age:.0f} s ago, command_ttl {ttl:g} s",
                    result=result, at=wall, epoch=self.epoch)
                self.log.warning("continuity_command_expired", command=cmd["command"], command_id=cid,
                                 actor=actor, age=round(age, 1), command_ttl=ttl)
                out[cid] = engine.CommandRefused(result)
                continue
            if cmd["command"].startswith("drill-"):     # gateway.continuity.drill: audited there
                ok, result = await self.drill.apply(cmd, self.state)
                out[cid] = result if ok else engine.CommandRefused(result)
                continue
            try:
                t = engine.admin(self.state, cmd["command"], wall, actor, cmd["reason"])
            except engine.CommandRefused as e:
                why = str(e)
                await self.spool.audit_command(
                    cid, mode=self.state.mode.value, event_id=self.state.event_id, actor=actor,
                    reason=f"{cmd['command']} refused: {why}", result=f"refused: {why}", at=wall,
                    epoch=self.epoch)
                self.log.info("continuity_command_refused", command=cmd["command"], command_id=cid,
                              actor=actor, error=str(e))
                out[cid] = e
                continue
            await self._commit(t, command_id=cid)
            out[cid] = t
        return out

    def _stamped(self, results: Iterable, now: float) -> list:
        """Results re-stamped with the monotonic time they were first seen, so that freshness
        is a monotonic duration (a result's own ``at`` is the wall clock)."""
        out = []
        for r in results:
            if r is None:
                continue
            seen = self._seen.get(r.probe)
            if seen is None or seen[0] is not r:
                seen = self._seen[r.probe] = (r, now)
            out.append(replace(r, at=seen[1]))
        return out

    async def _commit(self, t: Transition, command_id: int | None = None) -> None:
        n = t.new
        await self.spool.save_transition(
            mode=n.mode.value, since=n.since, origin=n.origin, reason=n.reason,
            awaiting_confirm=n.awaiting_confirm, event_id=n.event_id, src=t.old.mode.value,
            actor=t.actor, command_id=command_id, result=f"ok: {n.mode.value}", epoch=self.epoch)
        self.state = n
        self.log.warning("continuity_transition", src=t.old.mode.value, dst=n.mode.value, actor=t.actor,
                         reason=t.reason, event_id=n.event_id, awaiting_confirm=n.awaiting_confirm,
                         command_id=command_id)
        entering = n.mode is Mode.CONTINUITY and t.old.mode is not Mode.CONTINUITY
        self._apply_mode()
        mono = self.monotonic()
        if entering:
            await self.drill.on_event(n)          # a real event wins over a drill
            self._next_reminder = mono + self.cfg.alert_repeat
            await self.spool.hold_due_now(epoch=self.epoch)
            self.qmgr.notify()
        if n.mode is Mode.RECOVERING:
            self.replay.update(released=0, rate=self.cfg.replay_rate, started_at=n.since)
            self._replay_t0 = mono
            self._last_deferred = self.qmgr.stats["deferred"]
            self._tokens, self._last_release = 1.0, mono
            self._last_adapt = self._last_release
        title = f"{t.old.mode.value} -> {n.mode.value}"
        if n.awaiting_confirm:
            title = "downstream down: confirm a continuity event"
            body = f"{t.reason}\n\nTo start the continuity event: mailgate continuity confirm"
            link = await self._decision_link()
            if link:
                body += f"\nor open (once, login required): {link}"
        else:
            body = f"{t.reason}\nby: {t.actor}\n\n{self._describe()}"
        key = f"transition-{t.old.mode.value}-{n.mode.value}"
        if not {t.old.mode, n.mode} <= {Mode.NORMAL, Mode.DEGRADED} or n.awaiting_confirm:
            key += f"-{n.since}"     # normal <-> degraded (flapping): one alert per min_interval
        await self.alerter.send(key, title, body)

    async def _decision_link(self) -> str | None:
        """The confirm link for an alert, or None (no webmail, or the spool refused the token:
        the alert still goes out, with the CLI command)."""
        if self.decision_link is None:
            return None
        try:
            return await self.decision_link()
        except Exception as e:
            self.log.error("alert_link_failed", error=str(e))
            return None

    def _apply_mode(self) -> None:
        self.qmgr.hold_downstream = engine.holds_mail(self.state)

    async def _replay_step(self, now: float) -> None:
        """One step of the replay at ``now`` (monotonic seconds): release what the token bucket
        and replay_concurrency allow; only this replay's unsettled releases count as in flight."""
        replay_id = store.replay_id(self.state.event_id, self.state.since)
        held = await self.spool.count_held()
        in_flight = await self.spool.replay_in_flight(replay_id)
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
            ids = await self.spool.release_held(budget, replay_id, epoch=self.epoch)
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
        s["health"] = self._health_shown()
        r = dict(self.replay)
        if r["started_at"] and self.state.mode is Mode.RECOVERING:
            elapsed = max(self.monotonic() - self._replay_t0, 1e-6)
            r["done_rate"] = r["released"] / elapsed
            r["eta_seconds"] = r["remaining"] / r["done_rate"] if r["done_rate"] else None
        s["replay"] = r
        if self.lead is not None:
            s["leader"] = {"leading": self.lead.leading, "epoch": self.lead.epoch,
                           "stepdowns": self.lead.stepdowns, "last_reason": self.lead.last_reason,
                           "fenced_refused": getattr(self.spool, "fenced_refused", 0)}
        d = self.drill.current
        s["drill"] = None if d is None else {"id": d["id"], "recipients": d["recipients"],
                                             "started_at": d["started_at"]}
        return s

    def _health_shown(self) -> dict | None:
        """The evidence with wall-clock times (unix seconds) for people: the runs are kept on
        the monotonic clock and shifted to the wall clock of the last observation."""
        h = self.health
        if h is None:
            return None
        to_wall = h.at - h.now
        return {"now": h.at, "detail": h.detail,
                "failing_since": None if h.failing_since is None else h.failing_since + to_wall,
                "healthy_since": None if h.healthy_since is None else h.healthy_since + to_wall}

    def _describe(self) -> str:
        h = self.health
        return (f"mode: {self.state.mode.value} (since {time.ctime(self.state.since)}, {self.state.origin})\n"
                f"event: {self.state.event_id}\nevidence: {h.detail if h else 'none'}")
