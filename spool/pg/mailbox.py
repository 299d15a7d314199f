"""The continuity-mailbox verbs of PgSpool (a mixin; spool.mailbox_verbs.MailboxVerbs on SQLite,
which documents each verb's shapes): a user's folders, one message, search, flags, the webmail's
sent mail, the journal's indexer and the retention purge, over spool.pg.mailbox_rows,
spool.pg.sent and spool.pg.journal. Also ``record_with_filing`` and ``delivered_with_journal``,
what PgSpool.record_attempt / record_delivered run to file a held message and journal delivered
ones in the same transaction as the queue's record.

Writes a user waits on for an acknowledgement (a send, a filing) go through the group commit
(``self.write``); housekeeping (flags, indexing, purge, Sent copies) runs in short transactions
of its own (``self.transaction``). Several nodes may run the indexer, the purge and the Sent
copies at once (see spool.pg.journal, spool.pg.sent). Errors: SpoolError (spool.store) when
the database is unreachable; the verbs' own errors as on SQLite.
"""
from __future__ import annotations

import asyncio

from spool.commit import NewMessage
from spool.mailbox import PER_PAGE, PURGE_BATCH, FilingEntry
from spool.pg import db as _db
from spool.pg import journal as _journal
from spool.pg import mailbox_rows as _rows
from spool.pg import queue as _q
from spool.pg import sent as _sent
from spool.sent import SentRecord
from spool.states import QueueState


async def _journal_savepoint(conn, journal) -> Exception | None:
    """File ``journal`` in a savepoint of its own; its error (not the storage's) undone alone."""
    try:
        async with conn.transaction():
            await _journal.file_delivered(conn, journal)
    except Exception as e:
        if _db.storage_failure(e):
            raise
        return e
    return None


async def record_with_filing(conn, queue_id, outcomes, next_attempt_at, hold, token, dsn, node,
                             hold_reason, filing: FilingEntry | None, journal, words=None):
    """spool.pg.queue.record_attempt with the journal entry filed first (the record then keeps
    the bytes it refers to) and, if the message goes on hold, ``filing`` filed after (with its
    search ``words``, made off the loop); returns (state, journal error or None). A stale
    ``token`` raises StaleClaim: the caller's savepoint undoes the journal entry too."""
    journal_error = None
    if journal is not None:
        if token is not None:
            await _q._current(conn, queue_id, token)   # a stale claim files nothing
        journal_error = await _journal_savepoint(conn, journal)
    state = await _q.record_attempt(conn, queue_id, outcomes, next_attempt_at, hold, token, dsn,
                                    node, hold_reason)
    if filing is not None and state is QueueState.HOLD:
        await _rows.file_message(conn, filing, words)
    return state, journal_error


async def delivered_with_journal(conn, queue_id, outcomes, journal, token) -> int:
    """spool.pg.queue.record_delivered with ``journal`` filed in the same transaction (a failing
    filing undone alone: the attempt's record files it again and reports the error)."""
    if token is not None:
        await _q._current(conn, queue_id, token)
    if journal is not None:
        await _journal_savepoint(conn, journal)
    return await _q.record_delivered(conn, queue_id, outcomes, None)


async def _finish(rows: list[dict]) -> list[dict]:
    """mailbox_rows.finish, off the event loop when a pending entry's headers are to be parsed."""
    if _rows.pending(rows):
        return await asyncio.to_thread(_rows.finish, rows)
    return _rows.finish(rows)


async def filing_words(filing: FilingEntry | None) -> list[str] | None:
    """The search words of a held message's filing, made off the event loop (None: no filing)."""
    return None if filing is None else await asyncio.to_thread(_rows.search_words, filing)


class PgMailboxVerbs:
    """The continuity-mailbox verbs of PgSpool (over its read/write/transaction)."""

    async def folder_page(self, mailbox: str, folder: str, page: int = 1,
                          per_page: int = PER_PAGE) -> dict:
        out = await self.read(_rows.folder_page, mailbox, folder, page, per_page)
        await _finish(out["rows"])
        return out

    async def unread_counts(self, mailbox: str) -> dict[str, int]:
        return await self.read(_rows.unread_counts, mailbox)

    async def list_mailbox(self, mailbox: str, limit: int = 50, offset: int = 0,
                           folder: str | None = None) -> list[dict]:
        return await _finish(await self.read(_rows.list_mailbox, mailbox, limit, offset, folder))

    async def get_mailbox_message(self, mailbox: str, message_id: int, with_data: bool = True, *,
                                  folder: str | None = None,
                                  include_deleted: bool = True) -> dict | None:
        if not 0 < message_id < 2 ** 63:
            return None                 # names no row (bigint ids)
        row = await self.read(_rows.get_message, mailbox, message_id, with_data, folder,
                              include_deleted)
        return None if row is None else (await _finish([row]))[0]

    async def search_messages(self, mailbox: str, query: str, limit: int = PER_PAGE,
                              offset: int = 0) -> dict:
        found = await self.read(_rows.search_page, mailbox, query, limit, offset)
        return await asyncio.to_thread(_rows.mark, found) if found["rows"] else _rows.mark(found)

    async def set_flags(self, mailbox: str, message_id: int, *, seen: bool | None = None,
                        deleted: bool | None = None) -> bool:
        if not 0 < message_id < 2 ** 63:
            return False
        return await self.transaction(lambda c: _rows.set_flags(c, mailbox, message_id,
                                                                seen=seen, deleted=deleted))

    async def file_message(self, entry: FilingEntry) -> int:
        words = await asyncio.to_thread(_rows.search_words, entry)
        return len(await self.write(_rows.file_message, entry, words))

    async def mailbox_counts(self) -> dict[str, int]:
        return await self.read(_rows.counts)

    async def commit_sent(self, msg: NewMessage, rec: SentRecord) -> tuple[str, int | None]:
        words = None if rec.copy is None else await asyncio.to_thread(_rows.search_words, rec.copy)
        return await self.write(_sent.commit_sent, msg, rec, self.node, words)

    async def sent_status(self, mailbox: str, message_id: int) -> dict | None:
        if not 0 < message_id < 2 ** 63:
            return None
        return await self.read(_sent.sent_status, mailbox, message_id)

    async def copy_sent_after_events(self, limit: int = 100) -> list[tuple[str, str]]:
        return await self.transaction(_sent.copy_sent_after_events, self.new_queue_id,
                                      self.node, limit)

    async def journal_pending(self, limit: int) -> list[tuple[int, str]]:
        return await self.read(_journal.pending_entries, limit)

    async def count_journal_pending(self) -> int:
        return await self.read(_journal.count_pending)

    async def filed_message_data(self, queue_id: str) -> bytes | None:
        return await self.read(_rows.message_data, queue_id)

    async def index_journal(self, described: list[FilingEntry]) -> int:
        described = list(described)
        base = await asyncio.to_thread(_journal.base_words, described)
        return await self.transaction(_journal.index_entries, described, base)

    async def purge_mailboxes(self, before: float, limit: int = PURGE_BATCH) -> int:
        return await self.transaction(_rows.purge, before, limit)


__all__ = ["PgMailboxVerbs", "record_with_filing", "delivered_with_journal", "filing_words"]
