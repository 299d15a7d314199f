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


def get_message(conn: sqlite3.Connection, mailbox: str, message_id: int, with_data: bool = True, *,
                folder: str | None = None, include_deleted: bool = True) -> dict | None:
    """One message of the owner's mailbox (None if it is not theirs or does not exist, or, when
    given, not in ``folder`` or deleted while ``include_deleted`` is False). ``data`` is the
    stored bytes (None if they are gone)."""
    sql = f"SELECT {_COLUMNS} FROM mailbox_messages WHERE id=? AND mailbox=?"
    args: list = [message_id, mailbox.casefold()]
    if folder is not None:
        sql += " AND folder=?"
        args.append(folder)
    if not include_deleted:
        sql += " AND deleted=0"
    row = conn.execute(sql, args).fetchone()
    if row is None:
        return None
    out = dict(row) if row["indexed"] else _journal.fill_headers(conn, dict(row))
    if with_data:   # the held copy, else the queue's (a journal entry); None if both are gone
        out["data"] = _journal.message_data(conn, out["queue_id"])
    return out


_WORD = re.compile(r"\w+", re.UNICODE)


def _fts_query(query: str) -> str | None:
    """Words of ``query`` as an FTS5 query (each word quoted, prefix match on the last), or None."""
    words = _WORD.findall(query)
    if not words:
        return None
    words = words[:20]
    return " ".join(f'"{w}"' for w in words[:-1]) + (" " if len(words) > 1 else "") + f'"{words[-1]}"*'


def search(conn: sqlite3.Connection, mailbox: str, query: str, limit: int = 50) -> list[dict]:
    """Full-text search in the owner's mailbox only; every word of ``query`` must match (prefix
    match on the last one). Query syntax is never passed to FTS5 raw: words only."""
    fts = _fts_query(query)
    if fts is None:
        return []
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


# -- the webmail's views -----------------------------------------------------------------------
PER_PAGE = 50
FOLDERS = ("inbox", "sent")
#: Marker characters around matches in search_page() snippets (private-use code points; the
#: webmail splits on them, escapes each run and wraps matches in <mark>).
MARK_START, MARK_END = "\ue000", "\ue001"


def folder_page(conn: sqlite3.Connection, mailbox: str, folder: str, page: int = 1,
                per_page: int = PER_PAGE) -> dict:
    """One page of a folder (inbox | sent) of the owner's mailbox, newest first (filing time),
    without deleted messages and without bytes (a journal entry not yet indexed comes with its
    header fields parsed now, as list_mailbox): {"rows": [...], "total": messages in the folder,
    "unread": unseen ones, "page": the page shown (clamped to 1..pages), "pages": >= 1}."""
    owner = mailbox.casefold()
    total, unread = conn.execute(
        "SELECT count(*), coalesce(sum(seen=0), 0) FROM mailbox_messages WHERE mailbox=? AND folder=?"
        " AND deleted=0", (owner, folder)).fetchone()
    pages = max(1, -(-total // per_page))
    page = min(max(1, int(page)), pages)
    rows = [dict(r) if r["indexed"] else _journal.fill_headers(conn, dict(r)) for r in conn.execute(
        f"SELECT {_COLUMNS} FROM mailbox_messages WHERE mailbox=? AND folder=? AND deleted=0"
        " ORDER BY filed_at DESC, id DESC LIMIT ? OFFSET ?", (owner, folder, per_page, (page - 1) * per_page))]
    return {"rows": rows, "total": total, "unread": unread, "page": page, "pages": pages}


def unread_counts(conn: sqlite3.Connection, mailbox: str) -> dict[str, int]:
    """{folder: unseen, not deleted messages} for every folder of FOLDERS (0 when empty)."""
    out = dict.fromkeys(FOLDERS, 0)
    out.update(conn.execute(
        "SELECT folder, count(*) FROM mailbox_messages WHERE mailbox=? AND deleted=0 AND seen=0"
        " GROUP BY folder", (mailbox.casefold(),)).fetchall())
    return out


def search_page(conn: sqlite3.Connection, mailbox: str, query: str, limit: int = PER_PAGE,
                offset: int = 0) -> dict:
    """Full-text search of the owner's mailbox (words only, as ``search``), newest first, without
    deleted messages: {"rows": [...], "more": True if more hits follow}. Each row also has
    ``snippet`` (FTS5 snippet() of the body text, ~16 tokens) and ``subject_marked``
    (highlight() of the subject), with matches between MARK_START and MARK_END. The marked
    text is mail content: the caller must escape it."""
    fts = _fts_query(query)
    if fts is None:
        return {"rows": [], "more": False}
    cols = ", ".join("m." + c.strip() for c in _COLUMNS.split(","))
    ids = [r[0] for r in conn.execute(
        "SELECT m.id FROM mailbox_fts f JOIN mailbox_messages m ON m.id = f.rowid"
        " WHERE mailbox_fts MATCH ? AND m.mailbox=? AND m.deleted=0"
        " ORDER BY m.filed_at DESC, m.id DESC LIMIT ? OFFSET ?",
        (fts, mailbox.casefold(), limit + 1, max(0, offset)))]
    more = len(ids) > limit
    ids = ids[:limit]
    if not ids:
        return {"rows": [], "more": False}
    marks = (MARK_START, MARK_END)
    found = {r["id"]: dict(r) for r in conn.execute(
        f"SELECT {cols}, snippet(mailbox_fts, 3, ?, ?, '…', 16) AS snippet,"
        f" highlight(mailbox_fts, 0, ?, ?) AS subject_marked FROM mailbox_fts f"
        f" JOIN mailbox_messages m ON m.id = f.rowid WHERE mailbox_fts MATCH ? AND m.mailbox=?"
        f" AND f.rowid IN ({','.join('?' * len(ids))})",
        (*marks, *marks, fts, mailbox.casefold(), *ids))}
    return {"rows": [found[i] for i in ids if i in found], "more": more}


def set_flags(conn: sqlite3.Connection, mailbox: str, message_id: int, *, seen: bool | None = None,
              deleted: bool | None = None) -> bool:
    """Set the owner's own flags on one message (``seen``, ``deleted``; None leaves a flag as it
    is). Only mailbox_messages changes: the queue and what is replayed to Exchange never do.
    Returns False if the message is not the owner's."""
    sets, args = [], []
    if seen is not None:
        sets.append("seen=?")
        args.append(int(seen))
    if deleted is not None:
        sets.append("deleted=?")
        args.append(int(deleted))
    if not sets:
        return conn.execute("SELECT 1 FROM mailbox_messages WHERE id=? AND mailbox=?",
                            (message_id, mailbox.casefold())).fetchone() is not None
    return conn.execute(f"UPDATE mailbox_messages SET {', '.join(sets)} WHERE id=? AND mailbox=?",
                        (*args, message_id, mailbox.casefold())).rowcount == 1


def mark_deleted(conn: sqlite3.Connection, mailbox: str, message_id: int, deleted: bool = True) -> bool:
    """Hide (or, with ``deleted=False``, show again) one message in the owner's views only."""
    return set_flags(conn, mailbox, message_id, deleted=deleted)
