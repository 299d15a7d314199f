"""Connection and DATA limits shared by every intake worker of one gateway (``server.workers`` > 1).

``smtp.max_connections`` and ``smtp.max_connections_per_client`` are the gateway's limits, as
Postfix's anvil keeps them for all its smtpd processes: with N workers, a client may still hold
only ``max_connections_per_client`` sessions in total, whichever worker the kernel gave each
connection to. The counts live in one shared memory table (``os.memfd_create``, made by the
supervisor, inherited by each worker as a file descriptor and mapped with ``mmap``); every
change is made under an exclusive ``flock(2)`` (two system calls per connection,
microseconds). The lock is taken on a descriptor each process opens for itself
(``/proc/self/fd/N``): a flock belongs to the open file description, and the one inherited
from the supervisor is shared by every worker, so locking it would exclude nobody.

``smtp.max_concurrent_data`` and its per-client limit are pooled the same way
(SharedDataSlots): a DATA transfer takes a slot of the gateway, whichever worker serves it, so
the memory bound of one process (bench/README.md "Memory") holds for the gateway and no
transfer waits while any worker has a slot free.

Layout (little-endian): for each worker K (1..N) an int64 of its open sessions at
8 × (K - 1), then for each worker an int64 of its DATA transfers at 8 × (N + K - 1); then SLOTS
entries of a 16-byte key (the client's IP address, IPv4 as IPv4-mapped IPv6; all zero: empty;
all 0xFF: deleted) followed by N int32 session counts and N int32 DATA counts, one of each per
worker, found by linear probing from a hash of the key. Each worker changes only its own
counts, so when a worker dies the supervisor clears its columns (``clear_worker``) before
starting it again, and the sessions and transfers that died with it stop counting at once.

A table with no free entry (more distinct clients at once than SLOTS, which is sized to twice
``max_connections``, at most MAX_SLOTS) admits a new client without a per-client count rather
than refuse it; the total still applies.
"""
from __future__ import annotations

import asyncio
import contextlib
import fcntl
import ipaddress
import mmap
import os
import struct
import zlib
from collections import deque
from typing import AsyncIterator

from gateway.intake import replies
from gateway.intake.limits import ConnectionLimits

MAX_SLOTS = 1 << 16
_EMPTY, _DELETED = b"\0" * 16, b"\xff" * 16


def _key(ip: str) -> bytes:
    try:
        a = ipaddress.ip_address(ip)
    except ValueError:              # not an address (a test peer, a UNIX socket): its own key
        return zlib.crc32(ip.encode()).to_bytes(4, "little") + b"\x01" * 12
    if a.version == 4:
        a = ipaddress.IPv6Address(b"\0" * 10 + b"\xff\xff" + a.packed)
    k = a.packed
    return k if k not in (_EMPTY, _DELETED) else b"\x02" + k[1:]


class SharedTable:
    """The shared memory of one gateway's connection counts for ``workers`` processes."""

    def __init__(self, fd: int, workers: int, slots: int):
        self.fd, self.workers, self.slots = fd, workers, slots
        self.entry = 16 + 8 * workers
        self.base = 16 * workers
        self.size = self.base + slots * self.entry
        self.mem = mmap.mmap(fd, self.size)
        # this process's own open file description of the memfd, for flock (see the module doc)
        self.lock_fd = os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC)

    @classmethod
    def create(cls, workers: int, max_connections: int) -> SharedTable:
        """A new zeroed table (in the supervisor); its ``fd`` is inheritable by workers."""
        slots = min(MAX_SLOTS, max(64, 2 * max_connections))
        fd = os.memfd_create("mailgate-limits", 0)   # no MFD_CLOEXEC: the workers inherit it
        size = 16 * workers + slots * (16 + 8 * workers)
        os.ftruncate(fd, size)
        return cls(fd, workers, slots)

    def __enter__(self):
        fcntl.flock(self.lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self.lock_fd, fcntl.LOCK_UN)

    # -- under the lock -------------------------------------------------------------------------
    def total(self) -> int:
        return sum(struct.unpack_from(f"<{self.workers}q", self.mem, 0))

    def add_total(self, worker: int, delta: int) -> None:
        off = 8 * (worker - 1)
        (n,) = struct.unpack_from("<q", self.mem, off)
        struct.pack_into("<q", self.mem, off, max(0, n + delta))

    def find(self, key: bytes, insert: bool) -> int | None:
        """The offset of ``key``'s entry; with ``insert``, a new one if absent (None: full)."""
        start = zlib.crc32(key) % self.slots
        free = None
        for i in range(self.slots):
            off = self.base + ((start + i) % self.slots) * self.entry
            k = self.mem[off:off + 16]
            if k == key:
                return off
            if k == _EMPTY:
                if not insert:
                    return None
                free = off if free is None else free
                break
            if k == _DELETED and free is None:
                free = off
        if not insert or free is None:
            return None
        self.mem[free:free + 16] = key
        struct.pack_into(f"<{self.workers}i", self.mem, free + 16, *([0] * self.workers))
        return free

    def client_count(self, off: int) -> int:
        return sum(struct.unpack_from(f"<{self.workers}i", self.mem, off + 16))

    def add_client(self, off: int, worker: int, delta: int) -> None:
        o = off + 16 + 4 * (worker - 1)
        (n,) = struct.unpack_from("<i", self.mem, o)
        struct.pack_into("<i", self.mem, o, max(0, n + delta))
        self.drop_if_unused(off)

    # the DATA counts: the same shapes, after the session counts
    def data_total(self) -> int:
        return sum(struct.unpack_from(f"<{self.workers}q", self.mem, 8 * self.workers))

    def add_data_total(self, worker: int, delta: int) -> None:
        off = 8 * (self.workers + worker - 1)
        (n,) = struct.unpack_from("<q", self.mem, off)
        struct.pack_into("<q", self.mem, off, max(0, n + delta))

    def client_data(self, off: int) -> int:
        return sum(struct.unpack_from(f"<{self.workers}i", self.mem, off + 16 + 4 * self.workers))

    def add_client_data(self, off: int, worker: int, delta: int) -> None:
        o = off + 16 + 4 * (self.workers + worker - 1)
        (n,) = struct.unpack_from("<i", self.mem, o)
        struct.pack_into("<i", self.mem, o, max(0, n + delta))
        self.drop_if_unused(off)

    def drop_if_unused(self, off: int) -> None:
        """Mark the entry at ``off`` deleted if no session and no transfer counts on it."""
        if not any(struct.unpack_from(f"<{2 * self.workers}i", self.mem, off + 16)):
            self.mem[off:off + 16] = _DELETED

    def clear_worker(self, worker: int) -> None:
        """Forget every session and DATA transfer of ``worker`` (it died): its totals and its
        columns."""
        with self:
            struct.pack_into("<q", self.mem, 8 * (worker - 1), 0)
            struct.pack_into("<q", self.mem, 8 * (self.workers + worker - 1), 0)
            for i in range(self.slots):
                off = self.base + i * self.entry
                if self.mem[off:off + 16] not in (_EMPTY, _DELETED):
                    struct.pack_into("<i", self.mem, off + 16 + 4 * (worker - 1), 0)
                    struct.pack_into("<i", self.mem, off + 16 + 4 * (self.workers + worker - 1), 0)
                    self.drop_if_unused(off)


class SharedConnectionLimits(ConnectionLimits):
    """ConnectionLimits over a SharedTable, for worker ``worker``: the same 421 replies and the
    same ``acquire``/``release``, the slots counted over every worker of the gateway."""

    def __init__(self, table: SharedTable, worker: int, total: int, per_client: int):
        # not ConnectionLimits.__init__: its local counts (``open``, ``by_ip``) live in the table
        self.total, self.per_client = total, per_client
        self.table, self.worker = table, worker
        self._uncounted: dict[str, int] = {}   # clients admitted while the table was full

    @property
    def open(self) -> int:
        with self.table as t:
            return t.total()

    def acquire_total(self) -> str | None:
        with self.table as t:
            if t.total() >= self.total:
                return replies.TOO_MANY_CONNECTIONS
            t.add_total(self.worker, 1)
        return None

    def acquire_client(self, ip: str) -> str | None:
        with self.table as t:
            off = t.find(_key(ip), insert=True)
            if off is None:
                self._uncounted[ip] = self._uncounted.get(ip, 0) + 1
                return None
            if t.client_count(off) >= self.per_client:
                return replies.TOO_MANY_CONNECTIONS_FROM_YOU
            t.add_client(off, self.worker, 1)
        return None

    def release_total(self) -> None:
        with self.table as t:
            t.add_total(self.worker, -1)

    def release_client(self, ip: str) -> None:
        if self._uncounted.get(ip):
            self._uncounted[ip] -= 1
            if not self._uncounted[ip]:
                del self._uncounted[ip]
            return
        with self.table as t:
            off = t.find(_key(ip), insert=False)
            if off is not None:
                t.add_client(off, self.worker, -1)


class SharedDataSlots:
    """gateway.intake.limits.DataSlots over a SharedTable, for worker ``worker``: at most
    ``total`` DATA transfers at once in the whole gateway, ``per_client`` per client IP, both
    taken together under the lock (a transfer that waits holds nothing another could use).
    ``async with hold(ip)`` waits, never refuses. A client's transfers on this worker go in
    arrival order; one over its own limit never holds up another client's. A slot given back
    on this worker wakes this worker's waiters at once (they try in arrival order); one given
    back by another worker is seen within POLL_MAX seconds (a waiter polls, from POLL_FIRST
    doubling). A client the table has no entry for (it is full) is held to the total only."""

    POLL_FIRST, POLL_MAX = 0.002, 0.005    # seconds

    def __init__(self, table: SharedTable, worker: int, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self.table, self.worker = table, worker
        self._waiting: deque[tuple[bytes, asyncio.Event]] = deque()

    def _take(self, key: bytes) -> bool | None:
        """Take a slot for ``key``: True (counted for the client too), False (the total only:
        no entry free), None (over a limit: nothing taken)."""
        with self.table as t:
            if t.data_total() >= self.total:
                return None
            off = t.find(key, insert=True)
            if off is not None and t.client_data(off) >= self.per_client:
                t.drop_if_unused(off)
                return None
            t.add_data_total(self.worker, 1)
            if off is not None:
                t.add_client_data(off, self.worker, 1)
            return off is not None

    def _give_back(self, key: bytes, counted: bool) -> None:
        with self.table as t:
            t.add_data_total(self.worker, -1)
            if counted:
                off = t.find(key, insert=False)
                if off is not None:
                    t.add_client_data(off, self.worker, -1)
        self._wake_all()

    def _wake_all(self) -> None:
        for _key_, wake in self._waiting:
            wake.set()

    @contextlib.asynccontextmanager
    async def hold(self, ip: str) -> AsyncIterator[None]:
        key = _key(ip)
        # with transfers already waiting here, a new one queues behind them (fairness)
        counted = self._take(key) if not self._waiting else None
        if counted is None:
            counted = await self._wait(key)
        try:
            yield
        finally:
            self._give_back(key, counted)

    async def _wait(self, key: bytes) -> bool:
        """Wait for a slot: try when woken or when the poll interval passes, if no earlier
        waiter of this worker is of the same client."""
        me = (key, asyncio.Event())
        self._waiting.append(me)
        delay, took = self.POLL_FIRST, False
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(me[1].wait(), delay)
                me[1].clear()
                if next(w for w in self._waiting if w[0] == key) is me:
                    counted = self._take(key)
                    if counted is not None:
                        took = True
                        return counted
                delay = min(delay * 2, self.POLL_MAX)
        finally:
            self._waiting.remove(me)
            if not took:                   # gave up: the next of this client may try now
                self._wake_all()


__all__ = ["MAX_SLOTS", "SharedConnectionLimits", "SharedDataSlots", "SharedTable"]
