"""Spool side of continuity events: the persisted engine state, its audit trail, admin commands
queued by the CLI for the running gateway, and the continuity hold and its replay.

A message on continuity hold has ``state='hold'`` and ``hold_reason='continuity'``; an operator's
hold (``mailgate queue hold``: operator_hold) has ``hold_reason='operator'`` and is never released
by a replay. Replay releases continuity-held messages in arrival order (``seq``) back to
``incoming``, stamping ``replay_id`` (which recovering phase released it) and ``released_at``;
only those, while ``incoming`` or ``active``, are the replay's messages in flight (delivered,
bounced and deferred ones are settled: a deferred one retries on its own backoff). The
recipients table is the per-recipient ledger: a recipient already ``delivered`` is never sent
again, so nothing the downstream accepted before the event is replayed. Time spent on hold
(continuity or operator) is added to ``held_seconds`` and does not count against the queue
lifetime. Admin commands carry ``at`` (unix seconds, when queued); each gets exactly one audit
record (``continuity_audit.command_id`` is unique), applied, refused or expired.
Functions run inside the caller's write transaction unless they say otherwise.
"""
from __future__ import annotations

import sqlite3
import time

from spool.states import QueueState
from spool.transitions import move


def load_state(conn: sqlite3.Connection) -> dict | None:
    """The persisted engine state as a dict (columns of continuity_state), or None."""
    row = conn.execute("SELECT * FROM continuity_state WHERE id=1").fetchone()
    return dict(row) if row else None


def save_transition(conn: sqlite3.Connection, *, mode: str, since: float, origin: str, reason: str,
                    awaiting_confirm: bool, event_id: str, src: str, actor: str,
                    command_id: int | None = None, result: str = "") -> None:
    """Persist the new engine state and append the audit record, in one transaction; with
    ``command_id``, the admin command that caused it is marked done with ``result`` in the same
    transaction (so a crash can neither apply it twice nor audit it twice)."""
    now = time.time()
    conn.execute(
        "INSERT INTO continuity_state (id, mode, since, origin, reason, awaiting_confirm, event_id, updated_at)"
        " VALUES (1,?,?,?,?,?,?,?) ON CONFLICT(id) DO UPDATE SET mode=excluded.mode, since=excluded.since,"
        " origin=excluded.origin, reason=excluded.reason, awaiting_confirm=excluded.awaiting_confirm,"
        " event_id=excluded.event_id, updated_at=excluded.updated_at",
        (mode, since, origin, reason, int(awaiting_confirm), event_id, now))
    conn.execute("INSERT INTO continuity_audit (at, src, dst, actor, reason, event_id, command_id)"
                 " VALUES (?,?,?,?,?,?,?)", (since, src, mode, actor, reason, event_id, command_id))
    if command_id is not None:
        command_done(conn, command_id, result)


def audit_command(conn: sqlite3.Connection, command_id: int, *, mode: str, event_id: str, actor: str,
                  reason: str, result: str, at: float | None = None) -> None:
    """An admin command that changed nothing (refused, or expired before the gateway picked it
    up): one audit record (src = dst = the current mode) and the command marked done with
    ``result``, in one transaction."""
    at = time.time() if at is None else at
    conn.execute("INSERT INTO continuity_audit (at, src, dst, actor, reason, event_id, command_id)"
                 " VALUES (?,?,?,?,?,?,?)", (at, mode, mode, actor, reason, event_id, command_id))
    command_done(conn, command_id, result)


def audit(conn: sqlite3.Connection, limit: int = 50) -> list[dict]:
    """The newest ``limit`` audit records, newest first."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM continuity_audit ORDER BY id DESC LIMIT ?", (limit,))]


def queue_command(conn: sqlite3.Connection, command: str, reason: str, actor: str,
                  at: float | None = None) -> int:
    """Queue an admin command for the running gateway, stamped ``at`` (unix seconds, now by
    default: its age decides whether it expired); returns its id."""
    cur = conn.execute("INSERT INTO continuity_commands (at, command, reason, actor) VALUES (?,?,?,?)",
                       (time.time() if at is None else at, command, reason, actor))
    return cur.lastrowid


def pending_commands(conn: sqlite3.Connection) -> list[dict]:
    """Commands not applied yet, oldest first (the order they are applied in)."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM continuity_commands WHERE done_at IS NULL ORDER BY id")]


def command_done(conn: sqlite3.Connection, command_id: int, result: str) -> None:
    conn.execute("UPDATE continuity_commands SET done_at=?, result=? WHERE id=?",
                 (time.time(), result, command_id))


def get_command(conn: sqlite3.Connection, command_id: int) -> dict | None:
    row = conn.execute("SELECT * FROM continuity_commands WHERE id=?", (command_id,)).fetchone()
    return dict(row) if row else None


def replay_id(event_id: str, since: float) -> str:
    """The ID of the replay (one recovering phase) of ``event_id`` begun at ``since`` (unix
    seconds, the persisted EngineState.since): the same after a restart, new for each phase."""
    return f"{event_id}@{since:.6f}"


def release_held(conn: sqlite3.Connection, limit: int, now: float | None = None,
                 replay_id: str = "") -> list[str]:
    """Release up to ``limit`` continuity-held messages, oldest first, to ``incoming``, marked
    as released by ``replay_id`` at ``now`` (unix seconds)."""
    now = time.time() if now is None else now
    ids = [r[0] for r in conn.execute(
        "SELECT queue_id FROM messages WHERE state='hold' AND hold_reason='continuity'"
        " ORDER BY seq LIMIT ?", (limit,))]
    conn.executemany(
        "UPDATE messages SET state='incoming', hold_reason='', next_attempt_at=?, updated_at=?,"
        " held_seconds=held_seconds + max(0, ? - coalesce(held_at, ?)), held_at=NULL,"
        " replay_id=?, released_at=?"
        " WHERE queue_id=? AND state='hold' AND hold_reason='continuity'",
        [(now, now, now, now, replay_id, now, q) for q in ids])
    return ids


def operator_hold(conn: sqlite3.Connection, queue_id: str, now: float | None = None) -> str:
    """`mailgate queue hold`: put an incoming or deferred message on operator hold, or turn a
    continuity hold into an operator hold (the hold goes on, its start is kept), so that no
    replay releases it (a drill's hold too: spool.drill). Returns the state it left. Raises InvalidTransition (spool.states)."""
    now = time.time() if now is None else now
    row = conn.execute("SELECT state, hold_reason FROM messages WHERE queue_id=?", (queue_id,)).fetchone()
    if row is not None and row["state"] == "hold" and row["hold_reason"] in ("continuity", "drill"):
        conn.execute("UPDATE messages SET hold_reason='operator', updated_at=? WHERE queue_id=?"
                     " AND state='hold'", (now, queue_id))
        return "hold"
    left = move(conn, queue_id, (QueueState.INCOMING, QueueState.DEFERRED), QueueState.HOLD, now=now)
    conn.execute("UPDATE messages SET hold_reason='operator', held_at=? WHERE queue_id=?", (now, queue_id))
    return left.value


def operator_release(conn: sqlite3.Connection, queue_id: str, now: float | None = None) -> None:
    """`mailgate queue release`: a held message (operator or continuity hold) back to
    ``incoming``, due now, with its time on hold added to ``held_seconds``. Raises
    InvalidTransition if it is not on hold."""
    now = time.time() if now is None else now
    move(conn, queue_id, QueueState.HOLD, QueueState.INCOMING, next_attempt_at=now, now=now)
    conn.execute("UPDATE messages SET hold_reason='', held_seconds=held_seconds + max(0, ? - coalesce(held_at, ?)),"
                 " held_at=NULL WHERE queue_id=?", (now, now, queue_id))


def count_held(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM messages WHERE state='hold' AND hold_reason='continuity'").fetchone()[0]


def hold_due_now(conn: sqlite3.Connection, now: float | None = None) -> int:
    """Make every deferred message due now, so that the queue manager moves the ones for the
    downstream to continuity hold at once when an event starts. Returns the count."""
    now = time.time() if now is None else now
    return conn.execute("UPDATE messages SET next_attempt_at=? WHERE state='deferred'", (now,)).rowcount


#: How long probe results are kept (seconds): the admin console's timeline shows the last 7
#: days, and a day more is kept so that a window ending now is always full. Pruning is by age,
#: one indexed DELETE per new result (probe_results_at): at the default 10 s SMTP interval that
#: is about 69 000 rows per probe.
PROBE_KEEP_SECONDS = 8 * 86400.0


def record_probe(conn: sqlite3.Connection, probe: str, ok: bool, at: float, latency: float,
                 detail: str, critical: bool) -> None:
    """Keep a probe result (for `mailgate probes --history`, the admin API and the admin
    console's timeline); results of ``probe`` older than PROBE_KEEP_SECONDS before ``at`` are
    pruned."""
    conn.execute("INSERT INTO probe_results (probe, ok, at, latency, detail, critical) VALUES (?,?,?,?,?,?)",
                 (probe, int(ok), at, latency, detail[:500], int(critical)))
    conn.execute("DELETE FROM probe_results WHERE probe=? AND at < ?", (probe, at - PROBE_KEEP_SECONDS))


def probe_history(conn: sqlite3.Connection, latest_only: bool = True, limit: int = 50) -> list[dict]:
    """Latest result per probe, or the newest ``limit`` results of all probes."""
    if latest_only:
        sql = ("SELECT * FROM probe_results WHERE id IN (SELECT max(id) FROM probe_results GROUP BY probe)"
               " ORDER BY probe")
        return [dict(r) for r in conn.execute(sql)]
    return [dict(r) for r in conn.execute("SELECT * FROM probe_results ORDER BY id DESC LIMIT ?", (limit,))]


def replay_in_flight(conn: sqlite3.Connection, replay_id: str) -> int:
    """Messages released by the replay ``replay_id`` and not settled yet (incoming or active).
    Delivered, bounced and deferred ones are settled (a deferred one retries on its own
    backoff); leftovers of earlier replays and new mail are never counted, so none of them can
    stall the replay or keep it from ending."""
    return conn.execute(
        "SELECT count(*) FROM messages WHERE replay_id=? AND state IN ('incoming','active')",
        (replay_id,)).fetchone()[0]


def replay_progress(conn: sqlite3.Connection, replay_id: str, since: float,
                    now: float | None = None) -> dict:
    """Progress of the replay ``replay_id`` begun at ``since`` (unix seconds), from the queue
    itself: done (released and delivered or bounced), deferred (released, retrying on its own
    backoff), in flight, remaining (still held), rate (messages/s) and ETA (s)."""
    now = time.time() if now is None else now
    by_state = dict(conn.execute("SELECT state, count(*) FROM messages WHERE replay_id=? GROUP BY state",
                                 (replay_id,)).fetchall())
    done = by_state.get("delivered", 0) + by_state.get("bounced", 0)
    in_flight = by_state.get("incoming", 0) + by_state.get("active", 0)
    remaining = count_held(conn)
    rate = done / max(now - since, 1e-6)
    eta = (remaining + in_flight) / rate if rate > 0 else None
    return {"done": done, "deferred": by_state.get("deferred", 0), "in_flight": in_flight,
            "remaining": remaining, "rate": rate, "eta_seconds": eta}
