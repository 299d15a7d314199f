"""Continuity mailboxes: the per-user store the webmail reads during a continuity event.

Written in the same transaction that puts a message on continuity hold (``file_message``), so a
held message is always readable by its recipients. One row per (mailbox, message) in
``mailbox_messages`` carries the metadata, ``mailbox_bodies`` one copy of the bytes, and the FTS5
table ``mailbox_fts`` (rowid = mailbox_messages.id) the searchable text. Every read takes the
owner's mailbox address and filters on it: one user can never read another user's mail
(MISSION.md, multi-tenant privacy).

Mail delivered to local mailboxes is filed too when ``continuity.journal = "all"`` (spool.journal):
such an entry is "pending" (``indexed`` 0) until the background indexer has written its headers
and FTS row, and its bytes are the queue's own copy (``bodies``), not a row of mailbox_bodies.
"""
from __future__ import annotations

import re
import sqlite3
import time
from dataclasses import dataclass, field

from spool import journal as _journal

#: Most entries one ``purge`` call deletes: one bounded write transaction (docs/continuity.md).
PURGE_BATCH = 200


@dataclass(frozen=True)
class FilingEntry:
    """One message to file. ``mailboxes`` maps each owner (case-folded) to the envelope
    recipient that reached it. The text fields come from gateway.continuity.filing."""

    queue_id: str
    data: bytes
    mailboxes: dict[str, str]
    envelope_from: str = ""
    event_id: str = ""
    from_header: str = ""
    to_header: str = ""
    cc_header: str = ""
    subject: str = ""
    date_header: str = ""
    message_id: str = ""
    has_attachments: bool = False
    body_text: str = ""
    folder: str = "inbox"          # inbox | sent (a copy of what the owner sent from the webmail)
    extra: dict = field(default_factory=dict)


def file_message(conn: sqlite3.Connection, e: FilingEntry, now: float | None = None) -> int:
    """File ``e`` into each of its mailboxes (idempotent per (mailbox, queue_id)); return how
    many mailbox rows were added. Runs in the caller's write transaction."""
    now = time.time() if now is None else now
    conn.execute("INSERT OR IGNORE INTO mailbox_bodies (queue_id, data) VALUES (?, ?)", (e.queue_id, e.data))
    added = 0
    for owner, via in e.mailboxes.items():
        cur = conn.execute(
            "INSERT OR IGNORE INTO mailbox_messages (mailbox, queue_id, event_id, filed_at, envelope_from,"
            " envelope_rcpt, from_header, to_header, cc_header, subject, date_header, message_id, size,"
            " has_attachments, folder) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (owner, e.queue_id, e.event_id, now, e.envelope_from, via, e.from_header, e.to_header,
             e.cc_header, e.subject, e.date_header, e.message_id, len(e.data), int(e.has_attachments),
             e.folder))
        if cur.rowcount:
            conn.execute("INSERT INTO mailbox_fts (rowid, subject, sender, recipients, body) VALUES (?,?,?,?,?)",
                         (cur.lastrowid, e.subject, f"{e.from_header} {e.envelope_from}",
                          f"{e.to_header} {e.cc_header}", e.body_text))
            added += 1
    return added


_COLUMNS = ("id, mailbox, queue_id, event_id, filed_at, envelope_from, envelope_rcpt, from_header,"
            " to_header, cc_header, subject, date_header, message_id, size, has_attachments, seen,"
            " folder, deleted, indexed")


def list_mailbox(conn: sqlite3.Connection, mailbox: str, limit: int = 50, offset: int = 0,
                 folder: str | None = None) -> list[dict]:
    """The owner's messages, newest first, without bytes; only ``folder``'s (inbox | sent) and
    not deleted when ``folder`` is given. A pending journal entry comes with its header fields
    parsed now (spool.journal.fill_headers)."""
    if folder is None:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM mailbox_messages WHERE mailbox=? ORDER BY filed_at DESC, id DESC"
            " LIMIT ? OFFSET ?", (mailbox.casefold(), limit, offset))
    else:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM mailbox_messages WHERE mailbox=? AND folder=? AND deleted=0"
            " ORDER BY filed_at DESC, id DESC LIMIT ? OFFSET ?", (mailbox.casefold(), folder, limit, offset))
    return [dict(r) if r["indexed"] else _journal.fill_headers(conn, dict(r)) for r in rows]


def get_message(conn: sqlite3.Connection, mailbox: str, message_id: int, with_data: bool = True) -> dict | None:
    """One message of the owner's mailbox (None if it is not theirs or does not exist)."""
    row = conn.execute(f"SELECT {_COLUMNS} FROM mailbox_messages WHERE id=? AND mailbox=?",
                       (message_id, mailbox.casefold())).fetchone()
    if row is None:
        return None
    out = dict(row) if row["indexed"] else _journal.fill_headers(conn, dict(row))
    if with_data:   # the held copy, else the queue's (a journal entry); None if both are gone
        out["data"] = _journal.message_data(conn, out["queue_id"])
    return out


_WORD = re.compile(r"\w+", re.UNICODE)


def search(conn: sqlite3.Connection, mailbox: str, query: str, limit: int = 50) -> list[dict]:
    """Full-text search in the owner's mailbox only; every word of ``query`` must match (prefix
    match on the last one). Query syntax is never passed to FTS5 raw: words only."""
    words = _WORD.findall(query)
    if not words:
        return []
    fts = " ".join(f'"{w}"' for w in words[:-1]) + (" " if len(words) > 1 else "") + f'"{words[-1]}"*'
    return [dict(r) for r in conn.execute(
        f"SELECT {', '.join('m.' + c.strip() for c in _COLUMNS.split(','))} FROM mailbox_fts f"
        " JOIN mailbox_messages m ON m.id = f.rowid WHERE mailbox_fts MATCH ? AND m.mailbox=?"
        " ORDER BY f.rank LIMIT ?", (fts, mailbox.casefold(), limit))]


def mark_seen(conn: sqlite3.Connection, mailbox: str, message_id: int, seen: bool = True) -> bool:
    return conn.execute("UPDATE mailbox_messages SET seen=? WHERE id=? AND mailbox=?",
                        (int(seen), message_id, mailbox.casefold())).rowcount == 1


def counts(conn: sqlite3.Connection) -> dict[str, int]:
    """{mailbox: number of messages} over all mailboxes (for the admin)."""
    return dict(conn.execute("SELECT mailbox, count(*) FROM mailbox_messages GROUP BY mailbox").fetchall())


def purge(conn: sqlite3.Connection, before: float, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` mailbox entries filed before ``before`` (unix seconds), oldest
    first, with their FTS rows, and the bytes no entry refers to any more: the held copy
    (mailbox_bodies) and the queue's copy of a finished (delivered or bounced) message. Returns
    the number of entries deleted; call again while it returns ``limit`` (one bounded write
    transaction per call: gateway.continuity.journal.purge_expired does)."""
    rows = conn.execute("SELECT id, queue_id FROM mailbox_messages WHERE filed_at < ?"
                        " ORDER BY filed_at LIMIT ?", (before, limit)).fetchall()
    ids = [(r[0],) for r in rows]
    conn.executemany("DELETE FROM mailbox_fts WHERE rowid=?", ids)
    conn.executemany("DELETE FROM mailbox_messages WHERE id=?", ids)
    for q in {r[1] for r in rows}:
        if conn.execute("SELECT 1 FROM mailbox_messages WHERE queue_id=? LIMIT 1", (q,)).fetchone():
            continue
        conn.execute("DELETE FROM mailbox_bodies WHERE queue_id=?", (q,))
        conn.execute("DELETE FROM bodies WHERE queue_id=? AND EXISTS (SELECT 1 FROM messages"
                     " WHERE queue_id=? AND state IN ('delivered','bounced'))", (q, q))
    return len(ids)
