"""Continuity mailboxes on PostgreSQL: filing, a user's folders, one message, search, flags and
the retention purge (spool.mailbox on SQLite; migration 0006_mailboxes).

Each function takes a psycopg AsyncConnection; writes run in the caller's transaction (PgSpool's
group commit or a transaction of its own). Every read of a user's mail filters on the owner's
mailbox key. Rows come back as spool.mailbox returns them on SQLite: the same keys, flags as
0/1, times as unix seconds (``filed_at``: the database clock). A pending journal entry's header
fields are parsed from the first spool.journal.HEAD_BYTES of its bytes, fetched with the row.
Search is spool.pg.fts's words in the ``search`` tsvector (GIN index), snippets made in Python.
Reads and writes ``mailbox_messages``, ``mailbox_bodies``; reads ``bodies``, ``messages``.
"""
from __future__ import annotations

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from spool import journal as _journal
from spool.mailbox import MARK_END, MARK_START, PER_PAGE, PURGE_BATCH, FOLDERS, FilingEntry
from spool.pg import fts

NOW = "extract(epoch FROM clock_timestamp())::float8"
COLUMNS = ("m.id, m.mailbox, m.queue_id, m.event_id, m.filed_at, m.envelope_from, m.envelope_rcpt,"
           " m.from_header, m.to_header, m.cc_header, m.subject, m.date_header, m.message_id,"
           " m.size, m.has_attachments::int AS has_attachments, m.seen::int AS seen, m.folder,"
           " m.deleted::int AS deleted, m.indexed::int AS indexed")
#: The first bytes of a pending entry's message (its held copy, else the queue's), NULL otherwise.
_HEAD = (f"CASE WHEN m.indexed THEN NULL ELSE coalesce("
         f"(SELECT substring(b.data FROM 1 FOR {_journal.HEAD_BYTES}) FROM mailbox_bodies b"
         f" WHERE b.queue_id = m.queue_id), (SELECT substring(b.data FROM 1 FOR"
         f" {_journal.HEAD_BYTES}) FROM bodies b WHERE b.queue_id = m.queue_id)) END AS head")
DATA = ("SELECT coalesce((SELECT data FROM mailbox_bodies WHERE queue_id=%(q)s),"
        " (SELECT data FROM bodies WHERE queue_id=%(q)s))")


def search_words(e: FilingEntry, envelope_from: str | None = None) -> list[str]:
    """The lexemes of a filed message: SQLite's FTS columns subject, sender, recipients, body
    (``envelope_from``: e's unless given). CPU work: call it off the event loop."""
    return fts.lexemes(e.subject, e.from_header,
                       e.envelope_from if envelope_from is None else envelope_from,
                       f"{e.to_header} {e.cc_header}", e.body_text)


async def _rows(conn: AsyncConnection, sql: str, args) -> list[dict]:
    """Rows of ``sql``; a pending entry's keeps its ``head`` for ``finish``."""
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, args)
        return await cur.fetchall()


def finish(rows: list[dict]) -> list[dict]:
    """Drop each row's ``head``, a pending entry's header fields parsed from it first
    (spool.journal.headers_from: CPU work, run off the event loop when any is pending)."""
    for r in rows:
        head = r.pop("head", None)
        if not r["indexed"]:
            _journal.headers_from(bytes(head or b""), r)
    return rows


def pending(rows: list[dict]) -> bool:
    """True if ``finish`` has headers to parse in ``rows``."""
    return any(not r["indexed"] for r in rows)


async def file_message(conn: AsyncConnection, e: FilingEntry,
                       words: list[str] | None = None) -> list[int]:
    """File ``e`` into each of its mailboxes, indexed at once (idempotent per (mailbox,
    queue_id, folder)), with ``words`` (search_words(e), made off the loop; made here if None);
    the ids of the rows added."""
    await conn.execute("INSERT INTO mailbox_bodies (queue_id, data) VALUES (%s, %s)"
                       " ON CONFLICT (queue_id) DO NOTHING", (e.queue_id, bytes(e.data)))
    if not e.mailboxes:
        return []
    cur = await conn.execute(
        "INSERT INTO mailbox_messages (mailbox, queue_id, event_id, filed_at, envelope_from,"
        " envelope_rcpt, from_header, to_header, cc_header, subject, date_header, message_id, size,"
        " has_attachments, folder, body_text, search)"
        f" SELECT o.owner, %(q)s, %(ev)s, {NOW}, %(ef)s, o.via, %(fh)s, %(th)s, %(ch)s, %(s)s,"
        " %(dh)s, %(mid)s, %(size)s, %(att)s, %(folder)s, %(body)s, array_to_tsvector(%(words)s::text[])"
        " FROM unnest(%(owners)s::text[], %(vias)s::text[]) AS o(owner, via)"
        " ON CONFLICT (mailbox, queue_id, folder) DO NOTHING RETURNING id",
        {"q": e.queue_id, "ev": e.event_id, "ef": e.envelope_from, "fh": e.from_header,
         "th": e.to_header, "ch": e.cc_header, "s": e.subject, "dh": e.date_header,
         "mid": e.message_id, "size": len(e.data), "att": bool(e.has_attachments),
         "folder": e.folder, "body": e.body_text,
         "words": search_words(e) if words is None else words,
         "owners": list(e.mailboxes), "vias": list(e.mailboxes.values())})
    return [r[0] for r in await cur.fetchall()]


async def list_mailbox(conn: AsyncConnection, mailbox: str, limit: int = 50, offset: int = 0,
                       folder: str | None = None) -> list[dict]:
    where, args = "m.mailbox=%s", [mailbox.casefold()]
    if folder is not None:
        where += " AND m.folder=%s AND NOT m.deleted"
        args.append(folder)
    return await _rows(conn, f"SELECT {COLUMNS}, {_HEAD} FROM mailbox_messages m WHERE {where}"
                             " ORDER BY m.filed_at DESC, m.id DESC LIMIT %s OFFSET %s",
                       (*args, limit, offset))


async def get_message(conn: AsyncConnection, mailbox: str, message_id: int, with_data: bool = True,
                      folder: str | None = None, include_deleted: bool = True) -> dict | None:
    sql = f"SELECT {COLUMNS}, {_HEAD} FROM mailbox_messages m WHERE m.id=%s AND m.mailbox=%s"
    args: list = [message_id, mailbox.casefold()]
    if folder is not None:
        sql += " AND m.folder=%s"
        args.append(folder)
    if not include_deleted:
        sql += " AND NOT m.deleted"
    rows = await _rows(conn, sql, args)
    if not rows:
        return None
    out = rows[0]
    if with_data:
        out["data"] = await message_data(conn, out["queue_id"])
    return out


async def message_data(conn: AsyncConnection, queue_id: str) -> bytes | None:
    """The stored bytes of ``queue_id`` or None; read in the binary format (no hex)."""
    cur = await conn.execute(DATA, {"q": queue_id}, binary=True)
    row = await cur.fetchone()
    if row is None or row[0] is None:
        return None
    return row[0] if isinstance(row[0], bytes) else bytes(row[0])


async def folder_page(conn: AsyncConnection, mailbox: str, folder: str, page: int = 1,
                      per_page: int = PER_PAGE) -> dict:
    owner = mailbox.casefold()
    cur = await conn.execute("SELECT count(*), count(*) FILTER (WHERE NOT seen) FROM"
                             " mailbox_messages WHERE mailbox=%s AND folder=%s AND NOT deleted",
                             (owner, folder))
    total, unread = await cur.fetchone()
    pages = max(1, -(-total // per_page))
    page = min(max(1, int(page)), pages)
    rows = await _rows(conn, f"SELECT {COLUMNS}, {_HEAD} FROM mailbox_messages m WHERE m.mailbox=%s"
                             " AND m.folder=%s AND NOT m.deleted ORDER BY m.filed_at DESC, m.id DESC"
                             " LIMIT %s OFFSET %s", (owner, folder, per_page, (page - 1) * per_page))
    return {"rows": rows, "total": total, "unread": unread, "page": page, "pages": pages}


async def unread_counts(conn: AsyncConnection, mailbox: str) -> dict[str, int]:
    out = dict.fromkeys(FOLDERS, 0)
    cur = await conn.execute("SELECT folder, count(*) FROM mailbox_messages WHERE mailbox=%s"
                             " AND NOT deleted AND NOT seen GROUP BY folder", (mailbox.casefold(),))
    out.update(dict(await cur.fetchall()))
    return out


async def search_page(conn: AsyncConnection, mailbox: str, query: str, limit: int = PER_PAGE,
                      offset: int = 0) -> dict:
    terms = fts.query_terms(query)
    if terms is None or any(len(t) > fts.MAX_WORD for t, _p in terms):
        return {"rows": [], "more": False}        # no word, or one longer than any indexed
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            f"SELECT {COLUMNS}, m.body_text FROM mailbox_messages m WHERE m.mailbox=%s"
            " AND NOT m.deleted AND m.search @@ %s::tsquery ORDER BY m.filed_at DESC, m.id DESC"
            " LIMIT %s OFFSET %s", (mailbox.casefold(), fts.tsquery(terms), limit + 1, max(0, offset)))
        rows = await cur.fetchall()
    return {"rows": rows[:limit], "more": len(rows) > limit, "terms": terms}


def mark(found: dict) -> dict:
    """search_page's result with each row's ``snippet`` and ``subject_marked`` (its body text
    and the query's terms dropped): CPU work, run off the event loop."""
    terms = found.pop("terms", None)
    for r in found["rows"]:
        r["snippet"] = fts.snippet(r.pop("body_text"), terms, MARK_START, MARK_END)
        r["subject_marked"] = fts.highlight(r["subject"], terms, MARK_START, MARK_END)
    return found


async def set_flags(conn: AsyncConnection, mailbox: str, message_id: int, *,
                    seen: bool | None = None, deleted: bool | None = None) -> bool:
    sets, args = [], []
    if seen is not None:
        sets.append("seen=%s")
        args.append(bool(seen))
    if deleted is not None:
        sets.append("deleted=%s")
        args.append(bool(deleted))
    if not sets:
        cur = await conn.execute("SELECT 1 FROM mailbox_messages WHERE id=%s AND mailbox=%s",
                                 (message_id, mailbox.casefold()))
    else:
        cur = await conn.execute(f"UPDATE mailbox_messages SET {', '.join(sets)} WHERE id=%s"
                                 " AND mailbox=%s RETURNING 1", (*args, message_id, mailbox.casefold()))
    return await cur.fetchone() is not None


async def counts(conn: AsyncConnection) -> dict[str, int]:
    cur = await conn.execute("SELECT mailbox, count(*) FROM mailbox_messages GROUP BY mailbox")
    return dict(await cur.fetchall())


async def purge(conn: AsyncConnection, before: float, limit: int = PURGE_BATCH) -> int:
    """spool.mailbox.purge: up to ``limit`` rows filed before ``before`` (unix seconds), oldest
    first (rows another node is purging are skipped), then the bytes no row refers to any more
    (the held copy; the queue's copy of a finished message). Returns the rows deleted."""
    cur = await conn.execute(
        "WITH d AS (DELETE FROM mailbox_messages WHERE id IN (SELECT id FROM mailbox_messages"
        " WHERE filed_at < %s ORDER BY filed_at LIMIT %s FOR UPDATE SKIP LOCKED) RETURNING queue_id)"
        " SELECT queue_id, count(*) FROM d GROUP BY queue_id", (before, limit))
    gone = dict(await cur.fetchall())
    if gone:
        await conn.execute(
            "WITH g AS (SELECT q FROM unnest(%s::text[]) AS u(q) WHERE NOT EXISTS"
            "  (SELECT 1 FROM mailbox_messages m WHERE m.queue_id = u.q)),"
            " a AS (DELETE FROM mailbox_bodies WHERE queue_id IN (SELECT q FROM g))"
            " DELETE FROM bodies b WHERE b.queue_id IN (SELECT q FROM g) AND EXISTS (SELECT 1"
            " FROM messages s WHERE s.queue_id = b.queue_id AND s.state IN ('delivered','bounced'))",
            (list(gone),))
    return sum(gone.values())


__all__ = ["file_message", "list_mailbox", "get_message", "message_data", "folder_page",
           "unread_counts", "search_page", "mark", "finish", "pending", "set_flags", "counts",
           "purge", "search_words",
           "COLUMNS", "NOW"]
