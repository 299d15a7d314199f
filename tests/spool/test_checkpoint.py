"""WAL checkpoints on their own thread (spool.checkpoint) and the page size of a new spool
(spool.db.PAGE_SIZE): committed pages reach spool.db without any writer crossing
wal_autocheckpoint, a spool made with 16 KiB pages keeps them, works and gets the same 64 MiB
backstop, and a checkpoint that
fails is counted without stopping the thread or touching a commit."""
from __future__ import annotations

import asyncio
import sqlite3
import time

from spool import NewMessage, Spool
from spool import checkpoint as ckpt
from spool import db as sdb
from spool.query import get_message


def _msg(spool: Spool, size: int) -> NewMessage:
    body = (b"x" * 78 + b"\r\n") * (size // 80)
    return NewMessage(mail_from="a@remote.test", rcpt_tos=("bob@example.com",),
                      data=b"Subject: ckpt\r\n\r\n" + body, queue_id=spool.new_queue_id())


async def _fill(path, n: int, size: int) -> tuple[list[str], int, int]:
    spool = await Spool.open(path)
    try:
        writer_backstop = await spool.write(
            lambda conn: conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0])
        ids = [await spool.commit(_msg(spool, size)) for _ in range(n)]
        deadline = time.monotonic() + 5
        while spool.checkpointer.checkpoints == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        db_bytes = path.stat().st_size     # pages copied out of the WAL by a checkpoint
        return ids, writer_backstop, db_bytes
    finally:
        await spool.close()


def test_the_checkpointer_copies_commits_into_the_database_file(tmp_path):
    path = tmp_path / "spool.db"
    n, size = 40, 64 * 1024
    ids, backstop, db_bytes = asyncio.run(_fill(path, n, size))
    assert backstop * sdb.PAGE_SIZE == ckpt.BACKSTOP_BYTES == 64 * 1024 * 1024
    # 40 x 64 KiB = 2.5 MiB is far below the backstop (64 MiB): only the thread can have copied
    assert ckpt.BACKSTOP_BYTES > 10 * n * size
    assert db_bytes > n * size
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA page_size").fetchone()[0] == sdb.PAGE_SIZE
    conn.row_factory = sqlite3.Row
    assert all(len(get_message(conn, q, with_data=True).data) >= size - 80 for q in ids)


def test_a_spool_made_with_16k_pages_keeps_them_and_takes_mail(tmp_path):
    path = tmp_path / "spool.db"
    old = sqlite3.connect(path)
    old.execute("PRAGMA page_size=16384")   # as spools made 2026-12-03/04 have
    old.execute("PRAGMA journal_mode=WAL")
    old.execute("CREATE TABLE t (x)")     # the file now has its pages: the size is fixed
    old.close()
    ids, backstop, _db = asyncio.run(_fill(path, 5, 8 * 1024))
    conn = sqlite3.connect(path)
    assert sdb.PAGE_SIZE != 16384
    assert backstop == 4096 == ckpt.BACKSTOP_BYTES // 16384    # 64 MiB in its own pages
    assert conn.execute("PRAGMA page_size").fetchone()[0] == 16384
    assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == len(ids) == 5


def test_a_failed_checkpoint_is_counted_and_the_next_one_runs(tmp_path):
    path = tmp_path / "spool.db"
    sdb.connect(path).close()
    c = ckpt.Checkpointer(path)
    broken = sqlite3.connect(path)
    broken.close()                        # "Cannot operate on a closed database"
    assert c.checkpoint(broken) is False
    assert c.failures == 1 and "ProgrammingError" in c.last_error
    good = sdb.connect(path)
    good.execute("CREATE TABLE extra (x)")
    assert c.checkpoint(good) is True     # the table's pages were in the WAL
    assert c.checkpoints == 1 and c.failures == 1
    good.close()
