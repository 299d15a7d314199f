"""The spool as the running gateway uses it: one writer thread with group commit, reader threads.

SQLite connections belong to the thread that made them, and every write must be durable before
the 250 that depends on it. So one writer thread owns the write connection and takes work from a
queue: it runs every operation waiting at that moment inside one ``BEGIN IMMEDIATE`` transaction
(each in its own savepoint, so one failing operation does not undo the others), commits once (one
WAL fsync for the batch, ``synchronous=FULL``), and only then resolves the callers' futures.
Reads run on a small pool of reader threads with their own connections.

Errors: an operation's own exception is re-raised to its caller; a failed BEGIN or COMMIT, or
a storage failure inside any operation (disk full, I/O error, database locked: SQLite may then
have rolled the whole transaction back), raises SpoolError to every caller of the batch (nothing
of the batch is durable, so nothing may be acknowledged). ``SpoolError.full`` marks a full disk
(SQLITE_FULL, ENOSPC). The writer keeps its connection: the next batch tries again, so the spool
works again by itself once space is back. Reads raise SpoolError for the same storage failures.
"""
from __future__ import annotations

import asyncio
import fcntl
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from spool import attempt as _attempt
from spool import bodyfiles as _bodyfiles
from spool import checkpoint as _checkpoint
from spool import claims as _claims
from spool import commit as _commit
from spool import db as _db
from spool import journal as _journal
from spool import query as _query
from spool import recover as _recover
from spool import transitions as _tr
from spool.accounts_verbs import AccountVerbs
from spool.commit import NewMessage
from spool.console_verbs import ConsoleVerbs
from spool.continuity_verbs import ContinuityVerbs
from spool.errors import (  # noqa: F401
    SQLITE_FULL,
    STORAGE_CODES,
    SpoolError,
    _spool_error,
    storage_failure,
)
from spool.mailbox_verbs import MailboxVerbs
from spool.query import Recipient, StoredMessage
from spool.states import Claim, QueueState, StaleClaim

#: Most operations in one group commit, and most message bytes (keeps a batch's WAL write bounded).
MAX_BATCH_OPS = 512
MAX_BATCH_BYTES = 64 * 1024 * 1024


#: A BEGIN IMMEDIATE longer than this (seconds) counts as a wait for another writer's lock.
LOCK_WAIT_COUNTED = 0.001


class Spool(ContinuityVerbs, AccountVerbs, MailboxVerbs, ConsoleVerbs):
    """Async façade over the spool database at ``path``.

    ``await Spool.open(path)`` creates the database if needed, runs crash recovery (unless
    ``recover=False``) and starts the writer thread; ``await spool.close()`` drains and stops it.
    """

    def __init__(self, path: Path, loop: asyncio.AbstractEventLoop):
        self.path = Path(path)
        self._loop = loop
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._writer = threading.Thread(target=self._write_loop, name="spool-writer", daemon=True)
        self._readers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="spool-reader")
        #: writes body files (spool.bodyfiles): several at once, each fsync waits on the disk
        self._files = ThreadPoolExecutor(max_workers=4, thread_name_prefix="spool-files")
        self.body_dir = _bodyfiles.body_dir(self.path)
        self._local = threading.local()
        self._ready = threading.Event()
        self._open_error: BaseException | None = None
        self.recovered: dict[str, int] = {}
        self.batches = 0
        self.batched_ops = 0
        #: Writes refused because their claim token was no longer current (StaleClaim raised).
        self.stale_claims = 0
        #: The owner written on claims (one node: its name does not matter).
        self.node = "local"
        #: One node owns this file: it requeues its own interrupted deliveries at open, and an
        #: expired claim is never taken back while the process runs (its renewals may be late).
        self.shared = False
        #: Two characters put in every queue ID this process makes (spool.commit.node_tag): each
        #: intake worker of one gateway has its own, so their IDs can never be equal.
        self.id_tag = ""
        #: Time the writer waited for SQLite's write lock (BEGIN IMMEDIATE), in seconds: the
        #: total, the longest, and how many BEGINs waited over LOCK_WAIT_COUNTED s (other
        #: processes writing the same file: intake workers, the CLI).
        self.lock_wait_s = self.lock_wait_max_s = 0.0
        self.lock_waits = 0
        #: Set (before the first write) when other processes write this file too (intake
        #: workers): each batch first takes an exclusive flock(2) on this path, so writers queue
        #: in the kernel and start the moment the previous COMMIT ends, instead of polling in
        #: SQLite's busy handler (sleeps of up to 100 ms: measured 15 ms per batch on average
        #: with 3 writers, docs/operations.md). SQLite's own lock and busy_timeout still apply.
        self.write_lock: Path | None = None
        self._lock_fd: int | None = None
        #: WAL checkpoints on their own thread, outside the write lock (spool.checkpoint).
        self.checkpointer = _checkpoint.Checkpointer(self.path)

    @classmethod
    async def open(cls, path: str | Path, recover: bool = True) -> Spool:
        self = cls(Path(path), asyncio.get_running_loop())
        self._writer.start()
        await asyncio.to_thread(self._ready.wait)
        if self._open_error is not None:
            raise SpoolError(f"cannot open spool {path}: {self._open_error}") from self._open_error
        self.checkpointer.start()
        if recover:
            self.recovered = await self.write(_recover.requeue_interrupted)
        return self

    async def close(self) -> None:
        self._q.put(None)
        await asyncio.to_thread(self._writer.join)
        await asyncio.to_thread(self.checkpointer.stop)
        self._readers.shutdown(wait=True)
        self._files.shutdown(wait=True)

    # -- writes -------------------------------------------------------------------------------
    async def write(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> Any:
        """Run ``fn(conn, *args)`` in the next group commit; return its result once durable."""
        fut = self._loop.create_future()
        self._q.put((fn, args, fut, size))
        return await fut

    async def commit(self, msg: NewMessage) -> str:
        """Store a received message durably (state incoming); return its queue ID. A body of
        spool.bodyfiles.FILE_MIN bytes or more is first written and fsynced as its own file (by
        this process, outside the write lock), then its row is committed. Raises SpoolError
        (``full`` when the disk is full); nothing of the message stays behind then."""
        if len(msg.data) < _bodyfiles.FILE_MIN:
            return await self.write(_commit.insert_message, msg, size=len(msg.data))
        try:
            await self._loop.run_in_executor(self._files, _bodyfiles.write, self.body_dir,
                                             msg.queue_id, msg.data)
        except OSError as e:
            raise _spool_error("spool commit failed", e) from e
        try:
            return await self.write(_commit.insert_message, msg, None, True, size=1024)
        except asyncio.CancelledError:
            raise       # the row may still commit: the file stays (bodyfiles.sweep if not)
        except BaseException:
            _bodyfiles.remove(self.body_dir, msg.queue_id)   # the row was not committed
            raise

    def new_queue_id(self) -> str:
        """A fresh queue ID for a message about to be committed (spool.commit.new_queue_id)."""
        return _commit.new_queue_id(node_tag=self.id_tag)

    async def claim_due(self, limit: int, ttl: float = _claims.CLAIM_TTL) -> list[Claim]:
        """Claim up to ``limit`` due messages for ``ttl`` seconds (spool.claims.claim)."""
        return await self.write(_tr.claim_due, limit, None, ttl, self.node)

    async def renew(self, claims: list[Claim], ttl: float = _claims.CLAIM_TTL) -> list[Claim]:
        """Extend the claims still current by ``ttl`` seconds; return those (spool.claims.renew)."""
        return await self.write(lambda c: _claims.renew(c, claims, ttl=ttl))

    async def requeue_expired(self) -> int:
        """Return messages whose claim expired to the queue; return how many."""
        return await self.write(_claims.requeue_expired)

    async def record_attempt(self, queue_id: str, outcomes: list[_tr.RcptOutcome],
                             next_attempt_at: float, dsn: NewMessage | None = None,
                             hold: bool = False, filing=None, journal=None,
                             on_journal_error: Callable[[Exception], None] | None = None,
                             hold_reason: str = "continuity", token: int | None = None) -> QueueState:
        """Record an attempt (see transitions.record_attempt) and, in the same transaction,
        enqueue the bounce ``dsn`` if one is given (a bounce is never lost or sent twice), file
        a held message into its continuity mailboxes (``filing``: spool.mailbox.FilingEntry), and
        journal its delivered local recipients (``journal``: spool.journal.JournalEntry). A
        journal filing that fails (not the storage: that fails the whole record) is undone alone:
        the attempt is still recorded, and ``on_journal_error(exc)`` is called on the loop.
        ``hold_reason`` is 'continuity' or 'drill' (spool.drill) for a held message.
        With a claim ``token``, nothing is written unless that claim is still current: StaleClaim
        is raised (and counted in ``stale_claims``)."""
        try:
            state, journal_error = await self.write(_attempt.record_with_dsn, queue_id, outcomes,
                                                    next_attempt_at, dsn, hold, filing, journal,
                                                    hold_reason, token)
        except StaleClaim:
            self.stale_claims += 1
            raise
        if journal_error is not None and on_journal_error is not None:
            on_journal_error(journal_error)
        return state

    async def move(self, queue_id: str, src, dst: QueueState, **kw) -> QueueState:
        """transitions.move in the next group commit (``token=`` guards it by a claim: a stale
        one raises StaleClaim, counted in ``stale_claims``)."""
        try:
            return await self.write(lambda c: _tr.move(c, queue_id, src, dst, **kw))
        except StaleClaim:
            self.stale_claims += 1
            raise

    async def record_delivered(self, queue_id: str, outcomes: list[_tr.RcptOutcome], journal=None,
                               *, token: int | None = None) -> int:
        """The delivered recipients of an attempt in progress, journaled with ``journal``
        (spool.journal.record_delivered); StaleClaim (counted) unless ``token`` is current."""
        try:
            return await self.write(_journal.record_delivered, queue_id, outcomes, journal, token)
        except StaleClaim:
            self.stale_claims += 1
            raise

    async def purge_finished(self, before: float, limit: int = _tr.PURGE_BATCH) -> int:
        """Delete up to ``limit`` finished messages last changed before ``before`` (unix s)."""
        return await self.write(_tr.purge_finished, before, limit)

    # -- reads --------------------------------------------------------------------------------
    async def read(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run ``fn(conn, *args)`` on a reader thread's own connection."""
        return await self._loop.run_in_executor(self._readers, self._run_read, fn, args)

    async def get(self, queue_id: str, with_data: bool = False) -> StoredMessage | None:
        return await self.read(_query.get_message, queue_id, with_data)

    async def counts(self) -> dict[str, int]:
        return await self.read(_query.count_by_state)

    async def message_size(self, queue_id: str) -> int | None:
        return await self.read(_query.message_size, queue_id)

    async def ping(self) -> None:
        """A cheap read (health checks); raises SpoolError if the spool cannot be read."""
        await self.read(_query.ping)

    async def next_due_at(self) -> float | None:
        return await self.read(_query.next_due_at)

    def _run_read(self, fn, args):
        try:
            conn = getattr(self._local, "conn", None)
            if conn is None:
                conn = self._local.conn = _db.connect(self.path)
            return fn(conn, *args)
        except Exception as e:
            if storage_failure(e):
                raise _spool_error("spool read failed", e) from e
            raise

    # -- the writer thread --------------------------------------------------------------------
    def _write_loop(self) -> None:
        try:
            conn = _db.connect(self.path)
            # checkpoints run on the Checkpointer's thread; this is only the backstop
            conn.execute(f"PRAGMA wal_autocheckpoint={_checkpoint.backstop_pages(conn)}")
        except BaseException as e:  # reported by open()
            self._open_error = e
            self._ready.set()
            return
        self._ready.set()
        stop = False
        while not stop:
            item = self._q.get()
            if item is None:
                break
            batch, size = [item], item[3]
            while len(batch) < MAX_BATCH_OPS and size < MAX_BATCH_BYTES:
                try:
                    nxt = self._q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
                size += nxt[3]
            self._run_batch(conn, batch)
        conn.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)

    def _run_batch(self, conn: sqlite3.Connection, batch: list) -> None:
        t0 = time.perf_counter()
        if self.write_lock is None:
            return self._run_batch_locked(conn, batch, t0)
        if self._lock_fd is None:
            self._lock_fd = os.open(self.write_lock, os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)    # the kernel wakes us as soon as it is free
        try:
            self._run_batch_locked(conn, batch, t0)
        finally:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _run_batch_locked(self, conn: sqlite3.Connection, batch: list, t0: float) -> None:
        results: list[tuple[asyncio.Future, Any, BaseException | None]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")     # waits up to db.BUSY_TIMEOUT_MS for the lock
            self._lock_waited(time.perf_counter() - t0)
            for fn, args, fut, _size in batch:
                conn.execute("SAVEPOINT op")
                try:
                    r = fn(conn, *args)
                except Exception as e:
                    if storage_failure(e) or not conn.in_transaction:
                        raise           # the storage failed: the whole batch fails (below)
                    # the caller's own error: undo its part only
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((fut, None, e))
                else:
                    conn.execute("RELEASE op")
                    results.append((fut, r, None))
            unlinks = _bodyfiles.take_unlinks(conn)    # file bodies this or an earlier batch deleted
            conn.execute("COMMIT")
        except Exception as e:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = _spool_error("spool commit failed", e)
            results = [(fut, None, err) for _fn, _args, fut, _size in batch]
            unlinks = []
        self.batches += 1
        self.batched_ops += len(batch)
        if unlinks:          # no committed row names them any more (spool.bodyfiles); before the
            _bodyfiles.unlink_all(self.body_dir, unlinks)     # results: a delete returns once gone
        self._loop.call_soon_threadsafe(_resolve_all, results)

    def _lock_waited(self, waited: float) -> None:
        self.lock_wait_s += waited
        self.lock_wait_max_s = max(self.lock_wait_max_s, waited)
        if waited > LOCK_WAIT_COUNTED:
            self.lock_waits += 1

    def lock_stats(self) -> dict:
        """Group commits and write-lock waits so far, for log lines: batches, ops, waits over
        LOCK_WAIT_COUNTED s, total and longest wait in ms."""
        return {"batches": self.batches, "batched_ops": self.batched_ops,
                "lock_waits": self.lock_waits, "lock_wait_ms": round(self.lock_wait_s * 1000, 1),
                "lock_wait_max_ms": round(self.lock_wait_max_s * 1000, 1)}


def _resolve_all(results) -> None:
    for fut, r, e in results:
        if fut.done():
            continue
        if e is not None:
            fut.set_exception(e)
        else:
            fut.set_result(r)


__all__ = ["NewMessage", "Recipient", "Spool", "SpoolError", "StoredMessage", "storage_failure"]
