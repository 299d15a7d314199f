"""PgSpool: the queue core (spool.api.QueueSpool) on PostgreSQL, for several nodes on one database.

Writes that acknowledge something (commit, record_attempt, move) go through one writer task with
group commit: it takes every operation waiting at that moment, runs each in its own savepoint of
one transaction on one pooled connection, commits once, and only then resolves the callers'
futures (one operation's own error undoes only its savepoint). Claims, renewals, requeues and
fenced writes run in short transactions of their own, committed at once: a row lock is never
held across an SMTP session. Reads use any pooled connection.

Errors: the database unreachable or failing (psycopg.OperationalError: connection refused or
lost, server shut down, pool timeout after ``timeout`` s, disk full, deadlock) raises the same
spool.store.SpoolError the SQLite spool raises (``full`` for disk full), so intake answers
451 4.3.0; nothing of that batch is acknowledged. The pool replaces broken connections, so the
spool works again by itself when the database is back. Every operation is also bounded by
``op_timeout`` seconds on this side (asyncio.wait_for): a database cut off without a TCP reset
(a partition, a hung server) would otherwise hold a write until the kernel gives up on the
socket; past the bound the operation raises SpoolError, its connection is closed by the pool
(psycopg discards a connection returned mid-query), and what it had sent may or may not have
been committed (the caller answered 4xx: a retry may duplicate, never lose). A write under a stale claim token raises
StaleClaim (counted in ``stale_claims``); a fenced write under a lost lease raises LeaseLost
(counted in ``fenced_refused``); neither is retried here.
"""
from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable


from spool.claims import CLAIM_TTL
from spool.commit import NewMessage, new_queue_id, node_tag as node_tag_of
from spool.pg import db as _db
from spool.pg import lease as _lease
from spool.pg import nodes as _nodes
from spool.pg import queue as _q
from spool.pg import mailbox as _mailbox
from spool.pg.accounts import PgAccountVerbs
from spool.pg.console import PgConsoleVerbs
from spool.pg.continuity import PgContinuityVerbs
from spool.pg.mailbox import PgMailboxVerbs
from spool.query import StoredMessage
from spool.states import Claim, QueueState, StaleClaim
from spool.store import SpoolError
from spool.transitions import PURGE_BATCH, RcptOutcome

MAX_BATCH_OPS = 512
#: Seconds a leader lease lasts unless renewed (CLUSTER-NOTES: 15 s, renewed every 5 s).
LEASE_TTL = 15.0

Op = Callable[..., Awaitable[Any]]


async def _ping(conn) -> None:
    await conn.execute("SELECT 1")


def _spool_error(what: str, e: BaseException) -> SpoolError:
    if isinstance(e, SpoolError):
        return e
    if isinstance(e, TimeoutError):
        return SpoolError(f"{what}: no answer from the database within the operation timeout")
    return SpoolError(f"{what}: {type(e).__name__}: {str(e).strip()[:300]}", full=_db.disk_full(e))


class PgSpool(PgContinuityVerbs, PgAccountVerbs, PgMailboxVerbs, PgConsoleVerbs):
    """The PostgreSQL spool of node ``node``. ``await PgSpool.open(dsn, node=...)``, then the
    verbs of spool.api.QueueSpool, the leases, and ``await close()``."""

    def __init__(self, dsn: str, node: str, pool):
        self.dsn, self.node, self.pool = dsn, node, pool
        self._queue: asyncio.Queue = asyncio.Queue()
        self._writer: asyncio.Task | None = None
        self.node_tag = ""
        #: A tag of this process within its node, after ``node_tag`` in every queue ID it makes:
        #: intake worker K of a gateway sets spool.commit.node_tag(K) (gateway.worker), so the
        #: IDs of two workers of one node can never be equal; "" in the supervisor.
        self.id_tag = ""
        self.batches = 0
        self.batched_ops = 0
        self.isolated_batches = 0      # batches run again with a savepoint per operation
        self.stale_claims = 0
        self.fenced_refused = 0
        #: Seconds any one operation (a transaction, a read, a group commit) may take.
        self.op_timeout = 30.0
        self._late: set[asyncio.Task] = set()     # operations past op_timeout, still ending
        #: Several nodes share this storage: expired claims are returned by any node's qmgr.
        self.shared = True
        #: Crash recovery at open (the SQLite spool's); none here: expired claims come back.
        self.recovered: dict[str, int] = {}

    @classmethod
    async def open(cls, dsn: str, *, node: str, min_size: int = 2, max_size: int = 10,
                   timeout: float = 5.0, op_timeout: float = 30.0,
                   node_tag: str | None = None) -> "PgSpool":
        """Connect (waiting at most ``timeout`` s), migrate, register ``node`` (its tag in queue
        IDs), start the writer. Each later operation is bounded by ``op_timeout`` s. Raises
        SpoolError if the database cannot be reached or used, ValueError for an empty node
        name.

        ``node_tag`` given: join node ``node`` as another process of it (an intake worker,
        gateway.worker) whose registration the node's supervisor did and passed on. Nothing is
        migrated and the ``nodes`` row is not written (its ``started_at`` stays the node's),
        and the pool is opened without waiting: this open never touches the database, so it
        succeeds while PostgreSQL is down (the pool keeps connecting in the background;
        operations raise SpoolError until it answers)."""
        if not node:
            raise ValueError("a PostgreSQL spool needs a node name")
        pool = _db.make_pool(dsn, min_size=min_size, max_size=max_size, timeout=timeout)
        self = cls(dsn, node, pool)
        self.op_timeout = op_timeout
        if node_tag is not None:
            self.node_tag = node_tag
            await pool.open(wait=False)
            self._writer = asyncio.create_task(self._write_loop(), name=f"pg-spool-writer-{node}")
            return self
        try:
            await pool.open(wait=True, timeout=timeout)
            async with pool.connection() as conn:
                await _db.migrate(conn)
                cur = await conn.execute(
                    "INSERT INTO nodes (name, started_at, last_seen) VALUES (%s, clock_timestamp(),"
                    " clock_timestamp()) ON CONFLICT (name) DO UPDATE SET started_at ="
                    " excluded.started_at, last_seen = excluded.last_seen RETURNING id", (node,))
                self.node_tag = node_tag_of((await cur.fetchone())[0])
        except Exception as e:
            await pool.close()
            raise SpoolError(f"cannot open spool {_db.where(dsn)}: {type(e).__name__}: {e}") from e
        self._writer = asyncio.create_task(self._write_loop(), name=f"pg-spool-writer-{node}")
        return self

    async def close(self) -> None:
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
        await self.pool.close()

    # -- the queue core (spool.api.QueueSpool) -------------------------------------------------
    def new_queue_id(self) -> str:
        """A queue ID with this node's tag (unique across the cluster): 16 characters, or 18 in
        an intake worker (its ``id_tag`` after the node's; spool.commit.new_queue_id)."""
        return new_queue_id(node_tag=self.node_tag + self.id_tag)

    async def commit(self, msg: NewMessage) -> str:
        return await self.write(_q.insert_message, msg, self.node)

    async def claim_due(self, limit: int, ttl: float = CLAIM_TTL) -> list[Claim]:
        return await self.transaction(_q.claim, limit, self.node, ttl)

    async def renew(self, claims: list[Claim], ttl: float = CLAIM_TTL) -> list[Claim]:
        return await self.transaction(_q.renew, list(claims), ttl)

    async def requeue_expired(self) -> int:
        return await self.transaction(_q.requeue_expired)

    async def record_attempt(self, queue_id: str, outcomes: list[RcptOutcome],
                             next_attempt_at: float, dsn: NewMessage | None = None,
                             hold: bool = False, *, token: int | None = None,
                             hold_reason: str = "continuity", filing=None, journal=None,
                             on_journal_error=None) -> QueueState:
        """spool.store.Spool.record_attempt on PostgreSQL, with its continuity-mailbox
        ``filing`` and ``journal`` entry in the same transaction (spool.pg.mailbox)."""
        try:
            if filing is None and journal is None:
                return await self.write(_q.record_attempt, queue_id, outcomes, next_attempt_at,
                                        hold, token, dsn, self.node, hold_reason, token is not None)
            words = await _mailbox.filing_words(filing)
            state, journal_error = await self.write(
                _mailbox.record_with_filing, queue_id, outcomes, next_attempt_at, hold, token,
                dsn, self.node, hold_reason, filing, journal, words)
        except StaleClaim:
            self.stale_claims += 1
            raise
        if journal_error is not None and on_journal_error is not None:
            on_journal_error(journal_error)
        return state

    async def move(self, queue_id: str, src, dst: QueueState, *, next_attempt_at: float | None = None,
                   error: str | None = None, token: int | None = None) -> QueueState:
        try:
            return await self.write(lambda c: _q.move(c, queue_id, src, dst, token=token,
                                                      next_attempt_at=next_attempt_at, error=error))
        except StaleClaim:
            self.stale_claims += 1
            raise

    async def get(self, queue_id: str, with_data: bool = False) -> StoredMessage | None:
        return await self.read(_q.get_message, queue_id, with_data)

    async def counts(self) -> dict[str, int]:
        return await self.read(_q.count_by_state)

    async def next_due_at(self) -> float | None:
        return await self.read(_q.next_due_at)

    async def message_size(self, queue_id: str) -> int | None:
        return await self.read(_q.message_size, queue_id)

    async def record_delivered(self, queue_id: str, outcomes: list[RcptOutcome], journal=None,
                               *, token: int | None = None) -> int:
        try:
            if journal is not None:
                return await self.write(_mailbox.delivered_with_journal, queue_id, outcomes,
                                        journal, token)
            return await self.write(_q.record_delivered, queue_id, outcomes, token)
        except StaleClaim:
            self.stale_claims += 1
            raise

    async def purge_finished(self, before: float, limit: int = PURGE_BATCH) -> int:
        return await self.write(_q.purge_finished, before, limit)

    async def ping(self) -> None:
        """A cheap read (health checks, as the SQLite Spool's); SpoolError if unreachable."""
        await self.read(_ping)

    # -- leases --------------------------------------------------------------------------------
    async def acquire_lease(self, name: str = "continuity", ttl: float = LEASE_TTL) -> int | None:
        """Take or renew lease ``name`` for this node for ``ttl`` s; its epoch, or None when
        another node holds it (spool.pg.lease.acquire)."""
        return await self.transaction(_lease.acquire, name, self.node, ttl)

    async def release_lease(self, epoch: int, name: str = "continuity") -> bool:
        """End this node's lease at ``epoch`` now; False if it did not hold it."""
        return await self.transaction(_lease.release, name, self.node, epoch)

    async def leader(self, name: str = "continuity") -> _lease.Lease | None:
        """The lease ``name`` as stored (holder, epoch, expiry), or None."""
        return await self.read(_lease.current, name)

    async def fenced(self, epoch: int, fn: Op, *args: Any, name: str = "continuity") -> Any:
        """Run ``await fn(conn, *args)`` in one transaction with a FOR SHARE check that this node
        holds lease ``name`` at ``epoch``; return its result. Raises LeaseLost (counted in
        ``fenced_refused``, nothing written) if it does not."""
        async def run(conn):
            await _lease.check(conn, name, self.node, epoch)
            return await fn(conn, *args)
        try:
            return await self.transaction(run)
        except _lease.LeaseLost:
            self.fenced_refused += 1
            raise

    async def heartbeat(self, version: str) -> bool:
        """Stamp this node's last_seen (database clock) and ``version`` (spool.pg.nodes);
        False if its row is gone."""
        return await self.transaction(_nodes.heartbeat, self.node, version)

    async def nodes(self) -> list[_nodes.NodeStatus]:
        """Every node of the cluster with its heartbeat, lease and queue figures."""
        return await self.read(_nodes.list_nodes)

    # -- plumbing ------------------------------------------------------------------------------
    async def transaction(self, fn: Op, *args: Any) -> Any:
        """``await fn(conn, *args)`` in a transaction of its own, committed before returning."""
        async def run():
            async with self.pool.connection() as conn:
                async with conn.transaction():
                    return await fn(conn, *args)
        try:
            return await self._bounded(run())
        except Exception as e:
            if _db.storage_failure(e) or isinstance(e, TimeoutError):
                raise _spool_error("spool transaction failed", e) from e
            raise

    async def read(self, fn: Op, *args: Any) -> Any:
        """``await fn(conn, *args)`` on a pooled connection (autocommit)."""
        async def run():
            async with self.pool.connection() as conn:
                return await fn(conn, *args)
        try:
            return await self._bounded(run())
        except Exception as e:
            if _db.storage_failure(e) or isinstance(e, TimeoutError):
                raise _spool_error("spool read failed", e) from e
            raise

    async def write(self, fn: Op, *args: Any) -> Any:
        """``await fn(conn, *args)`` in the next group commit; its result once durable."""
        fut = asyncio.get_running_loop().create_future()
        await self._queue.put((fn, args, fut))
        return await fut

    async def _write_loop(self) -> None:
        stop = False
        while not stop:
            item = await self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < MAX_BATCH_OPS and not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                    break
                batch.append(nxt)
            await self._run_batch(batch)

    async def _run_batch(self, batch: list) -> None:
        results: list = []
        try:
            await self._bounded(self._commit_batch(batch, results))
        except Exception as e:
            err = _spool_error("spool commit failed", e)
            results = [(fut, None, err) for _fn, _args, fut in batch]
        self.batches += 1
        self.batched_ops += len(batch)
        for fut, r, e in results:
            if fut.done():
                continue
            if e is not None:
                fut.set_exception(e)
            else:
                fut.set_result(r)

    async def _bounded(self, coro) -> Any:
        """``await coro`` for at most ``op_timeout`` s, else TimeoutError. A late operation is
        cancelled but not waited for: its clean-up (a ROLLBACK on a connection nobody answers)
        may need the network that is gone, and asyncio.wait_for would wait for it. It ends
        when its socket does (keepalives, tcp_user_timeout) or the database answers again, and
        its connection goes back to the pool, which discards it."""
        task = asyncio.ensure_future(coro)
        try:
            done, _ = await asyncio.wait({task}, timeout=self.op_timeout)
        except asyncio.CancelledError:
            task.cancel()
            raise
        if not done:
            task.cancel()
            self._late.add(task)
            task.add_done_callback(self._late.discard)
            raise TimeoutError(f"no answer within {self.op_timeout:g} s")
        return task.result()

    async def _commit_batch(self, batch: list, results: list) -> None:
        """The batch in one transaction; appends (future, result, error) to ``results``.

        First without savepoints (each costs two more statements and a pipeline sync, more
        than most operations: bench/README.md), every operation sent before any Sent result is
        read: if every operation succeeds, that commit is the batch's. If one raises an error of
        its own (not a storage failure: a stale claim, a constraint), nothing of that
        transaction is kept (rolled back) and the batch runs again with a savepoint per
        operation (``_commit_isolated``), so only that operation fails. A storage failure
        raises (every caller gets the SpoolError)."""
        done: list = []
        try:
            async with self.pool.connection() as conn, conn.pipeline():
                async with conn.transaction():
                    for fn, args, fut in batch:
                        done.append((fut, await fn(conn, *args), None))
                    # the results of operations that only sent their statements (spool.pg.queue.
                    # Sent), read now: one pipeline sync for all of them
                    for i, (fut, r, _e) in enumerate(done):
                        if isinstance(r, _q.Sent):
                            done[i] = (fut, await r.result(), None)
        except Exception as e:
            if _db.storage_failure(e):
                raise
            self.isolated_batches += 1
            await self._commit_isolated(batch, results)
            return
        results.extend(done)

    async def _commit_isolated(self, batch: list, results: list) -> None:
        """One transaction with a savepoint per operation; appends (future, result, error)."""
        async with self.pool.connection() as conn, conn.pipeline():
            async with conn.transaction():
                for fn, args, fut in batch:
                    try:
                        async with conn.transaction():     # a savepoint per operation
                            r = await fn(conn, *args)
                            if isinstance(r, _q.Sent):
                                r = await r.result()
                    except Exception as e:
                        if _db.storage_failure(e):
                            raise
                        results.append((fut, None, e))
                    else:
                        results.append((fut, r, None))


__all__ = ["PgSpool", "LEASE_TTL"]
