"""The journal on PostgreSQL (spool.journal on SQLite): pending entries filed in the delivery
record's transaction, the indexer's reads and writes.

``file_delivered`` runs in the transaction of PgSpool.record_attempt / record_delivered (its own
savepoint: a failing filing is undone alone). The indexer may run on every node at once:
``index_entries`` locks the pending rows it fills with ``FOR UPDATE SKIP LOCKED``, so two nodes
never index the same row and neither waits for the other. Reads and writes ``mailbox_messages``.
"""
from __future__ import annotations

from psycopg import AsyncConnection

from spool.journal import JournalEntry
from spool.mailbox import FilingEntry
from spool.pg import fts
from spool.pg.mailbox_rows import NOW, search_words


async def file_delivered(conn: AsyncConnection, e: JournalEntry) -> int:
    """File a delivered message into its owners' mailboxes as pending entries (idempotent per
    (mailbox, queue_id, folder)); the rows added."""
    if not e.mailboxes:
        return 0
    cur = await conn.execute(
        "WITH i AS (INSERT INTO mailbox_messages (mailbox, queue_id, filed_at, envelope_from,"
        f" envelope_rcpt, size, indexed) SELECT o.owner, %s, {NOW}, %s, o.via, %s, false"
        " FROM unnest(%s::text[], %s::text[]) AS o(owner, via)"
        " ON CONFLICT (mailbox, queue_id, folder) DO NOTHING RETURNING 1) SELECT count(*) FROM i",
        (e.queue_id, e.envelope_from, e.size, list(e.mailboxes), list(e.mailboxes.values())))
    return (await cur.fetchone())[0]


async def pending_entries(conn: AsyncConnection, limit: int) -> list[tuple[int, str]]:
    cur = await conn.execute("SELECT id, queue_id FROM mailbox_messages WHERE NOT indexed"
                             " ORDER BY id LIMIT %s", (limit,))
    return [(r[0], r[1]) for r in await cur.fetchall()]


async def count_pending(conn: AsyncConnection) -> int:
    cur = await conn.execute("SELECT count(*) FROM mailbox_messages WHERE NOT indexed")
    return (await cur.fetchone())[0]


def base_words(described: list[FilingEntry]) -> dict[str, list[str]]:
    """{queue_id: search words of its headers and body} (CPU work: run it off the event loop)."""
    return {e.queue_id: search_words(e, "") for e in described}


async def index_entries(conn: AsyncConnection, described: list[FilingEntry],
                        base: dict[str, list[str]] | None = None) -> int:
    """spool.journal.index_entries: headers, body text and search words (``base``, from
    base_words, plus each row's envelope sender) of the pending entries of each message of
    ``described``, marked indexed; rows indexed, purged or locked by another node meanwhile
    are left alone. Returns the rows indexed."""
    by_qid = {e.queue_id: e for e in described}
    if not by_qid:
        return 0
    cur = await conn.execute("SELECT id, queue_id, envelope_from FROM mailbox_messages"
                             " WHERE queue_id = ANY(%s) AND NOT indexed ORDER BY id"
                             " FOR UPDATE SKIP LOCKED", (list(by_qid),))
    rows = await cur.fetchall()
    words: dict[tuple[str, str], list[str]] = {}
    args = []
    for rowid, qid, envelope_from in rows:
        e = by_qid[qid]
        w = words.get((qid, envelope_from))
        if w is None:
            b = base[qid] if base is not None else search_words(e, "")
            w = words[(qid, envelope_from)] = list(dict.fromkeys(b + fts.lexemes(envelope_from)))
        args.append((e.from_header, e.to_header, e.cc_header, e.subject, e.date_header,
                     e.message_id, bool(e.has_attachments), e.body_text, w, rowid))
    if args:
        async with conn.cursor() as c:
            await c.executemany(
                "UPDATE mailbox_messages SET from_header=%s, to_header=%s, cc_header=%s, subject=%s,"
                " date_header=%s, message_id=%s, has_attachments=%s, body_text=%s,"
                " search=array_to_tsvector(%s::text[]), indexed=true WHERE id=%s", args)
    return len(args)


__all__ = ["file_delivered", "pending_entries", "count_pending", "index_entries", "base_words"]
