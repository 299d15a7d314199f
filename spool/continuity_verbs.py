"""The continuity verbs of the SQLite spool (a mixin of spool.store.Spool): async wrappers over
the transactional functions of spool.continuity, run by the spool's writer thread (writes) or
its readers (reads). spool.pg.continuity.PgContinuityVerbs has the same verbs on PostgreSQL.

``epoch`` (the leader lease's fencing token on a shared spool) is accepted and ignored here: one
node owns a SQLite file, so it is always the leader. Times are unix seconds. Errors: SpoolError
(spool.store) when the database cannot write.
"""
from __future__ import annotations

from spool import continuity as _c


class ContinuityVerbs:
    """Continuity verbs over ``self.read`` / ``self.write`` (spool.store.Spool)."""

    async def continuity_state(self) -> dict | None:
        """The persisted engine state (columns of continuity_state), or None."""
        return await self.read(_c.load_state)

    async def save_transition(self, *, mode: str, since: float, origin: str, reason: str,
                              awaiting_confirm: bool, event_id: str, src: str, actor: str,
                              command_id: int | None = None, result: str = "",
                              epoch: int | None = None) -> None:
        """The new state and its audit record (and the command done), in one transaction."""
        await self.write(lambda c: _c.save_transition(
            c, mode=mode, since=since, origin=origin, reason=reason,
            awaiting_confirm=awaiting_confirm, event_id=event_id, src=src, actor=actor,
            command_id=command_id, result=result))

    async def audit_command(self, command_id: int, *, mode: str, event_id: str, actor: str,
                            reason: str, result: str, at: float | None = None,
                            epoch: int | None = None) -> None:
        """A command that changed nothing: its audit record and the command marked done."""
        await self.write(lambda c: _c.audit_command(
            c, command_id, mode=mode, event_id=event_id, actor=actor, reason=reason,
            result=result, at=at))

    async def queue_command(self, command: str, reason: str, actor: str,
                            at: float | None = None) -> int:
        """Queue an admin command; its id."""
        return await self.write(_c.queue_command, command, reason, actor, at)

    async def pending_commands(self) -> list[dict]:
        """Commands not applied yet, oldest first (id, at, command, reason, actor)."""
        return await self.read(_c.pending_commands)

    async def release_held(self, limit: int, replay_id: str, epoch: int | None = None) -> list[str]:
        """Release up to ``limit`` continuity-held messages, oldest first; their queue IDs."""
        return await self.write(_c.release_held, limit, None, replay_id)

    async def hold_due_now(self, epoch: int | None = None) -> int:
        """Make every deferred message due now; the count."""
        return await self.write(_c.hold_due_now)

    async def count_held(self) -> int:
        """Messages on continuity hold."""
        return await self.read(_c.count_held)

    async def replay_in_flight(self, replay_id: str) -> int:
        """Messages released by ``replay_id`` and not settled yet (incoming or active)."""
        return await self.read(_c.replay_in_flight, replay_id)

    async def record_probe(self, probe: str, ok: bool, at: float, latency: float, detail: str,
                           critical: bool) -> None:
        """Keep a probe result (pruned after spool.continuity.PROBE_KEEP_SECONDS)."""
        await self.write(_c.record_probe, probe, ok, at, latency, detail, critical)

    async def cluster_probes(self, fresh_within: float) -> list[dict]:
        """Other nodes' probe results: none (one node owns a SQLite spool)."""
        return []

    async def continuity_audit(self, limit: int = 50) -> list[dict]:
        """The newest ``limit`` audit records, newest first."""
        return await self.read(_c.audit, limit)


__all__ = ["ContinuityVerbs"]
