"""The continuity drill in the running gateway: holds the mail of a few drill recipients only, as a
continuity event would, files it into their continuity mailboxes, and replays it when the drill
ends; everyone else's mail flows as usual (`mailgate drill`, gateway/cli_drill.py).

Owned by the ContinuityController and run under its lock: the CLI queues ``drill-start`` and
``drill-end`` in ``continuity_commands`` (reason = the drill's id, its ``drills`` row written with
the command), the controller hands them here in queue order, and each gets exactly one
``continuity_audit`` record (src = dst = the current mode, ``command_id``) plus a
``webmail_audit`` row (``drill_start`` / ``drill_end``), in the transaction of its effect.

Rules:
- a drill starts only in ``normal`` mode and only when no other drill runs (refused otherwise);
- while it runs, the queue manager holds the smarthost recipients whose mailbox key is a drill
  recipient (``qmgr.drill_rcpts``; hold_reason 'drill'); a message with other recipients too
  is split by the per-recipient ledger: the others are delivered at once, the drill's wait;
- a real event wins: entering ``continuity`` ends the drill at once and turns its held mail into
  continuity holds, replayed with the event's (``on_event``);
- a drill nobody ends stops by itself after ``continuity.drill_max_duration`` seconds, also
  after a restart (the deadline counts from the persisted ``started_at``);
- a drill hold left with no drill running (an attempt recorded just after its drill ended) is
  released at the next tick, or made a continuity hold during an event (``tick``).

On a shared spool (PostgreSQL) only the continuity leader calls ``apply``, ``on_event`` and
``tick``, and each of their writes runs fenced by its lease epoch (``epoch``): a write refused
under a lost lease raises LeaseLost (spool.states; counted in the spool's ``fenced_refused``),
nothing is written, ``current`` is left as it was and the controller steps down; the command
stays pending and is applied by whoever leads next, after it re-read the drill. Every node calls
``follow`` whenever it re-reads the shared state (a follower: every tick), so its queue manager
holds the running drill's recipients within one tick of the leader's write; mail a node delivers
in that tick is simply delivered, and a drill hold taken just after the end is a leftover the
leader's ``tick`` releases.
"""
from __future__ import annotations

import time

from gateway.continuity.engine import EngineState, Mode

#: Audit actor of what the gateway does by itself (a drill superseded or timed out).
ACTOR = "drill"


class DrillKeeper:
    """The running drill (at most one) and its effect on the queue manager."""

    def __init__(self, cfg, spool, qmgr, log, clock=time.time, epoch=lambda: None):
        self.max_duration = cfg.continuity.drill_max_duration
        self.spool, self.qmgr, self.log, self.clock = spool, qmgr, log, clock
        #: () -> the continuity lease's epoch (None on a spool of its own): drill writes are
        #: the leader's, fenced by it like every other continuity write
        self.epoch = epoch
        self.current: dict | None = None     # the running drills row
        #: when it started on ``clock`` (PostgreSQL: its ``age`` on the database's clock, taken
        #: back from this node's clock when read, so node and database clocks never mix)
        self._started = 0.0

    @property
    def drill_id(self) -> str:
        return self.current["id"] if self.current else ""

    async def load(self) -> None:
        """Resume a drill that was running when the gateway stopped."""
        self._set(await self.spool.running_drill())
        if self.current:
            self.log.info("drill_resumed", drill_id=self.drill_id, recipients=self.current["recipients"])

    async def follow(self) -> None:
        """Take the running drill as stored in the (shared) spool, a fresh read: what a follower
        holds, and what a node that just took the lead starts from (the DAC rule)."""
        row = await self.spool.running_drill()
        before = self.drill_id
        self._set(row)
        if self.drill_id != before:
            self.log.info("drill_followed", drill_id=self.drill_id or None, previous=before or None,
                          recipients=row["recipients"] if row else [])
            self.qmgr.notify()              # an end released drill holds: due now

    def _set(self, row: dict | None) -> None:
        self.current = row
        if row is not None:
            self._started = (self.clock() - row["age"]) if row.get("age") is not None \
                else (row["started_at"] or 0.0)
        self._apply()

    def _apply(self) -> None:
        self.qmgr.drill_rcpts = frozenset(self.current["recipients"]) if self.current else frozenset()

    async def apply(self, cmd: dict, state: EngineState) -> tuple[bool, str]:
        """Apply a ``drill-start`` / ``drill-end`` command (``cmd`` a continuity_commands row,
        ``reason`` the drill's id) in ``state``; returns (ok, result) — the result is what the
        command is marked done with: "ok: drill ID running", "ok: drill ID ended, N released",
        or "refused: why"."""
        wall, cid, actor, drill_id = self.clock(), cmd["id"], cmd["actor"] or "cli", cmd["reason"]
        mode, event = state.mode.value, state.event_id
        if cmd["command"] == "drill-start":
            row = await self.spool.get_drill(drill_id)
            why = None
            if row is None or row["state"] != "requested":
                why = f"drill {drill_id or '?'} is not waiting to start"
            elif state.mode is not Mode.NORMAL:
                why = f"continuity mode is {mode}: a drill runs only in normal mode, never during an event"
            elif self.current is not None:
                why = f"drill {self.drill_id} is already running"
            if why is not None:
                result = await self.spool.refuse_drill_command(
                    drill_id, why, command="drill-start", command_id=cid, mode=mode, event_id=event,
                    actor=actor, at=wall, epoch=self.epoch())
                self.log.info("drill_refused", drill_id=drill_id, why=why)
                return False, result
            self._set(await self.spool.start_drill(drill_id, command_id=cid, mode=mode,
                                                   event_id=event, actor=actor, at=wall,
                                                   epoch=self.epoch()))
            self.log.warning("drill_started", drill_id=drill_id, recipients=row["recipients"], actor=actor)
            return True, f"ok: drill {drill_id} running"
        if cmd["command"] == "drill-end":
            if self.current is None or self.current["id"] != drill_id:
                why = f"drill {drill_id} is not running"
                result = await self.spool.refuse_drill_command(
                    drill_id, why, command="drill-end", command_id=cid, mode=mode, event_id=event,
                    actor=actor, at=wall, epoch=self.epoch())
                return False, result
            n = await self._end(f"ended by {actor}", actor, command_id=cid, mode=mode, event=event)
            return True, f"ok: drill {drill_id} ended, {n} message(s) released"
        return False, f"refused: unknown drill command {cmd['command']!r}"

    async def _end(self, why: str, actor: str, *, to_continuity: bool = False,
                   command_id: int | None = None, mode: str = "", event: str = "") -> int:
        """End the running drill (the queue manager stops holding first); returns how many held
        messages were released (or made continuity holds)."""
        drill_id, wall, current = self.drill_id, self.clock(), self.current
        self.current = None
        self._apply()                    # stop holding before the release is written
        try:
            n = await self.spool.end_drill(drill_id, why, actor=actor, to_continuity=to_continuity,
                                           command_id=command_id, mode=mode, event_id=event,
                                           at=wall, epoch=self.epoch())
        except BaseException:            # not written (the spool failed): still running, retried
            self.current = current
            self._apply()
            raise
        self.qmgr.notify()
        self.log.warning("drill_ended", drill_id=drill_id, why=why, messages=n, to_continuity=to_continuity)
        return n

    async def on_event(self, state: EngineState) -> None:
        """A real continuity event began: a running drill ends at once, its held mail becomes
        continuity holds (replayed with the event's)."""
        if self.current is not None:
            await self._end(f"superseded by continuity event {state.event_id}", ACTOR, to_continuity=True)

    async def tick(self, state: EngineState) -> None:
        """Each controller step: end a drill older than drill_max_duration; release (or, during
        an event, make continuity holds of) drill holds left without a running drill."""
        if self.current is not None:
            if self.clock() - self._started >= self.max_duration:
                await self._end(f"ended by the gateway after drill_max_duration {self.max_duration:g} s",
                                ACTOR)
            return
        if not await self.spool.count_drill_held():
            return
        event = state.mode in (Mode.CONTINUITY, Mode.RECOVERING)
        n = await self.spool.release_drill_holds("drill-leftover", to_continuity=event,
                                                epoch=self.epoch())
        if n:
            self.qmgr.notify()
            self.log.info("drill_leftovers", messages=n, to_continuity=event)
