"""Crash recovery, run once at start-up before any delivery worker (Postfix's qmgr does the same).

A message found ``active`` was being delivered when the previous process died: its recipients that
are still ``pending`` have not been confirmed by the next hop, so it goes back to ``incoming`` and
is attempted again (recipients already ``delivered`` are never sent again). A message whose bytes
are missing is moved to ``corrupt``, never deleted.
"""
from __future__ import annotations

import sqlite3
import time


def requeue_interrupted(conn: sqlite3.Connection, now: float | None = None) -> dict[str, int]:
    """Requeue interrupted deliveries and set aside unreadable messages, inside the caller's write
    transaction. Returns counts: {"requeued": n, "corrupt": m}."""
    now = time.time() if now is None else now
    corrupt = conn.execute(
        "UPDATE messages SET state='corrupt', updated_at=?, last_error='message bytes missing'"
        " WHERE state IN ('incoming','active','deferred','hold')"
        " AND queue_id NOT IN (SELECT queue_id FROM bodies)", (now,)).rowcount
    requeued = conn.execute(
        "UPDATE messages SET state='incoming', next_attempt_at=?, updated_at=? WHERE state='active'",
        (now, now)).rowcount
    return {"requeued": requeued, "corrupt": corrupt}


def recover(conn: sqlite3.Connection, now: float | None = None) -> dict[str, int]:
    """requeue_interrupted() in a transaction of its own (for a connection in autocommit mode)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = requeue_interrupted(conn, now)
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return out
