#!/usr/bin/env python3
"""The gateway's scaling table (issue 10): msg/s at 1, 10, 50 and 200 concurrent sessions, and at
50 sessions with 100,000 deferred messages already in the queue; per cell the p50 / p99 time from
sending the final dot (CRLF.CRLF) to receiving the 250, and the gateway's peak RSS.

Per cell: a fresh spool (bench/memory.py's fresh_spool; the large-queue cell then seeded with
bench/large_queue.py's build_large), smtp-sink on 127.0.0.1:2600 and the gateway with
bench/gateway.toml (memory.py's Downstream, bench_config, wait_smtp: a new gateway process per
cell, so VmHWM of /proc/PID/status is that cell's peak). The load is this script's own asyncio
SMTP client (asyncio streams, no smtp-source): ``--sessions`` concurrent sessions, one message
per connection (as smtp-source sends them), 4 KiB bodies to user1..user1000@example.com.
After a warm-up of ``--warmup`` messages, ``--n`` messages are sent (``--n-single`` at 1
session), bounded by ``--max-s`` seconds per cell.

Figures per cell: ingress msg/s (load start → the last 250), e2e msg/s (load start → the sink
has every message), latency of the final dot → 250 in ms (p50, p99), the gateway's peak and
baseline RSS (MiB), CPU ms per message of the gateway (utime+stime over the load) and of this
client, failed transactions, the load average at the cell's start and end, and (JSON only)
``deferred_after``: deferred rows left in the spool after the cell (the seeded backlog, not due).

    python3 bench/scaling.py                           # 1, 10, 50, 200 sessions + 50 with 100,000 deferred
    python3 bench/scaling.py --cells 50 --deferred 0   # one cell, no large-queue cell

As root (smtp-sink -u postfix); ports 2700 (gateway) and 2600 (sink) free. Rows as JSON lines
in /tmp/mailgate-bench/scaling-TIME.jsonl; the table on stdout.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import subprocess
import sys
import time
import tomllib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from large_queue import build_large
from memory import (
    BENCH_DIR,
    CONFIG,
    GW_PORT,
    REPO,
    Downstream,
    bench_config,
    fresh_spool,
    status_kib,
    tree,
    stop,
    wait_smtp,
)

SIZE = 4096
LINE = b"x" * 76 + b"\r\n"


def message(i: int) -> bytes:
    """About SIZE bytes with the final dot: headers, then 78-byte lines."""
    head = (f"From: sender@remote.test\r\nTo: user{i % 1000 + 1}@example.com\r\n"
            f"Subject: scaling {i}\r\nMessage-ID: <scaling.{i}@remote.test>\r\n\r\n").encode()
    return head + LINE * ((SIZE - len(head)) // len(LINE)) + b".\r\n"


async def reply(r: asyncio.StreamReader) -> bytes:
    """One SMTP reply's last line; ConnectionError if the server closed the connection."""
    while True:
        line = await r.readline()
        if not line:
            raise ConnectionError("connection closed")
        if line[3:4] != b"-":
            return line


async def transaction(i: int, port: int, lat: list[float]) -> bool:
    """One message on a new connection; appends final dot → 250 seconds to ``lat``."""
    r, w = await asyncio.open_connection("127.0.0.1", port)
    try:
        if not (await reply(r)).startswith(b"220"):
            return False
        for cmd, want in ((b"EHLO client.bench.test", b"250"), (b"MAIL FROM:<sender@remote.test>", b"250"),
                          (f"RCPT TO:<user{i % 1000 + 1}@example.com>".encode(), b"250"),
                          (b"DATA", b"354")):
            w.write(cmd + b"\r\n")
            if not (await reply(r)).startswith(want):
                return False
        w.write(message(i))      # the body and the final dot in one write (4 KiB: one segment run)
        t0 = time.perf_counter()
        ok = (await reply(r)).startswith(b"250")
        lat.append(time.perf_counter() - t0)
        w.write(b"QUIT\r\n")
        await reply(r)
        return ok
    finally:
        w.close()


async def load(port: int, sessions: int, n: int, start: int,
               deadline: float) -> tuple[list[float], int, int, float]:
    """``n`` messages over ``sessions`` concurrent workers, until ``deadline`` (monotonic s).
    Returns (latencies in s, transactions that got their 250, failed ones, seconds)."""
    lat: list[float] = []
    ok_n = failed = 0
    nxt = start

    async def worker() -> None:
        nonlocal nxt, ok_n, failed
        while nxt < start + n and time.monotonic() < deadline:
            i, nxt = nxt, nxt + 1
            try:
                ok = await asyncio.wait_for(transaction(i, port, lat), max(1.0, deadline - time.monotonic()))
            except (OSError, TimeoutError):
                ok = False
            ok_n += ok
            failed += not ok
    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(sessions)))
    return lat, ok_n, failed, time.perf_counter() - t0


def cpu_s(pid: int) -> float:
    """utime + stime in seconds (/proc/PID/stat) summed over ``pid``'s process tree (the
    supervisor and its intake workers; memory.tree)."""
    total = 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def pct(xs: list[float], q: float) -> float:
    """The q-quantile (nearest rank) of ``xs`` in ms; nan if empty."""
    if not xs:
        return float("nan")
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * len(s)) - 1))] * 1000


def cell(sessions: int, n: int, deferred: int, a, logdir: Path) -> dict:
    """One cell: fresh spool (``deferred`` messages seeded if > 0), smtp-sink and a new gateway,
    warm-up, then ``n`` messages over ``sessions`` sessions. Returns the row (rates in msg/s,
    latencies in ms, RSS in MiB, CPU in ms per message); everything it started is stopped."""
    fresh_spool()
    config = bench_config(0, [])     # bench/gateway.toml as it is (directory path made absolute)
    seed_s = 0.0
    data_dir = Path(tomllib.loads((REPO / CONFIG).read_text())["server"]["data_dir"])
    if deferred:
        t0 = time.monotonic()
        build_large(data_dir / "spool.db", deferred, a.finished)
        with open(data_dir / "spool.db", "rb+") as f:   # written with synchronous=OFF: else the
            os.fsync(f.fileno())                         # gateway's first checkpoint flushes it (0.5 s)
        seed_s = time.monotonic() - t0
    load_start = os.getloadavg()[0]
    sink = Downstream(logdir)
    with open(logdir / "scaling-gateway.log", "ab") as log:
        gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"],
                              cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_smtp(GW_PORT, timeout=120)
        base = status_kib(gw.pid)["VmRSS"]
        deadline = time.monotonic() + a.max_s
        warm = min(a.warmup, n)
        asyncio.run(load(GW_PORT, min(sessions, 10), warm, 0, deadline))
        while sink.count() < warm and time.monotonic() < deadline:
            time.sleep(0.05)
        got0, cpu0, t0 = sink.count(), cpu_s(gw.pid), time.monotonic()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        lat, ok, failed, ingress_s = asyncio.run(load(GW_PORT, sessions, n, warm, deadline))
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        while sink.count() - got0 < ok and time.monotonic() < deadline:
            time.sleep(0.02)
        e2e_s = time.monotonic() - t0
        delivered = sink.count() - got0
        gw_cpu = cpu_s(gw.pid) - cpu0
        hwm = status_kib(gw.pid)["VmHWM"]
    finally:
        stop(gw)
        sink.close()
    db = sqlite3.connect(f"file:{data_dir / 'spool.db'}?mode=ro", uri=True)   # the backlog stayed
    (deferred_after,), = db.execute("SELECT count(*) FROM messages WHERE state = 'deferred'")
    db.close()
    client_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"sessions": sessions, "deferred": deferred, "finished": a.finished if deferred else 0,
            "n": n, "ok": ok, "failed": failed, "delivered": delivered,
            "deferred_after": deferred_after, "seed_s": round(seed_s, 1),
            "ingress_msg_s": round(ok / ingress_s, 1), "e2e_msg_s": round(delivered / e2e_s, 1),
            "p50_ms": round(pct(lat, 0.50), 2), "p99_ms": round(pct(lat, 0.99), 2),
            "peak_rss_mib": round(hwm / 1024, 1), "baseline_rss_mib": round(base / 1024, 1),
            "gw_cpu_ms_per_msg": round(gw_cpu / max(1, delivered) * 1000, 2),
            "client_cpu_ms_per_msg": round(client_cpu / max(1, ok) * 1000, 2),
            "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2),
            "time": time.strftime("%H:%M:%S")}


def table(rows: list[dict]) -> str:
    out = [("| sessions | deferred in queue | messages | ingress msg/s | e2e msg/s | dot→250 p50 ms | "
            "dot→250 p99 ms | peak RSS MiB | baseline MiB | gateway CPU ms/msg | client CPU ms/msg | "
            "failed | load start → end |"),
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        out.append(f"| {r['sessions']} | {r['deferred']:,} | {r['delivered']:,}/{r['n']:,} | "
                   f"{r['ingress_msg_s']:.0f} | {r['e2e_msg_s']:.0f} | {r['p50_ms']:.1f} | "
                   f"{r['p99_ms']:.1f} | {r['peak_rss_mib']:.0f} | {r['baseline_rss_mib']:.0f} | "
                   f"{r['gw_cpu_ms_per_msg']:.2f} | {r['client_cpu_ms_per_msg']:.2f} | {r['failed']} | "
                   f"{r['load_start']:.1f} → {r['load_end']:.1f} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="1,10,50,200", help="concurrent sessions per cell")
    ap.add_argument("--n", type=int, default=3000, help="messages per cell")
    ap.add_argument("--n-single", type=int, default=2000, help="messages in the 1-session cell")
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--deferred", type=int, default=100_000, help="0: no large-queue cell")
    ap.add_argument("--deferred-sessions", type=int, default=50)
    ap.add_argument("--finished", type=int, default=0, help="finished rows seeded beside them")
    ap.add_argument("--max-s", type=float, default=180.0, help="bound per cell")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("scaling.py: run as root (smtp-sink -u postfix)")
    logdir = BENCH_DIR / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    out = BENCH_DIR / f"scaling-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    plan = [(int(c), a.n_single if int(c) == 1 else a.n, 0) for c in a.cells.split(",")]
    if a.deferred:
        plan.append((a.deferred_sessions, a.n, a.deferred))
    rows = []
    for sessions, n, deferred in plan:
        r = cell(sessions, n, deferred, a, logdir)
        rows.append(r)
        with open(out, "a") as f:
            f.write(json.dumps(r) + "\n")
        print(json.dumps(r), file=sys.stderr, flush=True)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  rows: {out}")
    print(table(rows))
    return 0 if all(r["failed"] == 0 and r["delivered"] >= r["n"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
