"""The admin console's verbs on PostgreSQL (a mixin of PgSpool; spool.console_verbs.ConsoleVerbs
on SQLite documents each verb's shapes): the timeline, probe history, the queue search and the
operator's queue changes (spool.pg.admin_ops), command results, the replay's progress and the
drills, over spool.pg.console_rows.

Drills are leader-only: a verb that changes a drill or its held mail, called with ``epoch``,
runs through PgSpool.fenced (the continuity lease at that epoch, else LeaseLost, nothing
written); without it, a plain transaction (tests, the CLI's own requests). Drill times are the
database's clock; the running drill's row (running_drill, start_drill) also has ``age``, the
seconds since it started on that clock, so that a node measures drill_max_duration without
comparing its own clock with the database's. Errors: SpoolError (spool.store) when the database is unreachable;
InvalidTransition / ValueError as on SQLite.
"""
from __future__ import annotations

from typing import Any

from spool.console import LIVE_STATES
from spool.pg import admin_ops as _ops
from spool.pg import console_rows as _r
from spool.pg.continuity import PgContinuityVerbs
from spool.pg.continuity import audit_command as _audit_command
from spool.pg.db import OneConnection
from spool.pg.mailbox import PgMailboxVerbs


class PgConsoleVerbs:
    """The console verbs of PgSpool (over its read/transaction/fenced and ``node``)."""

    async def _leader(self, epoch: int | None, fn, *args: Any) -> Any:
        if epoch is None:
            return await self.transaction(fn, *args)
        return await self.fenced(epoch, fn, *args)

    async def timeline(self, start: float, end: float, audit_limit: int | None = None) -> dict:
        return await self.transaction(_r.timeline, start, end, audit_limit)   # one snapshot

    async def probe_history(self, latest_only: bool = True, limit: int = 50) -> list[dict]:
        return await self.read(_r.probe_history, latest_only, limit)

    async def search_queue(self, states: tuple[str, ...] = LIVE_STATES, text: str = "",
                           limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        return await self.read(_r.search_queue, tuple(states), text, limit, offset)

    # admin_ops opens its own transaction: run on an autocommit connection (self.read)
    async def hold_message(self, queue_id: str) -> str:
        return await self.read(_ops.hold, queue_id)

    async def release_message(self, queue_id: str) -> None:
        await self.read(_ops.release, queue_id)

    async def flush_queue(self, queue_id: str | None = None) -> int:
        return await self.read(_ops.flush, queue_id)

    async def delete_message(self, queue_id: str) -> bool:
        return await self.read(_ops.delete, queue_id)

    async def get_command(self, command_id: int) -> dict | None:
        return await self.read(_r.get_command, command_id)

    async def replay_progress(self, replay_id: str, since: float) -> dict:
        return await self.read(_r.replay_progress, replay_id, since)

    async def request_drill(self, drill_id: str, recipients: list[str], actor: str) -> None:
        await self.transaction(_r.request_drill, drill_id, list(recipients), actor)

    async def get_drill(self, drill_id: str) -> dict | None:
        return await self.read(_r.get_drill, drill_id)

    async def running_drill(self) -> dict | None:
        return await self.read(_r.running_drill)

    async def recent_drills(self, limit: int = 5) -> list[dict]:
        return await self.read(_r.recent_drills, limit)

    async def cancel_drill(self, drill_id: str, why: str) -> None:
        await self.transaction(_r.refuse_drill, drill_id, why)

    async def start_drill(self, drill_id: str, *, command_id: int, mode: str, event_id: str,
                          actor: str, at: float | None = None, epoch: int | None = None) -> dict:
        async def run(c):
            row = await _r.start_drill(c, drill_id, self.node)
            rcpts = ", ".join(row["recipients"])
            await _audit_command(c, self.node, epoch or 0, command_id, mode=mode, event_id=event_id,
                                 actor=actor, reason=f"drill {drill_id} started for {rcpts}",
                                 result=f"ok: drill {drill_id} running", at=at)
            await _r.drill_audit(c, self.node, "drill_start", drill_id, actor=actor,
                                 detail=f"recipients={rcpts}")
            return row
        return await self._leader(epoch, run)

    async def refuse_drill_command(self, drill_id: str, why: str, *, command: str,
                                   command_id: int, mode: str, event_id: str, actor: str,
                                   at: float | None = None, epoch: int | None = None) -> str:
        result = f"refused: {why}"

        async def run(c):
            if command == "drill-start":
                await _r.refuse_drill(c, drill_id, why)
            await _audit_command(c, self.node, epoch or 0, command_id, mode=mode, event_id=event_id,
                                 actor=actor, reason=f"{command} {drill_id} refused: {why}",
                                 result=result, at=at)
            await _r.drill_audit(c, self.node, command.replace("-", "_"), drill_id, actor=actor,
                                 result="refused", detail=why)
        await self._leader(epoch, run)
        return result

    async def end_drill(self, drill_id: str, why: str, *, actor: str, to_continuity: bool = False,
                        command_id: int | None = None, mode: str = "", event_id: str = "",
                        at: float | None = None, epoch: int | None = None) -> int:
        what = "made continuity holds" if to_continuity else "released"

        async def run(c):
            n = await _r.end_drill(c, drill_id, why, to_continuity)
            if command_id is not None:
                await _audit_command(c, self.node, epoch or 0, command_id, mode=mode,
                                     event_id=event_id, actor=actor,
                                     reason=f"drill {drill_id} {why}: {n} message(s) {what}",
                                     result=f"ok: drill {drill_id} ended, {n} message(s) {what}", at=at)
            await _r.drill_audit(c, self.node, "drill_end", drill_id, actor=actor,
                                 detail=f"{why}; {n} message(s) {what}")
            return n
        return await self._leader(epoch, run)

    async def release_drill_holds(self, replay_id: str, *, to_continuity: bool = False,
                                  epoch: int | None = None) -> int:
        return await self._leader(epoch, _r.release_drill_holds, replay_id, to_continuity)

    async def count_drill_held(self) -> int:
        return await self.read(_r.count_drill_held)

    async def drill_audit(self, action: str, drill_id: str, *, actor: str, address: str = "",
                          result: str = "ok", detail: str = "") -> int:
        return await self.transaction(lambda c: _r.drill_audit(
            c, self.node, action, drill_id, actor=actor, address=address, result=result,
            detail=detail))

    async def drill_audit_rows(self, drill_id: str) -> list[dict]:
        return await self.read(_r.drill_audit_rows, drill_id)

    async def drill_message(self, queue_id: str, mailbox: str) -> dict | None:
        return await self.read(_r.drill_message, queue_id, mailbox)


class PgConnectionConsole(PgConsoleVerbs, PgContinuityVerbs, PgMailboxVerbs, OneConnection):
    """The console, continuity and mailbox verbs on one CLI connection (spool.pg.db.OneConnection)."""


__all__ = ["PgConnectionConsole", "PgConsoleVerbs"]
