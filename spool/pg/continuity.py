"""Continuity on the PostgreSQL spool: the engine's shared state, its audit trail, admin commands,
probe results, the continuity hold and its replay (the verbs of spool.continuity_verbs on SQLite).

Several nodes share these rows; one of them, the holder of the "continuity" lease, writes them.
A verb called with ``epoch`` runs through PgSpool.fenced: in one transaction with the FOR SHARE
check that this node holds the lease at that epoch, so a stale leader's write changes nothing
and raises spool.pg.lease.LeaseLost (counted in ``fenced_refused``, never retried here).
Without ``epoch`` it is a plain transaction (tests, a single writer).

A message on continuity hold is ``state='hold'``, ``hold_reason='continuity'``; a release
moves it to ``incoming``, due now, stamps ``replay_id`` and ``released_at`` and adds its time on
hold to ``held_seconds``: any node's queue manager may then claim and deliver it. Every time
written here except the engine's own ``since``/``at`` stamps comes from the database's clock.
Errors: SpoolError (spool.store) when the database is unreachable.
"""
from __future__ import annotations

from typing import Any

from psycopg import AsyncConnection
from psycopg.rows import dict_row

_NOW = "extract(epoch FROM clock_timestamp())::float8"


async def load_state(conn: AsyncConnection) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT mode, since, origin, reason, awaiting_confirm, event_id, node,"
                          " epoch, extract(epoch FROM updated_at)::float8 AS updated_at"
                          " FROM continuity_state WHERE id=1")
        return await cur.fetchone()


async def save_transition(conn: AsyncConnection, node: str, epoch: int, *, mode: str, since: float,
                          origin: str, reason: str, awaiting_confirm: bool, event_id: str, src: str,
                          actor: str, command_id: int | None = None, result: str = "") -> None:
    await conn.execute(
        "INSERT INTO continuity_state (id, mode, since, origin, reason, awaiting_confirm, event_id,"
        " updated_at, node, epoch) VALUES (1,%s,%s,%s,%s,%s,%s,clock_timestamp(),%s,%s)"
        " ON CONFLICT (id) DO UPDATE SET mode=excluded.mode, since=excluded.since,"
        " origin=excluded.origin, reason=excluded.reason, awaiting_confirm=excluded.awaiting_confirm,"
        " event_id=excluded.event_id, updated_at=excluded.updated_at, node=excluded.node,"
        " epoch=excluded.epoch",
        (mode, since, origin, reason, awaiting_confirm, event_id, node, epoch))
    await _audit(conn, since, src, mode, actor, reason, event_id, command_id, node, epoch)
    if command_id is not None:
        await command_done(conn, command_id, result)


async def _audit(conn, at, src, dst, actor, reason, event_id, command_id, node, epoch) -> None:
    await conn.execute(
        "INSERT INTO continuity_audit (at, src, dst, actor, reason, event_id, command_id, node, epoch)"
        " VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (at, src, dst, actor, reason, event_id, command_id, node, epoch))


async def audit_command(conn: AsyncConnection, node: str, epoch: int, command_id: int, *, mode: str,
                        event_id: str, actor: str, reason: str, result: str,
                        at: float | None = None) -> None:
    if at is None:
        cur = await conn.execute(f"SELECT {_NOW}")
        at = (await cur.fetchone())[0]
    await _audit(conn, at, mode, mode, actor, reason, event_id, command_id, node, epoch)
    await command_done(conn, command_id, result)


async def audit(conn: AsyncConnection, limit: int = 50) -> list[dict]:
    """The newest ``limit`` audit records, newest first."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT * FROM continuity_audit ORDER BY id DESC LIMIT %s", (limit,))
        return await cur.fetchall()


async def queue_command(conn: AsyncConnection, command: str, reason: str, actor: str) -> int:
    cur = await conn.execute(f"INSERT INTO continuity_commands (at, command, reason, actor)"
                             f" VALUES ({_NOW},%s,%s,%s) RETURNING id", (command, reason, actor))
    return (await cur.fetchone())[0]


async def pending_commands(conn: AsyncConnection) -> list[dict]:
    """Pending commands, oldest first, with ``age`` (seconds, database clock)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(f"SELECT id, at, command, reason, actor, {_NOW} - at AS age"
                          " FROM continuity_commands WHERE done_at IS NULL ORDER BY id")
        return await cur.fetchall()


async def command_done(conn: AsyncConnection, command_id: int, result: str) -> None:
    await conn.execute("UPDATE continuity_commands SET done_at=clock_timestamp(), result=%s"
                       " WHERE id=%s", (result, command_id))


async def release_held(conn: AsyncConnection, limit: int, replay_id: str) -> list[str]:
    cur = await conn.execute(
        "WITH c AS (SELECT queue_id FROM messages WHERE state='hold' AND hold_reason='continuity'"
        "           ORDER BY seq LIMIT %s FOR UPDATE SKIP LOCKED)"
        " UPDATE messages m SET state='incoming', hold_reason='', next_attempt_at=clock_timestamp(),"
        "   updated_at=clock_timestamp(), held_seconds = held_seconds + greatest(0,"
        "     extract(epoch FROM clock_timestamp() - coalesce(held_at, clock_timestamp()))),"
        "   held_at=NULL, replay_id=%s, released_at=clock_timestamp()"
        " FROM c WHERE m.queue_id = c.queue_id RETURNING m.queue_id, m.seq", (limit, replay_id))
    return [r[0] for r in sorted(await cur.fetchall(), key=lambda r: r[1])]


async def hold_due_now(conn: AsyncConnection) -> int:
    cur = await conn.execute("UPDATE messages SET next_attempt_at=clock_timestamp()"
                             " WHERE state='deferred'")
    return cur.rowcount


async def count_held(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT count(*) FROM messages WHERE state='hold'"
                             " AND hold_reason='continuity'")
    return (await cur.fetchone())[0]


async def replay_in_flight(conn: AsyncConnection, replay_id: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM messages WHERE replay_id=%s"
                             " AND state IN ('incoming','active')", (replay_id,))
    return (await cur.fetchone())[0]


#: Seconds probe results are kept (as spool.continuity.PROBE_KEEP_SECONDS).
PROBE_KEEP_SECONDS = 8 * 86400.0


async def record_probe(conn: AsyncConnection, node: str, probe: str, ok: bool, at: float,
                       latency: float, detail: str, critical: bool) -> None:
    await conn.execute("INSERT INTO probe_results (node, probe, ok, at, latency, detail, critical)"
                       " VALUES (%s,%s,%s,%s,%s,%s,%s)",
                       (node, probe, ok, at, latency, detail[:500], critical))
    await conn.execute("DELETE FROM probe_results WHERE node=%s AND probe=%s AND at < %s",
                       (node, probe, at - PROBE_KEEP_SECONDS))


async def cluster_probes(conn: AsyncConnection, node: str, fresh_within: float) -> list[dict]:
    """The latest critical result of each probe of every node but ``node`` recorded within
    ``fresh_within`` s (database clock): node, probe, ok, latency, detail, age (s)."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT DISTINCT ON (node, probe) node, probe, ok, latency, detail,"
            " extract(epoch FROM clock_timestamp() - recorded_at)::float8 AS age"
            " FROM probe_results WHERE node <> %s AND critical"
            " AND recorded_at > clock_timestamp() - %s * interval '1 second'"
            " ORDER BY node, probe, id DESC", (node, fresh_within))
        return await cur.fetchall()


class PgContinuityVerbs:
    """The continuity verbs of PgSpool (a mixin over its transaction/read/fenced)."""

    async def _fenced_or_tx(self, epoch: int | None, fn, *args: Any) -> Any:
        if epoch is None:
            return await self.transaction(fn, *args)
        return await self.fenced(epoch, fn, *args)

    async def continuity_state(self) -> dict | None:
        """The shared engine state (mode, since, origin, reason, awaiting_confirm, event_id,
        node, epoch, updated_at), read in a fresh transaction of its own; or None."""
        return await self.transaction(load_state)

    async def save_transition(self, *, epoch: int | None = None, **kw: Any) -> None:
        await self._fenced_or_tx(epoch, lambda c: save_transition(c, self.node, epoch or 0, **kw))

    async def audit_command(self, command_id: int, *, epoch: int | None = None, **kw: Any) -> None:
        await self._fenced_or_tx(epoch, lambda c: audit_command(c, self.node, epoch or 0,
                                                                command_id, **kw))

    async def queue_command(self, command: str, reason: str, actor: str,
                            at: float | None = None) -> int:
        """Queue a command, stamped with the database clock (``at`` is ignored)."""
        return await self.transaction(queue_command, command, reason, actor)

    async def pending_commands(self) -> list[dict]:
        return await self.read(pending_commands)

    async def release_held(self, limit: int, replay_id: str, epoch: int | None = None) -> list[str]:
        return await self._fenced_or_tx(epoch, release_held, limit, replay_id)

    async def hold_due_now(self, epoch: int | None = None) -> int:
        return await self._fenced_or_tx(epoch, hold_due_now)

    async def count_held(self) -> int:
        return await self.read(count_held)

    async def replay_in_flight(self, replay_id: str) -> int:
        return await self.read(replay_in_flight, replay_id)

    async def record_probe(self, probe: str, ok: bool, at: float, latency: float, detail: str,
                           critical: bool) -> None:
        await self.transaction(record_probe, self.node, probe, ok, at, latency, detail, critical)

    async def continuity_audit(self, limit: int = 50) -> list[dict]:
        return await self.read(audit, limit)

    async def cluster_probes(self, fresh_within: float) -> list[dict]:
        """Other nodes' fresh critical probe results (see ``cluster_probes``)."""
        return await self.read(cluster_probes, self.node, fresh_within)


__all__ = ["PROBE_KEEP_SECONDS", "PgContinuityVerbs"]
