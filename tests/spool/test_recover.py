"""Crash recovery at start-up, and the "250 only after durable" contract at the spool level: a
process killed with SIGKILL while committing loses nothing that commit() had acknowledged."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

from spool import NewMessage, QueueState, RcptState, Spool
from spool import db, query, transitions
from spool.commit import insert_message
from spool.recover import recover
from spool.transitions import RcptOutcome
from tests.conftest import ROOT

Q = QueueState
T0 = 1_700_000_000.0


def add(conn, state: QueueState, rcpts=("a@example.com", "b@example.com")) -> str:
    m = NewMessage(mail_from="x@remote.test", rcpt_tos=rcpts, data=b"Subject: r\r\n\r\nbody\r\n",
                   state=state)
    conn.execute("BEGIN IMMEDIATE")
    insert_message(conn, m, now=T0)
    conn.execute("COMMIT")
    return m.queue_id


def state(conn, qid):
    return query.get_message(conn, qid).state


def test_recover_requeues_active_and_sets_aside_unreadable(tmp_path):
    conn = db.connect(tmp_path / "spool.db")
    active = add(conn, Q.ACTIVE)
    partly = add(conn, Q.INCOMING)
    conn.execute("BEGIN IMMEDIATE")
    assert transitions.claim_due(conn, 10, now=T0) == [partly]
    transitions.record_attempt(conn, partly, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")],
                               T0 + 300, now=T0)   # b still pending -> deferred
    transitions.move(conn, partly, Q.DEFERRED, Q.ACTIVE, now=T0)        # being retried at the crash
    conn.execute("COMMIT")
    lost = add(conn, Q.DEFERRED)
    conn.execute("DELETE FROM bodies WHERE queue_id=?", (lost,))   # bytes gone (bad sector, bad hand)
    held, waiting = add(conn, Q.HOLD), add(conn, Q.DEFERRED)
    done = add(conn, Q.ACTIVE, rcpts=("c@example.com",))
    conn.execute("BEGIN IMMEDIATE")
    transitions.record_attempt(conn, done, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], T0)
    conn.execute("COMMIT")                                        # delivered: body deleted, fine

    assert recover(conn, now=T0 + 60) == {"requeued": 2, "corrupt": 1}
    assert state(conn, active) is Q.INCOMING and state(conn, partly) is Q.INCOMING
    assert query.get_message(conn, active).next_attempt_at == T0 + 60
    m = query.get_message(conn, lost)
    assert m is not None, "an unreadable message must never be deleted"
    assert m.state is Q.CORRUPT and m.last_error == "message bytes missing"
    assert state(conn, held) is Q.HOLD and state(conn, waiting) is Q.DEFERRED
    assert state(conn, done) is Q.DELIVERED
    # the recipient already delivered before the crash is not attempted again
    assert [r.address for r in query.get_message(conn, partly).pending] == ["b@example.com"]
    assert recover(conn, now=T0 + 120) == {"requeued": 0, "corrupt": 0}   # idempotent
    conn.close()


async def test_spool_open_recovers_before_anything_else(tmp_path):
    conn = db.connect(tmp_path / "spool.db")
    qid = add(conn, Q.ACTIVE)
    conn.close()
    spool = await Spool.open(tmp_path / "spool.db")
    try:
        assert spool.recovered == {"requeued": 1, "corrupt": 0}
        assert (await spool.get(qid)).state is Q.INCOMING
        assert await spool.claim_due(10) == [qid]
    finally:
        await spool.close()


CHILD = textwrap.dedent("""
    import asyncio, sys
    sys.path.insert(0, sys.argv[2])
    from spool import NewMessage, Spool

    async def one(spool, i):
        qid = await spool.commit(NewMessage(mail_from=f"s{i}@remote.test",
            rcpt_tos=("bob@example.com",), data=b"Subject: crash %d\\r\\n\\r\\n" % i + b"x" * 2000))
        sys.stdout.write(qid + "\\n")      # the "250": only after commit() returned
        sys.stdout.flush()

    async def main():
        spool = await Spool.open(sys.argv[1])
        i = 0
        while True:                        # until killed
            await asyncio.gather(*(one(spool, i + k) for k in range(25)))
            i += 25

    asyncio.run(main())
""")


def test_acknowledged_commits_survive_sigkill(tmp_path):
    path = tmp_path / "spool.db"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path), str(ROOT)],
                             stdout=subprocess.PIPE, text=True)
    acked: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while len(acked) < 400 and time.monotonic() < deadline:
            line = child.stdout.readline()
            if not line:
                break
            acked.append(line.strip())
        assert len(acked) >= 400, f"child acknowledged only {len(acked)} commits"
        os.kill(child.pid, signal.SIGKILL)        # mid-run: commits are in flight right now
        child.wait(10)
        acked += [x.strip() for x in child.stdout.read().splitlines() if x.strip()]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait(10)
        child.stdout.close()
    assert child.returncode == -signal.SIGKILL
    conn = db.connect(path)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        stored = {r[0] for r in conn.execute("SELECT queue_id FROM bodies")}
        missing = [q for q in acked if q not in stored]
        assert not missing, f"{len(missing)} of {len(acked)} acknowledged messages lost"
        total = conn.execute("SELECT count(*) FROM messages").fetchone()[0]
        print(f"\n{len(acked)} acknowledged, {total} in the spool after SIGKILL")
        assert total >= len(acked)
    finally:
        conn.close()
