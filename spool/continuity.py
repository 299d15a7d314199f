"""Spool side of continuity events: the persisted engine state, its audit trail, admin commands
queued by the CLI for the running gateway, and the continuity hold and its replay.

A message on continuity hold has ``state='hold'`` and ``hold_reason='continuity'``; an operator's
hold (``mailgate queue hold``) has ``hold_reason='operator'`` and is never released by a replay.
Replay releases continuity-held messages in arrival order (``seq``) back to ``incoming``; the
recipients table is the per-recipient ledger: a recipient already ``delivered`` is never sent
again, so nothing the downstream accepted before the event is replayed. Time spent on hold is
added to ``held_seconds`` and does not count against the queue lifetime.
Functions run inside the caller's write transaction unless they say otherwise.
"""
from __future__ import annotations

import sqlite3
import time


def load_state(conn: sqlite3.Connection) -> dict | None:
    """The persisted engine state as a dict (columns of continuity_state), or None."""
    row = conn.execute("SELECT * FROM continuity_state WHERE id=1").fetchone()
    return dict(row) if row else None


def save_transition(conn: sqlite3.Connection, *, mode: str, since: float, origin: str, reason: str,
                    awaiting_confirm: bool, event_id: str, src: str, actor: str) -> None:
    """Persist the new engine state and append the audit record, in one transaction."""
    now = time.time()
    conn.execute(
        "INSERT INTO continuity_state (id, mode, since, origin, reason, awaiting_confirm, event_id, updated_at)"
        " VALUES (1,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET mode=excluded.mode, since=excluded.since,"
        " origin=excluded.origin, reason=excluded.reason, awaiting_confirm=excluded.awaiting_confirm,"
        " event_id=excluded.event_id, updated_at=excluded.updated_at",
        (mode, since, origin, reason, int(awaiting_confirm), event_id, now))
    conn.execute("INSERT INTO continuity_audit (at, src, dst, actor, reason, event_id) VALUES (?,?,?,?,?,?)",
                 (since, src, mode, actor, reason, event_id))


def audit(conn: sqlite3.Connection, limit: int = 50) -> list[dict]:
    """The newest ``limit`` audit records, newest first."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM continuity_audit ORDER BY id DESC LIMIT ?", (limit,))]


def queue_command(conn: sqlite3.Connection, command: str, reason: str, actor: str) -> int:
    """Queue an admin command for the running gateway; returns its id."""
    cur = conn.execute("INSERT INTO continuity_commands (at, command, reason, actor) VALUES (?,?,?,?)",
                       (time.time(), command, reason, actor))
    return cur.lastrowid


def pending_commands(conn: sqlite3.Connection) -> list[dict]:
    return [dict(r) for r in conn.execute(
        "SELECT * FROM continuity_commands WHERE done_at IS NULL ORDER BY id")]


def command_done(conn: sqlite3.Connection, command_id: int, result: str) -> None:
    conn.execute("UPDATE continuity_commands SET done_at=?, result=? WHERE id=?",
                 (time.time(), result, command_id))


def get_command(conn: sqlite3.Connection, command_id: int) -> dict | None:
    row = conn.execute("SELECT * FROM continuity_commands WHERE id=?", (command_id,)).fetchone()
    return dict(row) if row else None


def release_held(conn: sqlite3.Connection, limit: int, now: float | None = None) -> list[str]:
    """Release up to ``limit`` continuity-held messages, oldest first, to ``incoming``."""
    now = time.time() if now is None else now
    ids = [r[0] for r in conn.execute(
        "SELECT queue_id FROM messages WHERE state='hold' AND hold_reason='continuity'"
        " ORDER BY seq LIMIT ?", (limit,))]
    conn.executemany(
        "UPDATE messages SET state='incoming', hold_reason='', next_attempt_at=?, updated_at=?,"
        " held_seconds=held_seconds + max(0, ? - coalesce(held_at, ?)), held_at=NULL"
        " WHERE queue_id=? AND state='hold' AND hold_reason='continuity'",
        [(now, now, now, now, q) for q in ids])
    return ids


def count_held(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM messages WHERE state='hold' AND hold_reason='continuity'").fetchone()[0]


def hold_due_now(conn: sqlite3.Connection, now: float | None = None) -> int:
    """Make every deferred message due now, so that the queue manager moves the ones for the
    downstream to continuity hold at once when an event starts. Returns the count."""
    now = time.time() if now is None else now
    return conn.execute("UPDATE messages SET next_attempt_at=? WHERE state='deferred'", (now,)).rowcount


#: Probe results kept per probe (older ones are pruned as new ones arrive).
PROBE_HISTORY = 200


def record_probe(conn: sqlite3.Connection, probe: str, ok: bool, at: float, latency: float,
                 detail: str, critical: bool) -> None:
    """Keep a probe result (for `mailgate probes --history` and the admin API)."""
    conn.execute("INSERT INTO probe_results (probe, ok, at, latency, detail, critical) VALUES (?,?,?,?,?,?)",
                 (probe, int(ok), at, latency, detail[:500], int(critical)))
    conn.execute("DELETE FROM probe_results WHERE probe=? AND id <= (SELECT id FROM probe_results"
                 " WHERE probe=? ORDER BY id DESC LIMIT 1 OFFSET ?)", (probe, probe, PROBE_HISTORY))


def probe_history(conn: sqlite3.Connection, latest_only: bool = True, limit: int = 50) -> list[dict]:
    """Latest result per probe, or the newest ``limit`` results of all probes."""
    if latest_only:
        sql = ("SELECT * FROM probe_results WHERE id IN (SELECT max(id) FROM probe_results GROUP BY probe)"
               " ORDER BY probe")
        return [dict(r) for r in conn.execute(sql)]
    return [dict(r) for r in conn.execute("SELECT * FROM probe_results ORDER BY id DESC LIMIT ?", (limit,))]


def replay_in_flight(conn: sqlite3.Connection) -> int:
    """Released messages not finished yet (incoming, active or deferred after a hold): new mail
    arriving meanwhile is not counted, so it neither slows the replay nor delays its end."""
    return conn.execute(
        "SELECT count(*) FROM messages WHERE state IN ('incoming','active','deferred') AND held_seconds > 0"
    ).fetchone()[0]


def replay_progress(conn: sqlite3.Connection, since: float, now: float | None = None) -> dict:
    """Replay progress since ``since`` (when recovering began), from the queue itself: done
    (released and finished), in flight, remaining (still held), rate (messages/s) and ETA (s)."""
    now = time.time() if now is None else now
    done = conn.execute(
        "SELECT count(*) FROM messages WHERE held_seconds > 0 AND state IN ('delivered','bounced')"
        " AND updated_at >= ?", (since,)).fetchone()[0]
    in_flight = replay_in_flight(conn)
    remaining = count_held(conn)
    rate = done / max(now - since, 1e-6)
    eta = (remaining + in_flight) / rate if rate > 0 else None
    return {"done": done, "in_flight": in_flight, "remaining": remaining, "rate": rate, "eta_seconds": eta}
