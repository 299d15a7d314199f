"""Read queries of the admin console (webmail.admin): probe history and continuity audit over a
time window (the timeline), the queue by state with search (the queue pages).

Times are unix seconds (wall clock); windows are half-open ``[start, end)``. Every function is
read-only and takes a reader connection (``Spool.read(fn, ...)``); writes of the console go
through the existing spool functions (spool.continuity, spool.transitions, spool.accounts).
"""
from __future__ import annotations

import sqlite3

from spool.states import QueueState

#: States a queue listing shows by default: everything not finished.
LIVE_STATES = ("incoming", "active", "deferred", "hold", "corrupt")


# -- the timeline -------------------------------------------------------------------------------
def probe_results_between(conn: sqlite3.Connection, start: float, end: float) -> list[dict]:
    """Probe results with ``start <= at < end``, ordered by (probe, at): dicts with probe, ok
    (0/1), at, latency (seconds), detail, critical."""
    return [dict(r) for r in conn.execute(
        "SELECT probe, ok, at, latency, detail, critical FROM probe_results"
        " WHERE at >= ? AND at < ? ORDER BY probe, at, id", (start, end))]


def probe_names(conn: sqlite3.Connection) -> list[str]:
    """Every probe with any kept result, sorted (a probe with no result in a window still gets
    its lane)."""
    return [r[0] for r in conn.execute("SELECT DISTINCT probe FROM probe_results ORDER BY probe")]


def continuity_audit_between(conn: sqlite3.Connection, start: float, end: float,
                             limit: int | None = None) -> list[dict]:
    """continuity_audit rows (state changes, and admin commands that changed nothing: src =
    dst) with ``start <= at < end``, oldest first (with ``limit``: the newest ``limit`` of
    them): dicts with id, at, src, dst, actor, reason, event_id, command_id, and ``command``
    (the continuity_commands.command, '' for the engine's own decisions)."""
    rows = [dict(r) for r in conn.execute(
        "SELECT a.*, coalesce(c.command, '') AS command FROM continuity_audit a"
        " LEFT JOIN continuity_commands c ON c.id = a.command_id"
        " WHERE a.at >= ? AND a.at < ? ORDER BY a.at DESC, a.id DESC LIMIT ?",
        (start, end, -1 if limit is None else limit))]
    rows.reverse()
    return rows


def count_audit_between(conn: sqlite3.Connection, start: float, end: float) -> int:
    """How many continuity_audit rows have ``start <= at < end``."""
    return conn.execute("SELECT count(*) FROM continuity_audit WHERE at >= ? AND at < ?",
                        (start, end)).fetchone()[0]


def mode_changes_between(conn: sqlite3.Connection, start: float, end: float) -> list[dict]:
    """The state changes (audit rows with src <> dst) with ``start <= at < end``, oldest first:
    dicts with at, src, dst. All of them, however many: the timeline's bands need each one."""
    return [dict(r) for r in conn.execute(
        "SELECT at, src, dst FROM continuity_audit WHERE at >= ? AND at < ? AND src <> dst"
        " ORDER BY at, id", (start, end))]


def mode_at(conn: sqlite3.Connection, at: float) -> str | None:
    """The continuity mode in force at ``at``: the destination of the last audit record before
    it; else the source of the first one after it; else the persisted mode; None if the engine
    never ran."""
    row = conn.execute("SELECT dst FROM continuity_audit WHERE at < ? ORDER BY at DESC, id DESC"
                       " LIMIT 1", (at,)).fetchone()
    if row is not None:
        return row[0]
    row = conn.execute("SELECT src FROM continuity_audit WHERE at >= ? ORDER BY at, id LIMIT 1",
                       (at,)).fetchone()
    if row is not None:
        return row[0]
    row = conn.execute("SELECT mode FROM continuity_state WHERE id=1").fetchone()
    return row[0] if row else None


# -- the queue ----------------------------------------------------------------------------------
def _like(text: str) -> str:
    return "%" + text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def search_queue(conn: sqlite3.Connection, states: tuple[str, ...] = LIVE_STATES, text: str = "",
                 limit: int = 50, offset: int = 0) -> tuple[list[dict], int]:
    """One page of messages in ``states`` (QueueState values), oldest first, and the number of
    all matches. ``text`` (case-insensitive) matches a queue ID (whole or its start), the
    envelope sender or any envelope recipient (any part). Rows: queue_id, state, hold_reason,
    mail_from, size, arrived_at, attempts, last_error, recipients (count), first_rcpt.
    Raises ValueError for an unknown state."""
    for s in states:
        QueueState(s)
    marks = ",".join("?" * len(states))
    where, params = f"m.state IN ({marks})", list(states)
    text = text.strip()
    if text:
        where += (" AND (m.queue_id = ? COLLATE NOCASE OR m.queue_id LIKE ? ESCAPE '\\'"
                  " OR m.mail_from LIKE ? ESCAPE '\\' OR EXISTS (SELECT 1 FROM recipients r"
                  " WHERE r.queue_id = m.queue_id AND r.address LIKE ? ESCAPE '\\'))")
        like = _like(text)
        params += [text, _like(text)[1:], like, like]
    total = conn.execute(f"SELECT count(*) FROM messages m WHERE {where}", params).fetchone()[0]
    rows = conn.execute(
        "SELECT m.queue_id, m.state, m.hold_reason, m.mail_from, m.size, m.arrived_at, m.attempts,"
        " m.last_error, (SELECT count(*) FROM recipients r WHERE r.queue_id = m.queue_id) AS recipients,"
        " (SELECT address FROM recipients r WHERE r.queue_id = m.queue_id ORDER BY idx LIMIT 1)"
        f" AS first_rcpt FROM messages m WHERE {where} ORDER BY m.seq LIMIT ? OFFSET ?",
        [*params, limit, offset])
    return [dict(r) for r in rows], total


__all__ = ["LIVE_STATES", "probe_results_between", "probe_names", "continuity_audit_between",
           "count_audit_between", "mode_changes_between", "mode_at", "search_queue"]
