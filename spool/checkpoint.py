"""WAL checkpoints off the write path (issue 10: several writer processes on one SQLite spool).

In WAL mode every committed page is written twice: appended to ``spool.db-wal`` by the COMMIT,
then copied into ``spool.db`` by a checkpoint. SQLite's automatic checkpoint runs inside the
COMMIT that takes the WAL past ``wal_autocheckpoint`` pages, so the writer that happens to cross
the mark copies (and fsyncs) the whole WAL while every other writer waits for the write lock:
at 1 MiB messages two intake workers spent 60 % of their time waiting (bench/README.md).

So the spool's write connection sets a high ``wal_autocheckpoint`` (backstop_pages(): BACKSTOP_BYTES
in the spool's own pages; the automatic checkpoint remains only as a backstop bounding the WAL if
this thread stalls), and a
Checkpointer thread with its own connection runs ``PRAGMA wal_checkpoint(PASSIVE)`` every
INTERVAL seconds. A passive checkpoint takes no write lock: writers keep appending to the WAL
while it copies the frames committed before it started (https://sqlite.org/wal.html,
"Checkpointing", and https://sqlite.org/c3ref/wal_checkpoint_v2.html). Durability is unchanged:
a COMMIT still returns only after the WAL is fsynced (``synchronous=FULL``); a crash before a
checkpoint leaves the frames in the WAL, replayed at the next open.

The same thread sweeps orphan body files (spool.bodyfiles.sweep) every SWEEP_INTERVAL s.

A failed checkpoint (disk full, an I/O error) is counted in ``failures`` and tried again at the
next interval; it never stops the thread and never affects a commit.
"""
from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

from spool import bodyfiles as _bodyfiles
from spool import db as _db

#: Seconds between two passive checkpoints.
INTERVAL = 0.2
#: Bytes of WAL (64 MiB) before a COMMIT checkpoints by itself while a Checkpointer runs
#: (SQLite's default: 1,000 pages). ``wal_autocheckpoint`` counts pages, so the write connection
#: divides this by the spool's own page size (backstop_pages): a spool made with 16 KiB pages
#: gets the same 64 MiB as one with 4 KiB pages.
BACKSTOP_BYTES = 64 * 1024 * 1024


def backstop_pages(conn: sqlite3.Connection) -> int:
    """``wal_autocheckpoint`` value (pages, >= 1) for BACKSTOP_BYTES on ``conn``'s database.

    Reads ``PRAGMA page_size`` (bytes; fixed once the file has its first page, so 4,096 for a
    spool made now and 16,384 for one made on 2026-12-03/04). Raises what sqlite3 raises.
    """
    page = int(conn.execute("PRAGMA page_size").fetchone()[0])
    return max(1, BACKSTOP_BYTES // page)


class Checkpointer:
    """A daemon thread checkpointing the WAL of the spool at ``path`` every ``interval`` s.

    ``start()`` starts the thread, which opens its own connection (a failure to open counts as a
    failed checkpoint and is tried again at the next interval); ``stop()`` ends the thread after one last checkpoint. ``checkpoints`` counts the
    checkpoints that copied frames, ``failures`` those that raised (``last_error`` the latest).
    """

    def __init__(self, path: str | Path, interval: float = INTERVAL):
        self.path = Path(path)
        self.interval = interval
        self.checkpoints = self.failures = 0
        self.swept = 0          # orphan body files removed
        self._next_sweep = time.monotonic() + _bodyfiles.SWEEP_INTERVAL
        self._done = -1         # frames of the WAL already checkpointed at the last look
        self.last_error = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="spool-checkpoint", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        conn = None
        try:
            while True:
                stopping = self._stop.wait(self.interval)
                if conn is None:
                    try:
                        conn = _db.connect(self.path)
                    except sqlite3.Error as e:
                        self._failed(e)
                if conn is not None:
                    self.checkpoint(conn)
                    if time.monotonic() >= self._next_sweep:
                        self._next_sweep = time.monotonic() + _bodyfiles.SWEEP_INTERVAL
                        self.sweep(conn)
                if stopping:
                    break
        finally:
            if conn is not None:
                conn.close()

    def _failed(self, e: BaseException) -> None:
        self.failures += 1
        self.last_error = f"{type(e).__name__}: {e}"

    def sweep(self, conn: sqlite3.Connection) -> int:
        """bodyfiles.sweep in a transaction of its own; return files removed (0 on failure)."""
        try:
            n = _db.transaction(conn, lambda: _bodyfiles.sweep(conn, _bodyfiles.body_dir(self.path)))
        except (sqlite3.Error, OSError) as e:
            self._failed(e)
            return 0
        self.swept += n
        return n

    def checkpoint(self, conn: sqlite3.Connection) -> bool:
        """One passive checkpoint; True if it copied frames (False: nothing new, or it failed)."""
        try:
            _busy, _frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        except sqlite3.Error as e:
            self._failed(e)
            return False
        # ``done`` counts the WAL's checkpointed frames since the WAL last restarted
        copied = done > 0 and done != self._done
        self._done = done
        if copied:
            self.checkpoints += 1
        return copied


__all__ = ["Checkpointer", "INTERVAL", "BACKSTOP_BYTES", "backstop_pages"]
