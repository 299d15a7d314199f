#!/usr/bin/env python3
"""The spool's hot path with a large queue behind it (issue 10, item 3).

A downstream that was down for hours leaves 100,000 deferred messages, and ``queue show`` keeps
1,000,000 finished rows. This measures, on a real spool file (spool.store.Spool: the writer
thread, group commit, synchronous=FULL), the work intake and delivery do per new message:

- commit: N new messages (4 KiB) from C concurrent callers, as C SMTP sessions do;
- claim + record: claim_due(100) until all N are claimed, then record_attempt(delivered) each,
  as the queue manager does;
- the reads an admin or a health check makes: counts(), next_due_at(), claim_due(100) when the
  whole backlog has become due at once (the dead smarthost is back).

Each rep runs on an EMPTY spool and on a LARGE one (A B A B), and the table gives the medians and
the ratio large/empty. The large spool is built once with bulk SQL (deferred rows spread over the
next 4000 s, as retries are; finished rows delivered, bodies gone) and copied per rep.

    python3 bench/large_queue.py                     # 100,000 deferred + 1,000,000 finished
    python3 bench/large_queue.py --deferred 10000 --finished 100000 --reps 3
"""
from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from spool import NewMessage, Spool  # noqa: E402
from spool import db as spool_db  # noqa: E402
from spool.commit import new_queue_id  # noqa: E402
from spool.states import RcptState  # noqa: E402
from spool.transitions import RcptOutcome  # noqa: E402

BODY = (b"Received: from bench\r\nFrom: a@example.net\r\nTo: b@example.com\r\nSubject: bench\r\n\r\n"
        + b"x" * 76 + b"\r\n") * 50   # about 4 KiB


def build_large(path: Path, deferred: int, finished: int) -> None:
    """A spool at ``path`` holding ``deferred`` deferred messages (bodies kept, next attempts
    spread over 4000 s from now) and ``finished`` delivered ones (bodies deleted)."""
    conn = spool_db.connect(path)
    now = time.time()
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("BEGIN")
    seq_t = int(now * 1e6) - (deferred + finished) * 1000

    def rows(n, state, spread):
        nonlocal seq_t
        for i in range(n):
            seq_t += 1000
            q = new_queue_id(seq_t)
            due = now + 600 + (i % 4000) if spread else now - 86400
            yield q, state, due

    for q, state, due in rows(finished, "delivered", False):
        conn.execute("INSERT INTO messages (queue_id, state, mail_from, size, arrived_at, next_attempt_at,"
                     " attempts, updated_at) VALUES (?,?,?,?,?,?,1,?)",
                     (q, state, "a@example.net", len(BODY), due, due, due))
        conn.execute("INSERT INTO recipients (queue_id, idx, address, state, attempts, reply_code,"
                     " reply_text, updated_at) VALUES (?,0,'b@example.com',?,1,250,'2.0.0 Ok',?)",
                     (q, RcptState.DELIVERED.value, due))
    for q, state, due in rows(deferred, "deferred", True):
        conn.execute("INSERT INTO messages (queue_id, state, mail_from, size, arrived_at, next_attempt_at,"
                     " attempts, last_error, updated_at) VALUES (?,?,?,?,?,?,3,'451 4.4.1 down',?)",
                     (q, state, "a@example.net", len(BODY), now - 7200, due, now))
        conn.execute("INSERT INTO recipients (queue_id, idx, address, state, attempts, updated_at)"
                     " VALUES (?,0,'b@example.com',?,3,?)", (q, RcptState.PENDING.value, now))
        conn.execute("INSERT INTO bodies (queue_id, data) VALUES (?,?)", (q, BODY))
    conn.execute("COMMIT")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()


async def measure(path: Path, n: int, conc: int) -> dict[str, float]:
    spool = await Spool.open(path)
    try:
        new = [NewMessage(mail_from="a@example.net", rcpt_tos=("b@example.com",), data=BODY)
               for _ in range(n)]
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(conc)

        async def one(m):
            async with sem:
                await spool.commit(m)
        await asyncio.gather(*(one(m) for m in new))
        commit_s = time.perf_counter() - t0

        mine = {m.queue_id for m in new}
        t0 = time.perf_counter()
        claimed: list[str] = []
        while len([q for q in claimed if q in mine]) < n:
            got = await spool.claim_due(100)
            if not got:
                break
            claimed += got
        claim_s = time.perf_counter() - t0
        ok = [RcptOutcome(0, RcptState.DELIVERED, 250, "2.0.0 Ok", "sink")]
        t0 = time.perf_counter()
        await asyncio.gather(*(spool.record_attempt(q, ok, time.time()) for q in claimed if q in mine))
        record_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        await spool.counts()
        counts_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        await spool.next_due_at()
        due_s = time.perf_counter() - t0
        # the backlog all due at once: how long one claim of 100 takes
        await spool.write(lambda c: c.execute(
            "UPDATE messages SET next_attempt_at = next_attempt_at - 5000 WHERE state='deferred'"))
        t0 = time.perf_counter()
        await spool.claim_due(100)
        backlog_claim_s = time.perf_counter() - t0
        return {"commit_msg_s": n / commit_s, "claim_ms_per_100": claim_s / max(1, n / 100) * 1000,
                "record_msg_s": n / record_s, "counts_ms": counts_s * 1000,
                "next_due_ms": due_s * 1000, "backlog_claim_ms": backlog_claim_s * 1000}
    finally:
        await spool.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--deferred", type=int, default=100_000)
    ap.add_argument("--finished", type=int, default=1_000_000)
    ap.add_argument("--n", type=int, default=2000, help="new messages per run")
    ap.add_argument("--conc", type=int, default=50, help="concurrent committers")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--dir", default=None, help="work directory (default: a temporary one)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="mailgate-largeq-"))
    work.mkdir(parents=True, exist_ok=True)
    template = work / "large-template.db"
    t0 = time.perf_counter()
    build_large(template, args.deferred, args.finished)
    print(f"built {args.deferred} deferred + {args.finished} finished in {time.perf_counter() - t0:.0f} s,"
          f" {template.stat().st_size / 1e6:.0f} MB", flush=True)
    results: dict[str, list[dict]] = {"empty": [], "large": []}
    load = []
    for rep in range(args.reps):
        for kind in ("empty", "large"):
            db = work / f"{kind}.db"
            for suffix in ("", "-wal", "-shm"):
                Path(str(db) + suffix).unlink(missing_ok=True)
            if kind == "large":
                shutil.copyfile(template, db)
                with open(db, "rb+") as f:   # else the first checkpoint's fsync writes the whole copy
                    os.fsync(f.fileno())
            else:
                spool_db.connect(db).close()
            r = asyncio.run(measure(db, args.n, args.conc))
            load.append(os.getloadavg()[0])
            results[kind].append(r)
            print(kind, rep, {k: round(v, 2) for k, v in r.items()}, flush=True)
    print(f"\n{args.n} new messages x {args.reps} reps, {args.conc} concurrent committers; "
          f"load average during the run {min(load):.1f}-{max(load):.1f}\n")
    print("| measure | empty spool | large spool | large/empty |\n|---|---:|---:|---:|")
    for key in results["empty"][0]:
        e = statistics.median(r[key] for r in results["empty"])
        g = statistics.median(r[key] for r in results["large"])
        print(f"| {key} | {e:.2f} | {g:.2f} | {g / e if e else float('nan'):.2f} |")
    shutil.rmtree(work, ignore_errors=True) if args.dir is None else None
    return 0


if __name__ == "__main__":
    sys.exit(main())
