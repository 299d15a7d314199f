"""The webmail's sent mail on PostgreSQL (spool.sent on SQLite): the send's commit (queued, Sent
copy filed, "send" audit row, in one transaction, under the hourly limit), a Sent item's status,
and the copies of Sent items queued after their continuity event.

The hourly count and the new audit row are serialised per sender by a transaction advisory lock,
so two nodes cannot both let the last allowed send through. ``copy_sent_after_events`` may run on
every node at once: the primary key of ``webmail_sent_copies`` is taken first (ON CONFLICT DO
NOTHING), and only the node that took it queues the copy. Times: the database clock. Reads and
writes ``messages``/``recipients``/``bodies`` (spool.pg.queue), ``mailbox_*``,
``webmail_audit``, ``webmail_sent_copies``; reads ``continuity_state``.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from spool.commit import NewMessage
from spool.pg import queue as _q
from spool.pg.mailbox_rows import NOW, file_message
from spool.sent import COPY_HEADER, HOUR, SendLimitExceeded, SentRecord


async def sends_in_last_hour(conn: AsyncConnection, address: str) -> int:
    cur = await conn.execute("SELECT count(*) FROM webmail_audit WHERE address=%s AND action='send'"
                             f" AND result='ok' AND at > {NOW} - %s", (address, HOUR))
    return (await cur.fetchone())[0]


async def commit_sent(conn: AsyncConnection, msg: NewMessage, rec: SentRecord,
                      node: str = "", words: list[str] | None = None) -> tuple[str, int | None]:
    """spool.sent.commit_sent: (queue ID, Sent row id or None); SendLimitExceeded (raised
    before anything is written) when ``rec.per_hour`` is reached. ``words``: the Sent copy's
    search words (spool.pg.mailbox_rows.search_words, made off the loop)."""
    if rec.per_hour is not None:
        await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))",
                           ("mailgate-send:" + rec.address,))
        n = await sends_in_last_hour(conn, rec.address)
        if n >= rec.per_hour:
            raise SendLimitExceeded(n, rec.per_hour)
    queue_id = await _q.insert_message(conn, msg, node)
    sent_id = None
    if rec.copy is not None:
        await file_message(conn, dataclasses.replace(rec.copy, queue_id=queue_id, folder="sent"),
                           words)
        cur = await conn.execute("SELECT id FROM mailbox_messages WHERE mailbox=%s AND queue_id=%s"
                                 " AND folder='sent'", (rec.address, queue_id))
        row = await cur.fetchone()
        sent_id = row[0] if row else None
    await conn.execute(
        "INSERT INTO webmail_audit (at, address, actor, action, result, client, user_agent, detail,"
        f" node) VALUES ({NOW}, %s, %s, 'send', 'ok', %s, %s, %s, %s)",
        (rec.address, rec.address, rec.client[:200], rec.user_agent[:500],
         f"queue_id={queue_id} rcpts={len(msg.rcpt_tos)}", node))
    return queue_id, sent_id


async def sent_status(conn: AsyncConnection, mailbox: str, message_id: int) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute("SELECT id, queue_id, subject, to_header, cc_header, filed_at, envelope_from"
                          " FROM mailbox_messages WHERE id=%s AND mailbox=%s AND folder='sent'",
                          (message_id, mailbox.casefold()))
        row = await cur.fetchone()
    if row is None:
        return None
    return {"item": row, "queue": await _q.get_message(conn, row["queue_id"])}


async def copy_sent_after_events(conn: AsyncConnection, new_queue_id: Callable[[], str],
                                 node: str = "", limit: int = 100) -> list[tuple[str, str]]:
    """spool.sent.copy_sent_after_events; ``new_queue_id()`` names each copy. [(owner, copy
    queue ID)] of the copies this call queued."""
    cur = await conn.execute(
        "SELECT m.id, m.mailbox, m.queue_id, m.event_id, m.envelope_from, b.data"
        " FROM mailbox_messages m JOIN mailbox_bodies b ON b.queue_id = m.queue_id"
        " WHERE m.folder='sent' AND m.event_id <> ''"
        " AND NOT EXISTS (SELECT 1 FROM webmail_sent_copies c WHERE c.sent_id = m.id)"
        " AND NOT EXISTS (SELECT 1 FROM continuity_state s WHERE s.mode <> 'normal'"
        "                 AND s.event_id = m.event_id)"
        " ORDER BY m.id LIMIT %s", (limit,))
    out = []
    for sent_id, owner, queue_id, event_id, envelope_from, data in await cur.fetchall():
        qid = new_queue_id()
        took = await conn.execute(
            "INSERT INTO webmail_sent_copies (sent_id, queue_id, copy_queue_id, copied_at)"
            f" VALUES (%s, %s, %s, {NOW}) ON CONFLICT (sent_id) DO NOTHING RETURNING 1",
            (sent_id, queue_id, qid))
        if await took.fetchone() is None:
            continue                     # another node copied it meanwhile
        body = (f"{COPY_HEADER}: sent from the continuity webmail during event {event_id}\r\n"
                .encode() + bytes(data))
        await _q.insert_message(conn, NewMessage(
            mail_from=envelope_from, rcpt_tos=(owner,), data=body, client_addr="webmail",
            client_helo="webmail-sent-copy", smtputf8=not (owner + envelope_from).isascii(),
            body_8bit=any(b > 127 for b in body), queue_id=qid), node)
        out.append((owner, qid))
    return out


__all__ = ["commit_sent", "sent_status", "copy_sent_after_events", "sends_in_last_hour"]
