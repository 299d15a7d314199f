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
import errno
import fcntl
import os
import queue
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

from spool import checkpoint as _checkpoint
from spool import claims as _claims
from spool import commit as _commit
from spool import mailbox as _mailbox
from spool import db as _db
from spool import journal as _journal
from spool import query as _query
from spool import recover as _recover
from spool import transitions as _tr
from spool.commit import NewMessage
from spool.accounts_verbs import AccountVerbs
from spool.console_verbs import ConsoleVerbs
from spool.continuity_verbs import ContinuityVerbs
from spool.mailbox_verbs import MailboxVerbs
from spool.query import Recipient, StoredMessage
from spool.states import Claim, QueueState, StaleClaim

#: Most operations in one group commit, and most message bytes (keeps a batch's WAL write bounded).
MAX_BATCH_OPS = 512
MAX_BATCH_BYTES = 64 * 1024 * 1024


#: SQLite primary result codes that mean the storage failed, not the operation: BUSY, LOCKED,
#: NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
STORAGE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
SQLITE_FULL = 13
#: A BEGIN IMMEDIATE longer than this (seconds) counts as a wait for another writer's lock.
LOCK_WAIT_COUNTED = 0.001


class SpoolError(Exception):
    """The spool could not make an operation durable (disk full, I/O error, database locked).
    ``full`` is True when the disk (or quota) is full: intake answers 452 4.3.1 then."""

    def __init__(self, message: str, *, full: bool = False):
        super().__init__(message)
        self.full = full


def storage_failure(e: BaseException) -> bool:
    """True if ``e`` is a failure of the storage (see STORAGE_CODES, or an OSError), not an
    error of the operation itself (a constraint, a refused transition)."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        if code is None:
            return isinstance(e, sqlite3.OperationalError)
        return code & 0xFF in STORAGE_CODES
    return isinstance(e, OSError)


def _spool_error(what: str, e: BaseException) -> SpoolError:
    if isinstance(e, SpoolError):
        return e
    code = getattr(e, "sqlite_errorcode", None)
    full = (code is not None and code & 0xFF == SQLITE_FULL) or \
        getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    return SpoolError(f"{what}: {e}", full=full)


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
    async def open(cls, path: str | Path, recover: bool = True) -> "Spool":
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

    # -- writes -------------------------------------------------------------------------------
    async def write(self, fn: Callable[..., Any], *args: Any, size: int = 0) -> Any:
        """Run ``fn(conn, *args)`` in the next group commit; return its result once durable."""
        fut = self._loop.create_future()
        self._q.put((fn, args, fut, size))
        return await fut

    async def commit(self, msg: NewMessage) -> str:
        """Store a received message durably (state incoming); return its queue ID."""
        return await self.write(_commit.insert_message, msg, size=len(msg.data))

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
            state, journal_error = await self.write(_record_with_dsn, queue_id, outcomes,
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
            conn.execute(f"PRAGMA wal_autocheckpoint={_checkpoint.BACKSTOP_PAGES}")
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
            conn.execute("COMMIT")
        except Exception as e:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            err = _spool_error("spool commit failed", e)
            results = [(fut, None, err) for _fn, _args, fut, _size in batch]
        self.batches += 1
        self.batched_ops += len(batch)
        self._loop.call_soon_threadsafe(_resolve_all, results)

    def _lock_waited(self, waited: float) -> None:
        self.lock_wait_s += waited
        if waited > self.lock_wait_max_s:
            self.lock_wait_max_s = waited
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


def _record_with_dsn(conn, queue_id, outcomes, next_attempt_at, dsn, hold=False, filing=None,
                     journal=None, hold_reason="continuity", token=None):
    journal_error = None
    if token is not None:     # before the journal: a stale claim writes nothing at all
        _claims.check_current(conn, queue_id, token)
    if journal is not None:   # before the record: record_attempt keeps the bytes it refers to
        conn.execute("SAVEPOINT journal")
        try:
            _journal.file_delivered(conn, journal)
        except Exception as e:
            if storage_failure(e) or not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO journal")
            journal_error = e
        conn.execute("RELEASE journal")
    state = _tr.record_attempt(conn, queue_id, outcomes, next_attempt_at, hold=hold,
                               hold_reason=hold_reason, token=token)
    if filing is not None and state is QueueState.HOLD:
        _mailbox.file_message(conn, filing)
    if dsn is not None:
        _commit.insert_message(conn, dsn)
    return state, journal_error


__all__ = ["Spool", "SpoolError", "NewMessage", "StoredMessage", "Recipient", "storage_failure"]
