"""Large message bodies in files beside the SQLite spool (issue 10: 1 MiB mail, several writers).

A body of FILE_MIN bytes or more is not stored in the ``bodies`` row (whose ``data`` is then
empty and ``file`` = 1) but in ``<data_dir>/bodies/<queue ID>``, as Postfix keeps each message in
its own queue file. In SQLite it would be written twice (appended to the WAL by the COMMIT,
copied into spool.db by the checkpoint), and while the WAL append and its fsync of a 1 MiB body
run every other writer of the file waits for the write lock: two intake workers at 1 MiB × 10
sessions spent 60 % of their time waiting (bench/README.md). A file is written once, by the
process that received the message, in parallel with every other process, and the row that
names it is a few hundred bytes.

Durability, in this order (the 250 depends on the last step):

1. ``write()``: the file is created (O_EXCL: a queue ID is never reused), written, fsynced, and
   the directory fsynced, so its name survives a power loss too;
2. the row (messages, recipients, bodies with file = 1) is committed in the group commit;
3. only then the 250. A row is never committed before its file is durable, so a committed
   message always has its bytes; a file without a row (a crash between 1 and 2, a failed
   commit) is an orphan, removed by ``sweep()`` at start-up and every SWEEP_INTERVAL s on the
   checkpointer's thread (spool.checkpoint) once it is ORPHAN_AGE s old: a row is committed
   milliseconds after its file, or fails and its file is removed at once, so a file that old
   without a row is never one a running process is about to commit.

Deleting: an ``AFTER DELETE`` trigger on ``bodies`` (migration 0016; it fires for ON DELETE
CASCADE too) records the queue ID of every file body in ``body_unlinks`` in the deleting
transaction. The spool's writer takes up to UNLINK_BATCH of them into each group commit, deletes
their ``body_unlinks`` rows, and unlinks the files once that commit is durable, before the batch's callers get their results
(``unlink_all``); a crash in between leaves orphans for ``sweep()``. A file is therefore never
removed while a committed row still names it.

Reading: ``read_body`` returns the bytes of a row whichever way they are stored; a file that is
missing (deleted by hand, a lost disk) reads as None, like a missing row, so the message is
handled as "message bytes missing" (spool.recover marks it corrupt at the next start).
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

#: Bodies of at least this many bytes go to a file (smaller ones stay in their row: for them one
#: group commit's single fsync is cheaper than a file and a directory fsync per message).
FILE_MIN = 256 * 1024
#: Seconds a file without a row must have existed before sweep() removes it, and seconds
#: between two sweeps while the spool is open.
ORPHAN_AGE = 600.0
SWEEP_INTERVAL = 300.0
#: ``body_unlinks`` entries taken into one group commit.
UNLINK_BATCH = 256


def body_dir(db_path: str | os.PathLike) -> Path:
    """The directory of body files of the spool at ``db_path``: ``bodies/`` beside it."""
    return Path(db_path).parent / "bodies"


def _db_path(conn: sqlite3.Connection) -> str:
    return conn.execute("PRAGMA database_list").fetchone()[2]


def write(directory: Path, queue_id: str, data: bytes | bytearray) -> None:
    """Store ``data`` durably as ``directory/queue_id`` (created with the directory if missing;
    mode 0600). Raises FileExistsError if that file exists, OSError on a storage failure (ENOSPC:
    the disk is full), after removing what it wrote."""
    directory.mkdir(mode=0o700, exist_ok=True)
    path = directory / queue_id
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view, done = memoryview(data), 0
            while done < len(view):
                done += os.write(fd, view[done:])
            os.fsync(fd)
        finally:
            os.close(fd)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dfd)      # the new name is durable, not only the bytes
        finally:
            os.close(dfd)
    except BaseException:
        remove(directory, queue_id)
        raise


def remove(directory: Path, queue_id: str) -> None:
    """Delete ``directory/queue_id`` if it exists (never raises for a missing file)."""
    try:
        os.unlink(directory / queue_id)
    except FileNotFoundError:
        pass


def read_body(conn: sqlite3.Connection, queue_id: str) -> bytes | None:
    """The bytes of ``queue_id``'s ``bodies`` row, from the row or from its file; None if there
    is no row or its file is missing."""
    row = conn.execute("SELECT data, file FROM bodies WHERE queue_id=?", (queue_id,)).fetchone()
    if row is None:
        return None
    if not row[1]:
        return bytes(row[0])
    try:
        with open(body_dir(_db_path(conn)) / queue_id, "rb") as f:
            return f.read()
    except FileNotFoundError:
        return None


def take_unlinks(conn: sqlite3.Connection) -> list[str]:
    """Inside the caller's write transaction: up to UNLINK_BATCH queue IDs whose file bodies
    were deleted, their ``body_unlinks`` rows removed. Unlink the files after the COMMIT."""
    ids = [r[0] for r in conn.execute("SELECT queue_id FROM body_unlinks LIMIT ?", (UNLINK_BATCH,))]
    if ids:
        conn.executemany("DELETE FROM body_unlinks WHERE queue_id=?", [(q,) for q in ids])
    return ids


def unlink_all(directory: Path, queue_ids: list[str]) -> int:
    """Remove the files of ``queue_ids`` (after the commit that forgot them); return how many
    existed. A failure (EIO, EACCES) leaves the file for sweep()."""
    n = 0
    for q in queue_ids:
        try:
            os.unlink(directory / q)
            n += 1
        except OSError:
            pass
    return n


def missing(conn: sqlite3.Connection, directory: Path) -> list[str]:
    """Queue IDs whose ``bodies`` row says file = 1 but whose file does not exist."""
    have = set(os.listdir(directory)) if directory.is_dir() else set()
    return [r[0] for r in conn.execute("SELECT queue_id FROM bodies WHERE file=1")
            if r[0] not in have]


def sweep(conn: sqlite3.Connection, directory: Path, now: float | None = None) -> int:
    """Remove orphan files: no ``bodies`` row names them and they are older than ORPHAN_AGE s
    (or listed in ``body_unlinks``, whose rows are removed too: a write, in the caller's
    transaction or on its own). Returns files removed; one that cannot be removed is left for
    the next sweep."""
    if not directory.is_dir():
        return 0
    now = time.time() if now is None else now
    named = {r[0] for r in conn.execute("SELECT queue_id FROM bodies WHERE file=1")}
    forgotten = {r[0] for r in conn.execute("SELECT queue_id FROM body_unlinks")}
    removed = 0
    for name in os.listdir(directory):
        if name in named:
            continue
        path = directory / name
        try:
            if name not in forgotten and now - path.stat().st_mtime < ORPHAN_AGE:
                continue
            path.unlink()
            removed += 1
        except OSError:
            continue
    if forgotten:
        conn.executemany("DELETE FROM body_unlinks WHERE queue_id=?", [(q,) for q in forgotten])
    return removed


__all__ = ["FILE_MIN", "ORPHAN_AGE", "SWEEP_INTERVAL", "body_dir", "write", "remove", "read_body", "take_unlinks",
           "unlink_all", "missing", "sweep"]
