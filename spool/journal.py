"""The journal: continuity-mailbox entries for mail delivered to local mailboxes
(``continuity.journal = "all"``), so users see mail from before an outage.

Filing is cheap on purpose, because it runs in the delivery record's transaction: ``file_delivered``
writes one ``mailbox_messages`` row per owner with ``indexed = 0`` ("pending"): no parsing, no
copy of the bytes. The bytes are the queue's own (``bodies``): spool.transitions keeps them past
delivery while an entry refers to them, spool.mailbox.purge deletes them with the last entry.
The background indexer (gateway.continuity.journal) reads ``pending_entries``, parses the message
off the hot path, and writes headers and the FTS row with ``index_entries`` (``indexed = 1``), in
one transaction per batch: a crash loses nothing, pending entries stay pending and are indexed
after the restart. Until then ``fill_headers`` gives the webmail the header fields parsed on
demand from the header section; search finds an entry once it is indexed.

Reads and writes ``mailbox_messages``, ``mailbox_fts``; reads ``mailbox_bodies``, ``bodies``.
"""
from __future__ import annotations

import email.parser
import email.policy
import sqlite3
import time
from dataclasses import dataclass

#: Bytes of a message read to parse its header section on demand (a pending entry).
HEAD_BYTES = 64 * 1024

#: mailbox_messages column → header field, filled by the indexer or on demand.
HEADER_FIELDS = (("from_header", "From"), ("to_header", "To"), ("cc_header", "Cc"),
                 ("subject", "Subject"), ("date_header", "Date"), ("message_id", "Message-ID"))


@dataclass(frozen=True)
class JournalEntry:
    """A delivered message to journal: ``mailboxes`` maps each owner (the mailbox key,
    case-folded, as in spool.mailbox.FilingEntry) to the envelope recipient that reached it;
    ``size`` is the message's size in bytes. No bytes and no headers (see the module doc)."""

    queue_id: str
    mailboxes: dict[str, str]
    envelope_from: str = ""
    size: int = 0


def file_delivered(conn: sqlite3.Connection, e: JournalEntry, now: float | None = None) -> int:
    """File a delivered message into each of its owners' mailboxes as a pending entry; return how
    many rows were added. Idempotent per (mailbox, queue_id), like spool.mailbox.file_message: a
    message filed when it was held is not filed again when the replay delivers it. Runs in the
    caller's write transaction, before transitions.record_attempt (which then keeps the bytes)."""
    now = time.time() if now is None else now
    cur = conn.executemany(
        "INSERT OR IGNORE INTO mailbox_messages (mailbox, queue_id, filed_at, envelope_from,"
        " envelope_rcpt, size, indexed) VALUES (?,?,?,?,?,?,0)",
        [(owner, e.queue_id, now, e.envelope_from, via, e.size) for owner, via in e.mailboxes.items()])
    return cur.rowcount


def record_delivered(conn: sqlite3.Connection, queue_id: str, outcomes: list,
                     entry: JournalEntry | None, token: int | None = None) -> int:
    """transitions.record_delivered (the recipients of an attempt in progress that are already
    delivered) with their journal ``entry`` in the same transaction, so that a crash before the
    attempt's own record loses neither. A filing that fails (not the storage) is undone alone:
    the attempt's record files the entry again and reports the error. Returns recipients changed.
    With a claim ``token``, nothing is written unless that claim is current (StaleClaim)."""
    from spool.claims import check_current
    from spool.transitions import record_delivered as _record_delivered
    if token is not None:
        check_current(conn, queue_id, token)
    if entry is not None:
        conn.execute("SAVEPOINT journal_early")
        try:
            file_delivered(conn, entry)
        except (sqlite3.IntegrityError, sqlite3.ProgrammingError, sqlite3.InterfaceError):
            if not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO journal_early")
        conn.execute("RELEASE journal_early")
    return _record_delivered(conn, queue_id, outcomes)


def message_data(conn: sqlite3.Connection, queue_id: str) -> bytes | None:
    """The bytes of a filed message: the copy made when it was held (mailbox_bodies), else the
    queue's own (bodies, kept for journal entries); None if neither exists (an operator deleted
    the queue record with `mailgate queue delete`)."""
    b = conn.execute("SELECT data FROM mailbox_bodies WHERE queue_id=?", (queue_id,)).fetchone()
    if b is not None:
        return bytes(b[0])
    from spool.bodyfiles import read_body
    return read_body(conn, queue_id)


def pending_entries(conn: sqlite3.Connection, limit: int) -> list[tuple[int, str]]:
    """Up to ``limit`` entries not indexed yet, oldest first: [(mailbox_messages.id, queue_id)]."""
    return [(r[0], r[1]) for r in conn.execute(
        "SELECT id, queue_id FROM mailbox_messages WHERE indexed=0 ORDER BY id LIMIT ?", (limit,))]


def count_pending(conn: sqlite3.Connection) -> int:
    """Entries waiting for the indexer."""
    return conn.execute("SELECT count(*) FROM mailbox_messages WHERE indexed=0").fetchone()[0]


def index_entries(conn: sqlite3.Connection, described: list) -> int:
    """For each message of ``described`` (spool.mailbox.FilingEntry as made by
    gateway.continuity.filing.describe: queue_id, header fields, has_attachments, body_text),
    write the headers and the FTS row of its pending entries and mark them indexed. Entries
    indexed or purged meanwhile are left alone (idempotent). Returns the rows indexed."""
    done = 0
    for e in described:
        for rowid, envelope_from in conn.execute(
                "SELECT id, envelope_from FROM mailbox_messages WHERE queue_id=? AND indexed=0",
                (e.queue_id,)).fetchall():
            conn.execute(
                "UPDATE mailbox_messages SET from_header=?, to_header=?, cc_header=?, subject=?,"
                " date_header=?, message_id=?, has_attachments=?, indexed=1 WHERE id=?",
                (e.from_header, e.to_header, e.cc_header, e.subject, e.date_header, e.message_id,
                 int(e.has_attachments), rowid))
            conn.execute(
                "INSERT INTO mailbox_fts (rowid, subject, sender, recipients, body) VALUES (?,?,?,?,?)",
                (rowid, e.subject, f"{e.from_header} {envelope_from}", f"{e.to_header} {e.cc_header}",
                 e.body_text))
            done += 1
    return done


def fill_headers(conn: sqlite3.Connection, row: dict) -> dict:
    """Fill a pending entry's header columns (``row``: a mailbox_messages row as a dict) from the
    header section of its bytes (RFC 5322 §2.2; at most HEAD_BYTES read, incrementally); a field
    that cannot be decoded is kept raw. ``has_attachments`` stays 0 until indexed. Never raises.
    Returns ``row``."""
    try:
        head = _head(conn, row["queue_id"])
    except Exception:
        return row
    return headers_from(head, row)


def headers_from(head: bytes, row: dict) -> dict:
    """``row`` with its header columns (HEADER_FIELDS) parsed from ``head``, the start of the
    message's bytes (cut at the end of the header section if it is there). A field that cannot
    be decoded is kept raw. Never raises; returns ``row``. Pure: both backends use it."""
    ends = [i for i in (head.find(b"\r\n\r\n"), head.find(b"\n\n")) if i >= 0]
    head = head[:min(ends) + 1] if ends else head
    try:
        msg = email.parser.BytesHeaderParser(policy=email.policy.default).parsebytes(head)
    except Exception:
        return row
    for column, name in HEADER_FIELDS:
        try:
            v = msg.get(name)
            row[column] = "" if v is None else str(v)[:2000]
        except Exception:
            raw = [v for k, v in msg.raw_items() if k.lower() == name.lower()]
            row[column] = str(raw[0])[:2000] if raw else ""
    return row


def _head(conn: sqlite3.Connection, queue_id: str) -> bytes:
    for table in ("mailbox_bodies", "bodies"):
        r = conn.execute(f"SELECT rowid FROM {table} WHERE queue_id=?", (queue_id,)).fetchone()
        if r is None:
            continue
        with conn.blobopen(table, "data", r[0], readonly=True) as blob:
            return blob.read(HEAD_BYTES)
    return b""


__all__ = ["JournalEntry", "file_delivered", "record_delivered", "message_data", "pending_entries", "count_pending",
           "index_entries", "fill_headers", "headers_from", "HEAD_BYTES", "HEADER_FIELDS"]
