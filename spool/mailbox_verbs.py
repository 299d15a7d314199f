"""The continuity-mailbox verbs of the SQLite spool (a mixin of spool.store.Spool): async wrappers
over spool.mailbox (folders, one message, search, flags), spool.sent (a webmail send, its status,
the copies after an event) and spool.journal (the journal's indexer and the retention purge), run
by the spool's writer thread (writes) or its readers (reads). spool.pg.mailbox.PgMailboxVerbs has
the same verbs on PostgreSQL.

Every verb that reads a user's mail takes the owner's mailbox key (``mailbox``, case-folded
here) and sees only that mailbox's rows. A mailbox row is a dict with the columns of
``mailbox_messages``: id, mailbox, queue_id, event_id, filed_at (unix seconds), envelope_from,
envelope_rcpt, from_header, to_header, cc_header, subject, date_header, message_id, size (bytes),
has_attachments, seen, folder ("inbox" | "sent"), deleted, indexed (the flags are 0/1 here,
booleans on PostgreSQL). Errors: SpoolError (spool.store) when the storage fails.
"""
from __future__ import annotations

from spool import journal as _journal
from spool import mailbox as _mbx
from spool import sent as _sent
from spool.commit import NewMessage


class MailboxVerbs:
    """Continuity-mailbox verbs over ``self.read`` / ``self.write`` (spool.store.Spool)."""

    # -- a user's mailbox ----------------------------------------------------------------------
    async def folder_page(self, mailbox: str, folder: str, page: int = 1,
                          per_page: int = _mbx.PER_PAGE) -> dict:
        """One page of ``folder`` (inbox | sent), newest first, without deleted messages and
        without bytes: {"rows": [row], "total", "unread", "page" (clamped to 1..pages),
        "pages" (>= 1)}. A pending journal entry has its header fields parsed from its bytes."""
        return await self.read(_mbx.folder_page, mailbox, folder, page, per_page)

    async def unread_counts(self, mailbox: str) -> dict[str, int]:
        """{folder: unseen, not deleted messages} for every folder of spool.mailbox.FOLDERS."""
        return await self.read(_mbx.unread_counts, mailbox)

    async def list_mailbox(self, mailbox: str, limit: int = 50, offset: int = 0,
                           folder: str | None = None) -> list[dict]:
        """The owner's rows, newest first (deleted ones too unless ``folder`` is given)."""
        return await self.read(_mbx.list_mailbox, mailbox, limit, offset, folder)

    async def get_mailbox_message(self, mailbox: str, message_id: int, with_data: bool = True, *,
                                  folder: str | None = None,
                                  include_deleted: bool = True) -> dict | None:
        """Row ``message_id`` of the owner's mailbox, with ``data`` (its bytes, None if they are
        gone) when ``with_data``; None if it is not the owner's, does not exist, is not in
        ``folder`` (when given) or is deleted while ``include_deleted`` is False."""
        return await self.read(lambda c: _mbx.get_message(
            c, mailbox, message_id, with_data, folder=folder, include_deleted=include_deleted))

    async def search_messages(self, mailbox: str, query: str, limit: int = _mbx.PER_PAGE,
                              offset: int = 0) -> dict:
        """Full-text search of the owner's indexed, not deleted messages, newest first: every
        word of ``query`` must match (subject, sender, recipients or body; prefix match on the
        last word; never query syntax): {"rows": [row + "snippet", "subject_marked"], "more":
        bool}. Matches are between spool.mailbox.MARK_START and MARK_END (mail content: the
        caller escapes it). A query without words finds nothing."""
        return await self.read(_mbx.search_page, mailbox, query, limit, offset)

    async def set_flags(self, mailbox: str, message_id: int, *, seen: bool | None = None,
                        deleted: bool | None = None) -> bool:
        """Set the owner's ``seen`` / ``deleted`` flags of one message (None keeps a flag);
        the queue never changes. False if the message is not the owner's."""
        return await self.write(lambda c: _mbx.set_flags(c, mailbox, message_id, seen=seen,
                                                         deleted=deleted))

    async def file_message(self, entry: _mbx.FilingEntry) -> int:
        """File ``entry`` (spool.mailbox.FilingEntry) into each of its mailboxes, indexed at
        once; idempotent per (mailbox, queue_id, folder). Returns the rows added."""
        return await self.write(_mbx.file_message, entry, size=len(entry.data))

    async def mailbox_counts(self) -> dict[str, int]:
        """{mailbox: number of rows} over every mailbox (the admin's view)."""
        return await self.read(_mbx.counts)

    # -- the webmail's sent mail ---------------------------------------------------------------
    async def commit_sent(self, msg: NewMessage, rec: _sent.SentRecord) -> tuple[str, int | None]:
        """Queue ``msg``, file ``rec.copy`` into the sender's Sent folder and audit the send
        (webmail_audit "send"), in one transaction: (queue ID, Sent row id or None without a
        copy). Raises spool.sent.SendLimitExceeded, nothing written, when ``rec.per_hour``
        sends are in the last hour."""
        return await self.write(_sent.commit_sent, msg, rec, size=len(msg.data))

    async def sent_status(self, mailbox: str, message_id: int) -> dict | None:
        """The owner's Sent item with its queue record: {"item": {id, queue_id, subject,
        to_header, cc_header, filed_at, envelope_from}, "queue": StoredMessage or None once
        purged}; None if it is not this owner's Sent item."""
        return await self.read(_sent.sent_status, mailbox, message_id)

    async def copy_sent_after_events(self, limit: int = 100) -> list[tuple[str, str]]:
        """Queue once, for each Sent item of a continuity event that is over, a copy to its owner
        (spool.sent.COPY_HEADER prepended); [(owner, copy queue ID)]."""
        return await self.write(lambda c: _sent.copy_sent_after_events(c, limit=limit))

    # -- the journal's indexer and the retention purge -----------------------------------------
    async def journal_pending(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` entries not indexed yet, oldest first: [(row id, queue ID)]."""
        return await self.read(_journal.pending_entries, limit)

    async def count_journal_pending(self) -> int:
        """Entries waiting for the indexer."""
        return await self.read(_journal.count_pending)

    async def filed_message_data(self, queue_id: str) -> bytes | None:
        """The bytes of a filed message (the held copy, else the queue's); None if gone."""
        return await self.read(_journal.message_data, queue_id)

    async def index_journal(self, described: list[_mbx.FilingEntry]) -> int:
        """Write the headers and search text of the pending entries of each message of
        ``described`` (FilingEntry as gateway.continuity.filing.describe makes them) and mark
        them indexed; entries indexed or purged meanwhile are left alone. Returns rows indexed."""
        return await self.write(_journal.index_entries, described,
                                size=sum(len(e.body_text) for e in described))

    async def purge_mailboxes(self, before: float, limit: int = _mbx.PURGE_BATCH) -> int:
        """Delete up to ``limit`` mailbox rows filed before ``before`` (unix seconds), oldest
        first, with the bytes no row refers to any more; the rows deleted (call again while it
        returns ``limit``: each call is one bounded write)."""
        return await self.write(_mbx.purge, before, limit)


__all__ = ["MailboxVerbs"]
