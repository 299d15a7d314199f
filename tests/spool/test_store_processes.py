"""Several processes writing one SQLite spool (intake workers, gateway/worker.py): each with its
own Spool (writer thread, group commit) on the same WAL file. Commits of concurrent processes all
succeed (queued on the ``write_lock`` flock, or within busy_timeout), the write-lock waits are counted (Spool.lock_stats), queue IDs made
with different ``id_tag``s never collide, and ``Spool.open(recover=False)`` leaves another
process's ``active`` messages alone (only the supervisor recovers, before workers start)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from spool import NewMessage, QueueState, Spool

ROOT = Path(__file__).resolve().parent.parent.parent
N, PROCS = 400, 3

WRITER = """
import asyncio, json, sys
from spool import NewMessage, Spool
from spool.commit import node_tag

async def main(path, number, n, lock):
    s = await Spool.open(path, recover=False)
    s.id_tag = node_tag(number)
    s.write_lock = lock or None
    msgs = [NewMessage(mail_from="a@remote.test", rcpt_tos=("bob@example.com",),
                       data=b"Subject: x\\r\\n\\r\\nbody\\r\\n", queue_id=s.new_queue_id())
            for _ in range(n)]
    sys.stdin.readline()                       # all processes start writing together
    for i in range(0, n, 8):                   # small concurrent batches, as SMTP sessions give
        await asyncio.gather(*(s.commit(m) for m in msgs[i:i + 8]))
    await s.close()
    print(json.dumps({"ids": [m.queue_id for m in msgs], **s.lock_stats()}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]))
"""


def msg() -> NewMessage:
    return NewMessage(mail_from="a@remote.test", rcpt_tos=("bob@example.com",),
                      data=b"Subject: x\r\n\r\nbody\r\n")


@pytest.mark.parametrize("flock", [True, False], ids=["write_lock", "busy_timeout"])
async def test_processes_commit_to_one_spool_with_distinct_ids(tmp_path, flock):
    """With ``write_lock`` (as the gateway's workers run) and with SQLite's busy handler alone
    (a CLI writing beside the gateway): every commit succeeds either way."""
    path = tmp_path / "spool.db"
    lock = str(tmp_path / "spool.db-writelock") if flock else ""
    await (await Spool.open(path)).close()      # created and migrated once, as the supervisor
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(k), str(N), lock],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, cwd=ROOT, text=True)
             for k in range(1, PROCS + 1)]
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    out = []
    for p in procs:
        stdout, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        out.append(json.loads(stdout))
    ids = [q for o in out for q in o["ids"]]
    assert len(set(ids)) == N * PROCS
    assert {q[10:12] for q in out[0]["ids"]} == {"01"} and all(len(q) == 16 for q in ids)
    spool = await Spool.open(path)
    assert (await spool.counts()).get("incoming") == N * PROCS
    await spool.close()
    waits = [(o["lock_waits"], o["lock_wait_ms"], o["lock_wait_max_ms"]) for o in out]
    print(f"\n{PROCS} processes x {N} commits, flock {flock}: lock waits (count, total ms, max ms) {waits}")
    assert all(o["batches"] >= N // 8 for o in out)


async def test_open_without_recovery_leaves_active_messages(tmp_path):
    path = tmp_path / "spool.db"
    owner = await Spool.open(path)
    qid = await owner.commit(msg())
    [claim] = await owner.claim_due(10)
    assert claim.queue_id == qid
    worker = await Spool.open(path, recover=False)      # a worker starting while owner delivers
    assert worker.recovered == {}
    assert (await worker.get(qid)).state is QueueState.ACTIVE
    await worker.close()
    await owner.close()
    again = await Spool.open(path)                      # the supervisor's next start recovers it
    assert again.recovered["requeued"] == 1
    assert (await again.get(qid)).state is QueueState.INCOMING
    await again.close()
