"""Large bodies in files beside the SQLite spool (spool.bodyfiles): where the bytes are, that
readers get them back, that a deleted row's file goes after the commit (directly or through ON
DELETE CASCADE), that a failed row commit leaves no file, that a full disk gives SpoolError with
``full`` and nothing behind, and what recovery does with orphans and with a missing file."""
from __future__ import annotations

import asyncio
import os
import sqlite3
import time

import pytest

from spool import NewMessage, Spool, SpoolError
from spool import bodyfiles as bf
from spool.query import get_message
from tests.support.smalldisk import SmallDisk


def _msg(spool: Spool, size: int, rcpts=("bob@example.com",)) -> NewMessage:
    line = b"y" * 62 + b"\r\n"
    return NewMessage(mail_from="a@remote.test", rcpt_tos=rcpts,
                      data=b"Subject: big\r\n\r\n" + line * (size // 64), queue_id=spool.new_queue_id())


def _db(path) -> sqlite3.Connection:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    return conn


def test_a_large_body_is_a_file_a_small_one_a_row_and_both_read_back(tmp_path):
    path = tmp_path / "spool.db"

    async def go():
        s = await Spool.open(path)
        try:
            big, small = _msg(s, bf.FILE_MIN + 4096), _msg(s, 8192)
            await s.commit(big)
            await s.commit(small)
            got = await s.get(big.queue_id, with_data=True)
            return big, small, got
        finally:
            await s.close()
    big, small, got = asyncio.run(go())
    conn = _db(path)
    rows = {r["queue_id"]: (r["file"], len(r["data"])) for r in conn.execute("SELECT * FROM bodies")}
    assert rows == {big.queue_id: (1, 0), small.queue_id: (0, len(small.data))}
    assert (tmp_path / "bodies" / big.queue_id).read_bytes() == big.data
    assert got.data == big.data
    assert get_message(conn, small.queue_id, with_data=True).data == small.data
    assert os.stat(tmp_path / "bodies" / big.queue_id).st_mode & 0o777 == 0o600


def test_deleting_the_row_removes_the_file_after_the_commit_also_through_cascade(tmp_path):
    path = tmp_path / "spool.db"

    async def go():
        s = await Spool.open(path)
        try:
            a, b = _msg(s, bf.FILE_MIN), _msg(s, bf.FILE_MIN)
            await s.commit(a)
            await s.commit(b)
            files_before = sorted(os.listdir(s.body_dir))
            await s.write(lambda c: c.execute("DELETE FROM bodies WHERE queue_id=?", (a.queue_id,)))
            await s.write(lambda c: c.execute("DELETE FROM messages WHERE queue_id=?", (b.queue_id,)))
            return files_before, sorted(os.listdir(s.body_dir))
        finally:
            await s.close()
    before, after = asyncio.run(go())
    assert len(before) == 2 and after == []
    assert _db(path).execute("SELECT count(*) FROM body_unlinks").fetchone()[0] == 0


def test_a_row_that_does_not_commit_leaves_no_file(tmp_path):
    path = tmp_path / "spool.db"

    async def go():
        s = await Spool.open(path)
        try:
            with pytest.raises(ValueError):       # no recipient: insert_message refuses
                await s.commit(_msg(s, bf.FILE_MIN, rcpts=()))
            return os.listdir(s.body_dir)
        finally:
            await s.close()
    assert asyncio.run(go()) == []
    assert _db(path).execute("SELECT count(*) FROM messages").fetchone()[0] == 0


@pytest.mark.skipif(not SmallDisk.available(), reason="needs root to mount a small tmpfs")
def test_a_full_disk_gives_a_full_spool_error_and_leaves_nothing(tmp_path):
    with SmallDisk(tmp_path / "data", "4M") as disk:
        path = disk.path / "spool.db"

        async def go():
            s = await Spool.open(path)
            try:
                disk.fill()
                with pytest.raises(SpoolError) as e:
                    await s.commit(_msg(s, 2 * bf.FILE_MIN))
                left = os.listdir(s.body_dir) if s.body_dir.exists() else []
                disk.free()
                m = _msg(s, 2 * bf.FILE_MIN)            # space is back: the next one is taken
                await s.commit(m)
                return e.value, left, m, os.listdir(s.body_dir)
            finally:
                await s.close()
        err, left, m, now = asyncio.run(go())
        assert err.full and left == [] and now == [m.queue_id]


def test_recovery_marks_a_missing_file_corrupt_and_sweeps_only_old_orphans(tmp_path):
    path = tmp_path / "spool.db"

    async def fill():
        s = await Spool.open(path)
        try:
            kept, lost = _msg(s, bf.FILE_MIN), _msg(s, bf.FILE_MIN)
            await s.commit(kept)
            await s.commit(lost)
            return kept.queue_id, lost.queue_id, s.body_dir
        finally:
            await s.close()
    kept, lost, d = asyncio.run(fill())
    os.unlink(d / lost)                                    # the bytes are gone (a bad hand)
    old, young = d / "OLDORPHAN00000", d / "YOUNGORPHAN000"
    old.write_bytes(b"x")                                  # a crash between file and row
    young.write_bytes(b"y")                                # a commit that may still come
    t = time.time() - bf.ORPHAN_AGE - 5
    os.utime(old, (t, t))

    async def reopen():
        s = await Spool.open(path)
        try:
            return s.recovered
        finally:
            await s.close()
    recovered = asyncio.run(reopen())
    assert recovered["corrupt"] == 1 and recovered["orphan_files"] == 1
    states = dict(_db(path).execute("SELECT queue_id, state FROM messages").fetchall())
    assert states == {kept: "incoming", lost: "corrupt"}
    assert sorted(os.listdir(d)) == sorted([kept, "YOUNGORPHAN000"])
