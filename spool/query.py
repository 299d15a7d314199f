"""Read-only queries of the spool: queue listing, one message, counts per state, message bytes.

Used by the delivery scheduler (bytes and envelope of a claimed message), `mailgate queue`, and
later the admin API and webmail. Reads ``messages``, ``recipients``, ``bodies``; writes nothing.
"""
from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from spool import bodyfiles as _bodyfiles
from spool.states import QueueState, RcptState


@dataclass(frozen=True)
class Recipient:
    idx: int
    address: str
    state: RcptState
    attempts: int
    reply_code: int | None
    reply_text: str
    remote_host: str


@dataclass(frozen=True)
class StoredMessage:
    """A message's envelope and queue record; ``data`` is None when not asked for or gone."""

    queue_id: str
    state: QueueState
    mail_from: str
    recipients: tuple[Recipient, ...]
    size: int
    smtputf8: bool
    body_8bit: bool
    is_dsn: bool
    arrived_at: float
    next_attempt_at: float
    attempts: int
    last_error: str
    client_addr: str
    client_helo: str
    data: bytes | None = None
    hold_reason: str = ""         # '' | 'operator' | 'continuity' | 'drill' (spool.drill)
    held_seconds: float = 0.0     # time spent on continuity hold (extends the queue lifetime)

    @property
    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state is RcptState.PENDING]


def get_message(conn: sqlite3.Connection, queue_id: str, with_data: bool = False) -> StoredMessage | None:
    """The message ``queue_id`` with its recipients (and bytes if ``with_data``), or None."""
    row = conn.execute("SELECT * FROM messages WHERE queue_id=?", (queue_id,)).fetchone()
    if row is None:
        return None
    rcpts = tuple(
        Recipient(r["idx"], r["address"], RcptState(r["state"]), r["attempts"], r["reply_code"],
                  r["reply_text"], r["remote_host"])
        for r in conn.execute("SELECT * FROM recipients WHERE queue_id=? ORDER BY idx", (queue_id,)))
    data = None
    if with_data:
        data = _bodyfiles.read_body(conn, queue_id)
    return StoredMessage(
        queue_id=row["queue_id"], state=QueueState(row["state"]), mail_from=row["mail_from"],
        recipients=rcpts, size=row["size"], smtputf8=bool(row["smtputf8"]),
        body_8bit=bool(row["body_8bit"]), is_dsn=bool(row["is_dsn"]), arrived_at=row["arrived_at"],
        next_attempt_at=row["next_attempt_at"], attempts=row["attempts"],
        last_error=row["last_error"], client_addr=row["client_addr"],
        client_helo=row["client_helo"], data=data, hold_reason=row["hold_reason"],
        held_seconds=row["held_seconds"])


def message_size(conn: sqlite3.Connection, queue_id: str) -> int | None:
    """The size in bytes of message ``queue_id``'s data as committed (its row, not its bytes), or
    None if there is no such message."""
    row = conn.execute("SELECT size FROM messages WHERE queue_id=?", (queue_id,)).fetchone()
    return None if row is None else row[0]


def list_messages(conn: sqlite3.Connection, states: tuple[QueueState, ...] | None = None,
                  limit: int = 1000) -> list[StoredMessage]:
    """Messages in ``states`` (default: every non-terminal state), oldest first, without bytes."""
    states = states or (QueueState.INCOMING, QueueState.ACTIVE, QueueState.DEFERRED,
                        QueueState.HOLD, QueueState.CORRUPT)
    marks = ",".join("?" * len(states))
    ids = [r[0] for r in conn.execute(
        f"SELECT queue_id FROM messages WHERE state IN ({marks}) ORDER BY seq LIMIT ?",
        (*[s.value for s in states], limit))]
    return [m for q in ids if (m := get_message(conn, q)) is not None]


def count_by_state(conn: sqlite3.Connection) -> dict[str, int]:
    """{state: number of messages} for every state (zeros included). Reads the per-state
    counters that triggers keep (migration 0012), not the messages: constant time at any size."""
    counts = {s.value: 0 for s in QueueState}
    counts.update(dict(conn.execute("SELECT state, n FROM queue_counts").fetchall()))
    return counts


def ping(conn: sqlite3.Connection) -> int:
    """A cheap read of the spool file (its schema version), for health checks: raises
    sqlite3.Error if the database cannot be read."""
    conn.execute("SELECT n FROM queue_counts LIMIT 1").fetchall()
    return conn.execute("PRAGMA user_version").fetchone()[0]


def next_due_at(conn: sqlite3.Connection) -> float | None:
    """Earliest next-attempt time (unix seconds) among incoming/deferred messages, or None."""
    row = conn.execute("SELECT min(next_attempt_at) FROM messages INDEXED BY messages_due_order"
                       " WHERE state IN ('incoming','deferred')").fetchone()
    return row[0]


def volume_since(conn: sqlite3.Connection, since: float) -> dict[str, int]:
    """What arrived since ``since`` (unix seconds): ``messages`` and their ``bytes`` in the queue
    (any state, as long as their records are kept), and ``mailbox_bytes`` of message copies filed
    into continuity mailboxes (each message's bytes once). For `mailgate doctor`'s disk estimate."""
    n, size = conn.execute("SELECT count(*), coalesce(sum(size), 0) FROM messages WHERE arrived_at >= ?",
                           (since,)).fetchone()
    boxed = conn.execute("SELECT coalesce(sum(size), 0) FROM (SELECT max(size) AS size FROM "
                         "mailbox_messages WHERE filed_at >= ? GROUP BY queue_id)", (since,)).fetchone()[0]
    return {"messages": n, "bytes": size, "mailbox_bytes": boxed}


__all__ = ["Recipient", "StoredMessage", "get_message", "list_messages", "count_by_state", "ping", "next_due_at",
           "volume_since"]
