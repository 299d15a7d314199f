"""SQL of the admin console's verbs on PostgreSQL (spool.pg.console.PgConsoleVerbs): the timeline
(probe_results, continuity_audit), the queue search, command results, the replay's progress and
the drills (0007_console.sql), each on a psycopg AsyncConnection inside the caller's transaction
(or autocommit for reads). The shapes are spool.console's and spool.drill's; times are unix
seconds, from the database's clock wherever the SQLite spool reads time.time(); flags are
booleans. Reads probe_results, continuity_audit, continuity_commands, continuity_state,
messages, recipients, mailbox_messages, drills, webmail_audit; writes drills, messages
(drill holds) and webmail_audit.
"""
from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from spool.pg.account_rows import audit as _audit_row
from spool.states import QueueState

NOW = "extract(epoch FROM clock_timestamp())::float8"
DRILL_HOLD = "drill"


def _secs(col: str, alias: str | None = None) -> str:
    return f"extract(epoch FROM {col})::float8 AS {alias or col.split('.')[-1]}"


async def _one(conn, sql: str, args=()) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, args)
        return await cur.fetchone()


async def _all(conn, sql: str, args=()) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, args)
        return await cur.fetchall()


async def _scalar(conn, sql: str, args=()):
    cur = await conn.execute(sql, args)
    return (await cur.fetchone())[0]


# -- the timeline and the probes ----------------------------------------------------------------
async def timeline(conn: AsyncConnection, start: float, end: float, audit_limit: int | None) -> dict:
    probes = [r["probe"] for r in await _all(conn, "SELECT DISTINCT probe FROM probe_results ORDER BY probe")]
    results = await _all(conn, "SELECT probe, ok, at, latency, detail, critical, node FROM probe_results"
                               " WHERE at >= %s AND at < %s ORDER BY probe, at, id", (start, end))
    audit = await _all(conn, "SELECT a.*, coalesce(c.command, '') AS command FROM continuity_audit a"
                             " LEFT JOIN continuity_commands c ON c.id = a.command_id"
                             " WHERE a.at >= %s AND a.at < %s ORDER BY a.at DESC, a.id DESC LIMIT %s",
                       (start, end, audit_limit))
    audit.reverse()
    changes = await _all(conn, "SELECT at, src, dst FROM continuity_audit WHERE at >= %s AND at < %s"
                               " AND src <> dst ORDER BY at, id", (start, end))
    total = await _scalar(conn, "SELECT count(*) FROM continuity_audit WHERE at >= %s AND at < %s",
                          (start, end))
    return {"probes": probes, "results": results, "audit": audit, "before": await mode_at(conn, start),
            "changes": changes, "total": total}


async def mode_at(conn: AsyncConnection, at: float) -> str | None:
    """spool.console.mode_at: the last audit record's dst before ``at``, else the first one's
    src after it, else the persisted mode, else None."""
    for sql in ("SELECT dst FROM continuity_audit WHERE at < %s ORDER BY at DESC, id DESC LIMIT 1",
                "SELECT src FROM continuity_audit WHERE at >= %s ORDER BY at, id LIMIT 1"):
        cur = await conn.execute(sql, (at,))
        row = await cur.fetchone()
        if row is not None:
            return row[0]
    cur = await conn.execute("SELECT mode FROM continuity_state WHERE id=1")
    row = await cur.fetchone()
    return row[0] if row else None


async def probe_history(conn: AsyncConnection, latest_only: bool, limit: int) -> list[dict]:
    """The latest result of each probe of each node (by probe, node), or the newest ``limit``."""
    cols = "id, node, probe, ok, at, latency, detail, critical"
    if latest_only:
        return await _all(conn, f"SELECT DISTINCT ON (probe, node) {cols} FROM probe_results"
                                " ORDER BY probe, node, id DESC")
    return await _all(conn, f"SELECT {cols} FROM probe_results ORDER BY id DESC LIMIT %s", (limit,))


# -- the queue ----------------------------------------------------------------------------------
def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


async def search_queue(conn: AsyncConnection, states: tuple[str, ...], text: str, limit: int,
                       offset: int) -> tuple[list[dict], int]:
    """spool.console.search_queue on PostgreSQL (ILIKE for SQLite's case-insensitive LIKE)."""
    for s in states:
        QueueState(s)
    where, params = "m.state = ANY(%s)", [list(states)]
    text = text.strip()
    if text:
        like = "%" + _like(text) + "%"
        where += (" AND (lower(m.queue_id) = lower(%s) OR m.queue_id ILIKE %s"
                  " OR m.mail_from ILIKE %s OR EXISTS (SELECT 1 FROM recipients r"
                  " WHERE r.queue_id = m.queue_id AND r.address ILIKE %s))")
        params += [text, _like(text) + "%", like, like]
    total = await _scalar(conn, f"SELECT count(*) FROM messages m WHERE {where}", params)
    rows = await _all(
        conn, "SELECT m.queue_id, m.state, m.hold_reason, m.mail_from, m.size,"
        f" {_secs('m.arrived_at')}, m.attempts, m.last_error,"
        " (SELECT count(*) FROM recipients r WHERE r.queue_id = m.queue_id) AS recipients,"
        " (SELECT address FROM recipients r WHERE r.queue_id = m.queue_id ORDER BY idx LIMIT 1)"
        f" AS first_rcpt FROM messages m WHERE {where} ORDER BY m.seq LIMIT %s OFFSET %s",
        [*params, limit, offset])
    return rows, total


# -- continuity: commands and the replay ----------------------------------------------------------
async def get_command(conn: AsyncConnection, command_id: int) -> dict | None:
    return await _one(conn, f"SELECT id, at, command, reason, actor, {_secs('done_at')}, result"
                            " FROM continuity_commands WHERE id=%s", (command_id,))


async def replay_progress(conn: AsyncConnection, replay_id: str, since: float) -> dict:
    """spool.continuity.replay_progress, ``now`` the database's clock."""
    cur = await conn.execute("SELECT state, count(*) FROM messages WHERE replay_id=%s GROUP BY state",
                             (replay_id,))
    by_state = dict(await cur.fetchall())
    remaining = await _scalar(conn, "SELECT count(*) FROM messages WHERE state='hold'"
                                    " AND hold_reason='continuity'")
    now = await _scalar(conn, f"SELECT {NOW}")
    done = by_state.get("delivered", 0) + by_state.get("bounced", 0)
    in_flight = by_state.get("incoming", 0) + by_state.get("active", 0)
    rate = done / max(now - since, 1e-6)
    return {"done": done, "deferred": by_state.get("deferred", 0), "in_flight": in_flight,
            "remaining": remaining, "rate": rate,
            "eta_seconds": (remaining + in_flight) / rate if rate > 0 else None}


# -- drills -------------------------------------------------------------------------------------
async def request_drill(conn: AsyncConnection, drill_id: str, recipients: list[str], actor: str) -> None:
    await conn.execute(f"INSERT INTO drills (id, recipients, actor, state, requested_at)"
                       f" VALUES (%s, %s, %s, 'requested', {NOW})", (drill_id, Jsonb(recipients), actor))


async def get_drill(conn: AsyncConnection, drill_id: str) -> dict | None:
    return await _one(conn, "SELECT * FROM drills WHERE id=%s", (drill_id,))


async def running_drill(conn: AsyncConnection) -> dict | None:
    """The running drill with ``age``: seconds since it started, on the database's clock."""
    return await _one(conn, f"SELECT *, {NOW} - started_at AS age FROM drills WHERE state='running'")


async def recent_drills(conn: AsyncConnection, limit: int) -> list[dict]:
    return await _all(conn, "SELECT * FROM drills ORDER BY requested_at DESC, id DESC LIMIT %s", (limit,))


async def start_drill(conn: AsyncConnection, drill_id: str, node: str) -> dict:
    """``requested`` → ``running`` (database clock); the row, with ``age`` (0.0). ValueError if
    not requested; psycopg.errors.UniqueViolation if another drill runs (drills_one_running)."""
    row = await _one(conn, f"UPDATE drills SET state='running', started_at={NOW}, node=%s"
                           " WHERE id=%s AND state='requested' RETURNING *, 0.0::float8 AS age",
                     (node, drill_id))
    if row is None:
        raise ValueError(f"drill {drill_id} is not waiting to start")
    return row


async def refuse_drill(conn: AsyncConnection, drill_id: str, why: str) -> None:
    await conn.execute(f"UPDATE drills SET state='refused', ended_at={NOW}, end_reason=%s"
                       " WHERE id=%s AND state='requested'", (why, drill_id))


async def end_drill(conn: AsyncConnection, drill_id: str, why: str, to_continuity: bool) -> int:
    """spool.drill.end: 0 and nothing done if the drill is not running."""
    cur = await conn.execute(f"UPDATE drills SET state='ended', ended_at={NOW}, end_reason=%s"
                             " WHERE id=%s AND state='running'", (why, drill_id))
    if cur.rowcount != 1:
        return 0
    n = await release_drill_holds(conn, drill_id, to_continuity)
    await conn.execute("UPDATE drills SET released=%s WHERE id=%s", (n, drill_id))
    return n


async def release_drill_holds(conn: AsyncConnection, replay_id: str, to_continuity: bool) -> int:
    """spool.drill.release_held: every drill hold released (stamped ``replay_id``) or made a
    continuity hold (its hold and its start go on)."""
    if to_continuity:
        cur = await conn.execute("UPDATE messages SET hold_reason='continuity', updated_at=clock_timestamp()"
                                 " WHERE state='hold' AND hold_reason=%s", (DRILL_HOLD,))
        return cur.rowcount
    cur = await conn.execute(
        "UPDATE messages m SET state='incoming', hold_reason='', next_attempt_at=c.t, updated_at=c.t,"
        " held_seconds = m.held_seconds + greatest(0, extract(epoch FROM c.t - coalesce(m.held_at, c.t)))::float8,"
        " held_at=NULL, replay_id=%s, released_at=c.t FROM (SELECT clock_timestamp() AS t) c"
        " WHERE m.state='hold' AND m.hold_reason=%s", (replay_id, DRILL_HOLD))
    return cur.rowcount


async def count_drill_held(conn: AsyncConnection) -> int:
    return await _scalar(conn, "SELECT count(*) FROM messages WHERE state='hold' AND hold_reason=%s",
                         (DRILL_HOLD,))


async def drill_audit(conn: AsyncConnection, node: str, action: str, drill_id: str, *, actor: str,
                      address: str = "", result: str = "ok", detail: str = "") -> int:
    return await _audit_row(conn, node, action, address=address, actor=actor, result=result,
                            detail=f"{drill_id} {detail}".strip())


async def drill_audit_rows(conn: AsyncConnection, drill_id: str) -> list[dict]:
    return await _all(conn, "SELECT * FROM webmail_audit WHERE action LIKE 'drill%%'"
                            " AND (detail = %s OR starts_with(detail, %s)) ORDER BY id",
                      (drill_id, drill_id + " "))


async def drill_message(conn: AsyncConnection, queue_id: str, mailbox: str) -> dict | None:
    """spool.drill.message_facts on PostgreSQL."""
    m = await _one(conn, f"SELECT state, hold_reason, replay_id, {_secs('arrived_at')},"
                         f" {_secs('held_at')}, {_secs('released_at')} FROM messages WHERE queue_id=%s",
                   (queue_id,))
    if m is None:
        return None
    m["rcpt"] = await _one(conn, f"SELECT state, attempts, {_secs('updated_at')}, remote_host"
                                 " FROM recipients WHERE queue_id=%s ORDER BY idx LIMIT 1", (queue_id,))
    m["inbox"] = await _one(conn, "SELECT id, filed_at FROM mailbox_messages WHERE mailbox=%s"
                                  " AND queue_id=%s AND folder='inbox'", (mailbox, queue_id))
    return m


__all__ = ["timeline", "probe_history", "search_queue", "get_command", "replay_progress",
           "request_drill", "get_drill", "running_drill", "recent_drills", "start_drill",
           "refuse_drill", "end_drill", "release_drill_holds", "count_drill_held", "drill_audit",
           "drill_audit_rows", "drill_message"]
