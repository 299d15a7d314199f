"""Crash recovery, run once at start-up before any delivery worker (Postfix's qmgr does the same).

A message found ``active`` was being delivered when the previous process died: its recipients that
are still ``pending`` have not been confirmed by the next hop, so it goes back to ``incoming`` and
is attempted again (recipients already ``delivered`` are never sent again). A message whose bytes
are missing (no ``bodies`` row, or its body file gone: spool.bodyfiles) is moved to ``corrupt``,
never deleted. Body files no row names (a crash between the file's fsync and its row's commit,
or after a delete's commit and before the unlink) are removed (spool.bodyfiles.sweep).
"""
from __future__ import annotations

import json
import sqlite3
import time

from spool import bodyfiles


def requeue_interrupted(conn: sqlite3.Connection, now: float | None = None) -> dict[str, int]:
    """Requeue interrupted deliveries and set aside unreadable messages, inside the caller's write
    transaction. Returns counts: {"requeued": n, "corrupt": m} (and "orphan_files": k when
    body files were removed)."""
    now = time.time() if now is None else now
    directory = bodyfiles.body_dir(conn.execute("PRAGMA database_list").fetchone()[2])
    lost = bodyfiles.missing(conn, directory)
    corrupt = conn.execute(
        "UPDATE messages SET state='corrupt', updated_at=?, last_error='message bytes missing'"
        " WHERE state IN ('incoming','active','deferred','hold')"
        " AND (queue_id NOT IN (SELECT queue_id FROM bodies)"
        "      OR queue_id IN (SELECT value FROM json_each(?)))", (now, json.dumps(lost))).rowcount
    swept = bodyfiles.sweep(conn, directory, now)
    requeued = conn.execute(
        "UPDATE messages SET state='incoming', next_attempt_at=?, updated_at=? WHERE state='active'",
        (now, now)).rowcount
    out = {"requeued": requeued, "corrupt": corrupt}
    if swept:
        out["orphan_files"] = swept
    return out


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
