"""Claims with fencing tokens on the SQLite spool: taking due messages, renewing, requeueing
expired claims, and checking that a claim is still the current one.

A claim moves a due message (``incoming``, or ``deferred`` whose time has come) to ``active`` and
gives it a token from ``claim_seq`` (a counter that only grows), an owner and an expiry (unix
seconds, local clock: one node). Every write of an outcome names its token and is refused
(spool.states.StaleClaim) unless the message is still ``active`` under that token. Runs inside a
write transaction opened by the caller (the writer thread, or the CLI). Reads and writes
``messages.state``, ``claim_token``, ``claim_owner``, ``claim_expires`` and ``claim_seq``.
"""
from __future__ import annotations

import sqlite3
import time

from spool.states import Claim, StaleClaim

#: Seconds a claim lasts unless renewed (CLUSTER-NOTES: claims 60 s, renewed every 20 s).
CLAIM_TTL = 60.0


def claim(conn: sqlite3.Connection, limit: int, *, ttl: float = CLAIM_TTL, owner: str = "",
          now: float | None = None) -> list[Claim]:
    """Claim up to ``limit`` due messages, oldest first (next attempt time, then arrival); return
    their claims in that order, each carrying the message's ``size`` in bytes (read with its
    row, so the queue manager needs no read of its own before its memory budget). ``ttl`` is in
    seconds."""
    now = time.time() if now is None else now
    rows = conn.execute(
        "SELECT queue_id, size FROM messages INDEXED BY messages_due_order"   # an index walk (0012)
        " WHERE state IN ('incoming','deferred') AND next_attempt_at<=?"
        " ORDER BY next_attempt_at, seq LIMIT ?", (now, limit)).fetchall()
    if not rows:
        return []
    last = conn.execute("UPDATE claim_seq SET last = last + ? WHERE id = 1 RETURNING last",
                        (len(rows),)).fetchone()[0]
    out = [Claim(q, last - len(rows) + 1 + i, now + ttl, size)
           for i, (q, size) in enumerate(rows)]
    conn.executemany(
        "UPDATE messages SET state='active', claim_token=?, claim_owner=?, claim_expires=?, updated_at=?"
        " WHERE queue_id=? AND state IN ('incoming','deferred')",
        [(c.token, owner, c.expires_at, now, c.queue_id) for c in out])
    return out


def renew(conn: sqlite3.Connection, claims: list[Claim], *, ttl: float = CLAIM_TTL,
          now: float | None = None) -> list[Claim]:
    """Extend each claim still current to ``now + ttl``; return those (with their new expiry).
    A claim left out was lost (expired and requeued, or moved by an operator)."""
    now = time.time() if now is None else now
    out = []
    for c in claims:
        cur = conn.execute("UPDATE messages SET claim_expires=? WHERE queue_id=? AND claim_token=?"
                           " AND state='active'", (now + ttl, c.queue_id, c.token))
        if cur.rowcount == 1:
            out.append(Claim(c.queue_id, c.token, now + ttl))
    return out


def requeue_expired(conn: sqlite3.Connection, now: float | None = None) -> int:
    """Return messages whose claim has expired to ``incoming`` (due now); return how many. Their
    tokens are no longer current: the late owner's outcome is refused (StaleClaim)."""
    now = time.time() if now is None else now
    return conn.execute(
        "UPDATE messages SET state='incoming', next_attempt_at=?, updated_at=? WHERE state='active'"
        " AND claim_expires IS NOT NULL AND claim_expires <= ?", (now, now, now)).rowcount


def check_current(conn: sqlite3.Connection, queue_id: str, token: int) -> None:
    """Raise StaleClaim unless ``queue_id`` is ``active`` under claim ``token``."""
    row = conn.execute("SELECT 1 FROM messages WHERE queue_id=? AND state='active' AND claim_token=?",
                       (queue_id, token)).fetchone()
    if row is None:
        raise StaleClaim(queue_id, token)


__all__ = ["CLAIM_TTL", "claim", "renew", "requeue_expired", "check_current"]
