"""The admin console's verbs on the SQLite spool (a mixin of spool.store.Spool): async wrappers
over spool.console (the timeline, the queue pages), the operator's queue changes
(spool.continuity.operator_hold / operator_release, spool.transitions.flush / delete_message),
the replay's progress and command results (spool.continuity) and the drills (spool.drill), run
by the spool's writer thread (writes) or its readers (reads). spool.pg.console.PgConsoleVerbs
has the same verbs on PostgreSQL; ConnectionConsole runs them (and the continuity and mailbox
verbs) on one connection of the CLI.

Drills are leader-only: the drill verbs that change a drill or its held mail take ``epoch``
(the continuity lease's fencing token); on a shared spool they run fenced by it, as every
continuity write of the leader does. Here one node owns the file, so ``epoch`` is ignored.

Times are unix seconds (wall clock here, the database's clock on PostgreSQL). Errors:
SpoolError (spool.store) when the storage fails; InvalidTransition (spool.states) for a queue
change the message's state refuses; ValueError for a drill that is not waiting to start.
"""
from __future__ import annotations

import time

from spool import console as _console
from spool import continuity as _c
from spool import db as _db
from spool import drill as _drill
from spool import transitions as _tr
from spool.continuity_verbs import ContinuityVerbs
from spool.mailbox_verbs import MailboxVerbs

LIVE_STATES = _console.LIVE_STATES


def _timeline(conn, start: float, end: float, audit_limit: int | None) -> dict:
    return {"probes": _console.probe_names(conn),
            "results": _console.probe_results_between(conn, start, end),
            "audit": _console.continuity_audit_between(conn, start, end, audit_limit),
            "before": _console.mode_at(conn, start),
            "changes": _console.mode_changes_between(conn, start, end),
            "total": _console.count_audit_between(conn, start, end)}


class ConsoleVerbs:
    """Admin-console verbs over ``self.read`` / ``self.write`` (spool.store.Spool)."""

    # -- the timeline and the probes -----------------------------------------------------------
    async def timeline(self, start: float, end: float, audit_limit: int | None = None) -> dict:
        """What the timeline of ``[start, end)`` shows, read at once: {"probes": [every probe
        with a kept result, sorted], "results": [probe results in the window by (probe, at):
        probe, ok, at, latency, detail, critical], "audit": [continuity_audit rows in the
        window, oldest first, the newest ``audit_limit`` of them, with "command"], "before":
        the mode in force at ``start`` (or None), "changes": [at, src, dst of each state change
        in the window], "total": the audit rows in the window}."""
        return await self.read(_timeline, start, end, audit_limit)

    async def probe_history(self, latest_only: bool = True, limit: int = 50) -> list[dict]:
        """The latest result of each probe (sorted by probe), or the newest ``limit`` results:
        dicts with probe, ok, at, latency, detail, critical (and node on PostgreSQL)."""
        return await self.read(_c.probe_history, latest_only, limit)

    # -- the queue pages -----------------------------------------------------------------------
    async def search_queue(self, states: tuple[str, ...] = LIVE_STATES, text: str = "",
                           limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
        """One page of messages in ``states``, oldest first, and the number of all matches
        (spool.console.search_queue: rows of queue_id, state, hold_reason, mail_from, size,
        arrived_at, attempts, last_error, recipients, first_rcpt). ValueError: unknown state."""
        return await self.read(_console.search_queue, tuple(states), text, limit, offset)

    async def hold_message(self, queue_id: str) -> str:
        """Operator hold (`mailgate queue hold`): the state it left ('hold' for a continuity
        or drill hold taken over). InvalidTransition (``actual`` None: no such message)."""
        return await self.write(lambda c: _c.operator_hold(c, queue_id, time.time()))

    async def release_message(self, queue_id: str) -> None:
        """A held message back to ``incoming``, due now, its time on hold added to
        ``held_seconds``. InvalidTransition if it is not on hold (``actual`` None: absent)."""
        await self.write(lambda c: _c.operator_release(c, queue_id, time.time()))

    async def flush_queue(self, queue_id: str | None = None) -> int:
        """Every deferred message due now, or ``queue_id`` if deferred or incoming; the count."""
        return await self.write(_tr.flush, queue_id)

    async def delete_message(self, queue_id: str) -> bool:
        """Remove a message that is not active, with its recipients and bytes; False if there
        is none; InvalidTransition for an active one."""
        return await self.write(_tr.delete_message, queue_id)

    # -- continuity: commands and the replay ---------------------------------------------------
    async def get_command(self, command_id: int) -> dict | None:
        """One continuity_commands row (id, at, command, reason, actor, done_at or None,
        result), or None."""
        return await self.read(_c.get_command, command_id)

    async def replay_progress(self, replay_id: str, since: float) -> dict:
        """Progress of replay ``replay_id`` begun at ``since``: done, deferred, in_flight,
        remaining, rate (messages/s), eta_seconds (or None)."""
        return await self.read(_c.replay_progress, replay_id, since)

    # -- drills (spool.drill) ------------------------------------------------------------------
    async def request_drill(self, drill_id: str, recipients: list[str], actor: str) -> None:
        """Record a drill asked for by ``actor`` for ``recipients`` (mailbox keys): requested."""
        await self.write(_drill.request, drill_id, list(recipients), actor)

    async def get_drill(self, drill_id: str) -> dict | None:
        """The drills row (id, recipients (list), actor, state, requested_at, started_at,
        ended_at, end_reason, released), or None."""
        return await self.read(_drill.get, drill_id)

    async def running_drill(self) -> dict | None:
        """The drill holding mail now (at most one), or None."""
        return await self.read(_drill.running)

    async def recent_drills(self, limit: int = 5) -> list[dict]:
        """The newest ``limit`` drills, newest first."""
        return await self.read(_drill.recent, limit)

    async def cancel_drill(self, drill_id: str, why: str) -> None:
        """A requested drill that will not start (the CLI got no answer): refused, ``why``
        kept as its end_reason; a drill past ``requested`` is left alone."""
        await self.write(_drill.refuse, drill_id, why)

    async def start_drill(self, drill_id: str, *, command_id: int, mode: str, event_id: str,
                          actor: str, at: float | None = None, epoch: int | None = None) -> dict:
        """Apply a ``drill-start`` command: the drill ``requested`` → ``running``, the command's
        continuity_audit record and its webmail_audit ``drill_start`` row, in one transaction;
        returns the running drill's row. ValueError if it is not waiting to start."""
        def run(c):
            _drill.start(c, drill_id, now=at)
            row = _drill.get(c, drill_id)
            rcpts = ", ".join(row["recipients"])
            _c.audit_command(c, command_id, mode=mode, event_id=event_id, actor=actor,
                             reason=f"drill {drill_id} started for {rcpts}",
                             result=f"ok: drill {drill_id} running", at=row["started_at"])
            _drill.audit(c, "drill_start", drill_id, actor=actor, detail=f"recipients={rcpts}",
                         now=row["started_at"])
            return row
        return await self.write(run)

    async def refuse_drill_command(self, drill_id: str, why: str, *, command: str,
                                   command_id: int, mode: str, event_id: str, actor: str,
                                   at: float | None = None, epoch: int | None = None) -> str:
        """A ``drill-start`` / ``drill-end`` (``command``) the gateway refuses: a requested drill
        is marked refused (drill-start), the command audited and done with "refused: WHY", and
        a webmail_audit ``drill_start`` / ``drill_end`` row (result refused), in one
        transaction. Returns the command's result."""
        result = f"refused: {why}"

        def run(c):
            if command == "drill-start":
                _drill.refuse(c, drill_id, why, now=at)
            _c.audit_command(c, command_id, mode=mode, event_id=event_id, actor=actor,
                             reason=f"{command} {drill_id} refused: {why}", result=result, at=at)
            _drill.audit(c, command.replace("-", "_"), drill_id, actor=actor, result="refused",
                         detail=why, now=at)
        await self.write(run)
        return result

    async def end_drill(self, drill_id: str, why: str, *, actor: str, to_continuity: bool = False,
                        command_id: int | None = None, mode: str = "", event_id: str = "",
                        at: float | None = None, epoch: int | None = None) -> int:
        """End a running drill (spool.drill.end: its held mail released, or made continuity
        holds with ``to_continuity``), with the command's audit record (when ``command_id``)
        and a webmail_audit ``drill_end`` row, in one transaction; the messages moved (0 and
        nothing written but the audit if it was not running)."""
        what = "made continuity holds" if to_continuity else "released"

        def run(c):
            n = _drill.end(c, drill_id, why, to_continuity=to_continuity, now=at)
            if command_id is not None:
                _c.audit_command(c, command_id, mode=mode, event_id=event_id, actor=actor,
                                 reason=f"drill {drill_id} {why}: {n} message(s) {what}",
                                 result=f"ok: drill {drill_id} ended, {n} message(s) {what}", at=at)
            _drill.audit(c, "drill_end", drill_id, actor=actor,
                         detail=f"{why}; {n} message(s) {what}", now=at)
            return n
        return await self.write(run)

    async def release_drill_holds(self, replay_id: str, *, to_continuity: bool = False,
                                  epoch: int | None = None) -> int:
        """Every message on drill hold released (stamped ``replay_id``) or, with
        ``to_continuity``, made a continuity hold; the count (spool.drill.release_held)."""
        return await self.write(lambda c: _drill.release_held(c, replay_id,
                                                              to_continuity=to_continuity))

    async def count_drill_held(self) -> int:
        """Messages on drill hold now."""
        return await self.read(_drill.count_held)

    async def drill_audit(self, action: str, drill_id: str, *, actor: str, address: str = "",
                          result: str = "ok", detail: str = "") -> int:
        """One webmail_audit row of a drill (``detail`` prefixed with its id); its id."""
        return await self.write(lambda c: _drill.audit(c, action, drill_id, actor=actor,
                                                       address=address, result=result,
                                                       detail=detail))

    async def drill_audit_rows(self, drill_id: str) -> list[dict]:
        """The webmail_audit rows of one drill (actions drill_*), oldest first."""
        return await self.read(_drill.audit_rows, drill_id)

    async def drill_message(self, queue_id: str, mailbox: str) -> dict | None:
        """The phases' facts of a drill's test message (spool.drill.message_facts), or None."""
        return await self.read(_drill.message_facts, queue_id, mailbox)


class ConnectionConsole(ConsoleVerbs, ContinuityVerbs, MailboxVerbs):
    """The console, continuity and mailbox verbs on one SQLite connection of the calling thread
    (the CLI: no writer thread; WAL shares the file with a running gateway): each write in a
    BEGIN IMMEDIATE transaction of its own (spool.db.transaction)."""

    def __init__(self, conn):
        self.conn = conn

    async def read(self, fn, *args):
        return fn(self.conn, *args)

    async def write(self, fn, *args, size: int = 0):
        return _db.transaction(self.conn, lambda: fn(self.conn, *args))


__all__ = ["ConnectionConsole", "ConsoleVerbs", "LIVE_STATES"]
