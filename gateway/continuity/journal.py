"""The journal in the gateway (continuity.journal = "all"): every message delivered to a local
mailbox is also filed into its continuity mailbox, so on the first minute of an outage users
already see yesterday's mail in the webmail (docs/webmail.md, "Journal").

Three parts, so that filing costs the relay path next to nothing:

- ``Owners``, the queue manager's ``journal`` hook, on the hot path: which mailboxes the
  delivered recipients reach (groups expanded through the directory, exactly as
  gateway.continuity.filing does for held mail), cached per directory version. No parsing: the
  entry (owners and queue ID) is filed pending in the delivery record's transaction, and the
  bytes stay where the queue has them (spool.journal).
- ``Journal.index_pending``, in the background: parses pending entries' messages
  (filing.describe, in a thread) and writes their headers and FTS rows in one transaction per
  batch. Pending entries survive a crash and are indexed after the restart. While deliveries
  are in flight it works at most ``BUSY_SHARE`` of the time; idle, it catches up at full speed.
- ``Journal.purge_expired``, hourly: entries older than continuity.mailbox_retention, in
  bounded batches (spool.mailbox.purge), pausing between batches at least as long as the last
  one took, so other writes (intake's commits) get the writer at least half the time.

continuity.mode = "off" (a plain relay): nothing is filed, but the housekeeping task still runs,
so entries filed before the switch are indexed and expire on schedule.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from gateway.continuity import filing
from spool import mailbox
from spool.journal import JournalEntry

#: Entries read per indexing batch, and most body text (characters) written in one transaction.
INDEX_BATCH = 100
INDEX_BATCH_TEXT = 4_000_000
#: Share of wall time the indexer may work while deliveries are in flight (the rest it sleeps).
BUSY_SHARE = 0.05
#: Seconds between looks for pending entries when there are none (a batch follows a full one
#: at once).
IDLE_POLL = 1.0
#: Seconds between retention purges, and the shortest pause between two purge batches.
PURGE_INTERVAL = 3600.0
PURGE_PAUSE = 0.05
#: Most recipients whose mailboxes are remembered per directory version.
OWNER_CACHE = 50_000


class Owners:
    """The queue manager's journal hook: ``owners(msg, delivered)`` → JournalEntry or None.
    ``directory()`` returns (policies.directory.Directory, filtering enabled), as for filing."""

    def __init__(self, directory: Callable[[], tuple]):
        self._directory = directory
        self._version = None
        self._cache: dict[str, tuple[str, ...]] = {}

    def __call__(self, msg, delivered: list[str]) -> JournalEntry | None:
        d, filtering = self._directory()
        if self._version is None or self._version[0] is not d or self._version[1] != filtering:
            self._version, self._cache = (d, filtering), {}   # a reloaded directory
        owners: dict[str, str] = {}
        for rcpt in delivered:
            keys = self._cache.get(rcpt)
            if keys is None:
                if len(self._cache) >= OWNER_CACHE:
                    self._cache.clear()
                keys = self._cache[rcpt] = tuple(filing.mailboxes_for([rcpt], d, filtering))
            for k in keys:
                owners.setdefault(k, rcpt)
        if not owners:
            return None
        return JournalEntry(msg.queue_id, owners, msg.mail_from, msg.size)


class Journal:
    """The journal's housekeeping task: ``await run()`` until cancelled. ``busy()`` is True while
    the gateway relays (the queue manager has deliveries in flight)."""

    def __init__(self, spool, log, retention: float, busy: Callable[[], bool] = lambda: False,
                 clock: Callable[[], float] = time.time):
        self.spool, self.log, self.retention, self.busy, self.clock = spool, log, retention, busy, clock
        self.stats = {"indexed": 0, "index_failed": 0, "purged": 0}

    async def run(self) -> None:
        next_purge = 0.0
        while True:
            if time.monotonic() >= next_purge:
                next_purge = time.monotonic() + PURGE_INTERVAL
                try:
                    await self.purge_expired()
                except asyncio.CancelledError:
                    raise
                except Exception:
                    self.log.exception("mailbox_purge_failed")
                    next_purge = time.monotonic() + 60.0
            try:
                n = await self.index_pending()
            except asyncio.CancelledError:
                raise
            except Exception:
                self.log.exception("journal_index_failed")
                n = 0
            await asyncio.sleep(IDLE_POLL if n == 0 else 0)

    async def index_pending(self, limit: int = INDEX_BATCH) -> int:
        """Index one batch of pending entries (oldest first); return how many entries were
        indexed. A message that cannot be read or parsed is indexed with empty fields (counted
        in ``index_failed``) so that it never blocks the queue of pending entries. While
        ``busy()``, each parse is followed by a pause so that parsing takes at most BUSY_SHARE
        of the time (it holds the GIL the relay needs: a corpus message takes 3 ms at the
        median, 18 ms on average, 3 s at worst; bench/journal.py)."""
        rows = await self.spool.journal_pending(limit)
        if not rows:
            return 0
        described, text, done = [], 0, 0
        for qid in dict.fromkeys(q for _id, q in rows):
            data = await self.spool.filed_message_data(qid)
            t0 = time.monotonic()
            try:
                d = await asyncio.to_thread(filing.describe, qid, data or b"")
            except Exception:
                self.stats["index_failed"] += 1
                self.log.exception("journal_parse_failed", queue_id=qid)
                d = mailbox.FilingEntry(queue_id=qid, data=b"", mailboxes={})
            del data
            if self.busy():
                await asyncio.sleep((time.monotonic() - t0) * (1 - BUSY_SHARE) / BUSY_SHARE)
            described.append(d)
            text += len(d.body_text)
            if text >= INDEX_BATCH_TEXT:
                done += await self.spool.index_journal(described)
                described, text = [], 0
        if described:
            done += await self.spool.index_journal(described)
        self.stats["indexed"] += done
        return done

    async def purge_expired(self) -> int:
        """Delete entries filed more than ``retention`` seconds ago, batch by batch (each batch
        one write transaction: 86 ms median, 177 ms at most with corpus messages, bench/journal.py),
        pausing at least as long as the batch took; return how many."""
        before, total = self.clock() - self.retention, 0
        while True:
            t0 = time.monotonic()
            n = await self.spool.purge_mailboxes(before, mailbox.PURGE_BATCH)
            total += n
            if n < mailbox.PURGE_BATCH:
                break
            # the writer is ours at most half the time: intake's commits go in between
            await asyncio.sleep(max(PURGE_PAUSE, time.monotonic() - t0))
        if total:
            self.stats["purged"] += total
            self.log.info("mailbox_purged", entries=total)
        return total


def build(cfg, spool, qmgr, directory: Callable[[], tuple], log) -> Journal:
    """The housekeeping task, and the queue manager's journal hook when continuity is on and
    continuity.journal = "all" (mode "off" files nothing: see the module doc)."""
    c = cfg.continuity
    if c.mode != "off" and c.journal == "all":
        qmgr.journal = Owners(directory)
    return Journal(spool, log, c.mailbox_retention, busy=lambda: bool(qmgr.inflight))
