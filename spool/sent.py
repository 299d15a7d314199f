"""Mail a user sends from the webmail: the commit that queues it, files the sender's copy into
their Sent folder and appends the "send" audit row, all in one transaction (a sent message is
never missing from Sent, and never sent without its audit row); the per-user hourly count
(from the audit rows: ``webmail_audit`` action "send", result "ok", indexed on (address, at));
and the delivery status of a Sent item (its queue record).

Writes ``messages``/``recipients``/``bodies`` (spool.commit), ``mailbox_*`` (spool.mailbox) and
``webmail_audit`` (spool.accounts). No migration: every table exists.
"""
from __future__ import annotations

import dataclasses
import sqlite3
import time

from spool import accounts
from spool.commit import NewMessage, insert_message
from spool.mailbox import FilingEntry, file_message
from spool.query import get_message

HOUR = 3600.0


class SendLimitExceeded(Exception):
    """The user sent ``sent`` messages in the last hour; ``limit`` is the most allowed."""

    def __init__(self, sent: int, limit: int):
        super().__init__(f"{sent} messages sent in the last hour (limit {limit})")
        self.sent, self.limit = sent, limit


@dataclasses.dataclass(frozen=True)
class SentRecord:
    """What goes with a sent message: the sender's account (mailbox key), their Sent copy
    (``copy.queue_id`` is replaced by the message's), the hourly limit (None: no check) and the
    audit row's client and user agent."""

    address: str
    copy: FilingEntry | None = None
    per_hour: int | None = None
    client: str = ""
    user_agent: str = ""


def sends_in_last_hour(conn: sqlite3.Connection, address: str, now: float | None = None) -> int:
    """How many messages ``address`` sent from the webmail in the hour before ``now``."""
    now = time.time() if now is None else now
    return conn.execute("SELECT count(*) FROM webmail_audit WHERE address=? AND action='send'"
                        " AND result='ok' AND at > ?", (address, now - HOUR)).fetchone()[0]


def commit_sent(conn: sqlite3.Connection, msg: NewMessage, rec: SentRecord,
                now: float | None = None) -> tuple[str, int | None]:
    """Queue ``msg``, file ``rec.copy`` into the sender's Sent folder and audit the send, in
    the caller's transaction. Returns (queue ID, id of the Sent row or None without a copy).
    Raises SendLimitExceeded (nothing written) when ``rec.per_hour`` is reached."""
    now = time.time() if now is None else now
    if rec.per_hour is not None:
        n = sends_in_last_hour(conn, rec.address, now)
        if n >= rec.per_hour:
            raise SendLimitExceeded(n, rec.per_hour)
    queue_id = insert_message(conn, msg, now)
    sent_id = None
    if rec.copy is not None:
        copy = dataclasses.replace(rec.copy, queue_id=queue_id, folder="sent")
        file_message(conn, copy, now)
        row = conn.execute("SELECT id FROM mailbox_messages WHERE mailbox=? AND queue_id=?"
                           " AND folder='sent'", (rec.address, queue_id)).fetchone()
        sent_id = row[0] if row else None
    accounts.audit(conn, "send", address=rec.address, actor=rec.address, client=rec.client,
                   user_agent=rec.user_agent, detail=f"queue_id={queue_id} rcpts={len(msg.rcpt_tos)}",
                   now=now)
    return queue_id, sent_id


def sent_status(conn: sqlite3.Connection, mailbox: str, message_id: int) -> dict | None:
    """The Sent item ``message_id`` of ``mailbox`` with its queue record: {"item": mailbox row,
    "queue": spool.query.StoredMessage or None (purged)}; None if it is not this owner's Sent
    item."""
    row = conn.execute("SELECT id, queue_id, subject, to_header, cc_header, filed_at, envelope_from"
                       " FROM mailbox_messages WHERE id=? AND mailbox=? AND folder='sent'",
                       (message_id, mailbox.casefold())).fetchone()
    if row is None:
        return None
    return {"item": dict(row), "queue": get_message(conn, row["queue_id"])}


#: Prepended to a Sent item's copy (outside the DKIM-signed fields): an Exchange transport rule
#: can move such copies into Sent Items.
COPY_HEADER = "X-Mailgate-Sent-Copy"


def copy_sent_after_events(conn: sqlite3.Connection, now: float | None = None,
                           limit: int = 100) -> list[tuple[str, str]]:
    """Queue, for each Sent item sent during a continuity event that is over (the engine's
    state is normal, or another event), a copy to its owner's own address (routed to Exchange
    like inbound mail), once: the copy and its ``webmail_sent_copies`` row are written in the
    caller's transaction. Returns [(owner, copy queue ID)]."""
    now = time.time() if now is None else now
    rows = conn.execute(
        "SELECT m.id, m.mailbox, m.queue_id, m.event_id, m.envelope_from, b.data"
        " FROM mailbox_messages m JOIN mailbox_bodies b ON b.queue_id = m.queue_id"
        " WHERE m.folder='sent' AND m.event_id != ''"
        " AND m.id NOT IN (SELECT sent_id FROM webmail_sent_copies)"
        " AND NOT EXISTS (SELECT 1 FROM continuity_state s WHERE s.mode != 'normal'"
        "                 AND s.event_id = m.event_id)"
        " ORDER BY m.id LIMIT ?", (limit,)).fetchall()
    out = []
    for r in rows:
        data = (f"{COPY_HEADER}: sent from the continuity webmail during event {r['event_id']}\r\n"
                .encode() + bytes(r["data"]))
        msg = NewMessage(mail_from=r["envelope_from"], rcpt_tos=(r["mailbox"],), data=data,
                         client_addr="webmail", client_helo="webmail-sent-copy",
                         smtputf8=not (r["mailbox"] + r["envelope_from"]).isascii(),
                         body_8bit=any(b > 127 for b in data))
        qid = insert_message(conn, msg, now)
        conn.execute("INSERT INTO webmail_sent_copies (sent_id, queue_id, copy_queue_id, copied_at)"
                     " VALUES (?,?,?,?)", (r["id"], r["queue_id"], qid, now))
        out.append((r["mailbox"], qid))
    return out


__all__ = ["SendLimitExceeded", "SentRecord", "sends_in_last_hour", "commit_sent", "sent_status",
           "copy_sent_after_events", "COPY_HEADER"]
