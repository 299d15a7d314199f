#!/usr/bin/env python3
"""Relay throughput on the PostgreSQL spool against the SQLite spool (issue 9's closing figures).

One invocation starts a throwaway PostgreSQL 15 cluster (tests/support/postgres.py: fsync on,
synchronous_commit on, loopback TCP) and then runs, alternating A B C, A B C, ... ``--reps``
rounds (4 KiB messages, ``--sessions`` concurrent sessions, one message per connection):

  A  one gateway on the SQLite spool: bench/gateway.toml as it is (memory.py's bench_config
     only makes the directory file's path absolute), port 2700;
  B  one gateway on a PostgreSQL spool: the same configuration plus ``[spool] backend =
     "postgresql"`` on a fresh database of the cluster, with the keys that backend requires
     (``[continuity] mode = "off"``, ``[webmail] enabled = false``), admin API on port 0;
  C  two gateways (nodes gw1, gw2) on one fresh PostgreSQL database, ports 2700 and 2701, the
     load split in half across them (sessions and messages).

Every run: a fresh spool (SQLite file or database), a new smtp-sink on 127.0.0.1:2600
(memory.py's Downstream), new gateway processes, ``--warmup`` messages, then ``--n`` messages
from bench/scaling.py's asyncio client (``load``; it runs in this process). Figures per run:
e2e msg/s (load start → the sink has every message), ingress msg/s (load start → the last
250), final dot → 250 p50/p99 ms, CPU ms per message (utime+stime+cutime+cstime from
/proc/PID/stat, deltas over the load) of the gateway processes, of PostgreSQL (the postmaster
and all its children: backends, walwriter, checkpointer, ...) and of this client, and the load
average at the run's start and end; on PostgreSQL also the database's transactions per message
(pg_stat_database, warm-up and migrations included; autocommit statements count one each). The summary gives medians and the ratios B/A and C/B
(median of the rounds' ratios).

``--pyspy S`` adds one more B run (not in the table; ``--n-spy`` messages, enough to outlast S
seconds) with ``py-spy record --threads --nonblocking --format raw`` on the gateway for S
seconds, and prints the top frames (self and inclusive share of all samples).

    python3 bench/pg_relay.py                      # 3 rounds of A B C, 3,000 messages each
    python3 bench/pg_relay.py --reps 4 --n 4000 --pyspy 20
    python3 bench/pg_relay.py --workers 2          # server.workers = 2 in every gateway

As root (smtp-sink -u postfix; the cluster runs as user postgres); ports 2700, 2701, 2600 free.
Everything started (cluster, gateways, sink, py-spy) is stopped on exit, on error too, and on
SIGTERM/SIGHUP. Rows as JSON lines in /tmp/mailgate-bench/pg-relay-TIME.jsonl.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from memory import BENCH_DIR, REPO, SINK_PORT, Downstream, bench_config, stop, wait_smtp
from scaling import load, pct

from tests.support import postgres as pg

PORTS = (2700, 2701)
HZ = os.sysconf("SC_CLK_TCK")
STARTED: list[subprocess.Popen] = []       # stopped in cleanup(), whatever happens


def tree_cpu_s(root: int) -> float:
    """utime+stime+cutime+cstime (s) of ``root`` and of its live children (one level: enough for
    the gateway and for the postmaster, whose exited children end up in its cutime/cstime).
    A process that vanished counts 0."""
    total, pids = 0.0, [root]
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == root:
                        pids.append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                x = f.read().rsplit(")", 1)[1].split()
            total += sum(int(v) for v in x[11:15]) / HZ
        except (OSError, IndexError, ValueError):
            continue
    return total


def postmaster_pid(cluster: pg.PgCluster) -> int:
    """The postmaster's PID (first line of postmaster.pid in the data directory)."""
    return int((cluster.datadir / "postmaster.pid").read_text().split()[0])


def db_xacts(cluster: pg.PgCluster, dbname: str) -> int | None:
    """Transactions committed + rolled back in ``dbname`` (pg_stat_database; a backend's counts
    are flushed when it exits, so call this after the gateways stopped)."""
    with psycopg.connect(cluster.dsn("postgres"), autocommit=True) as conn:
        row = conn.execute("SELECT xact_commit + xact_rollback FROM pg_stat_database "
                           "WHERE datname = %s", (dbname,)).fetchone()
    return row[0] if row else None


def port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


def configs(kind: str, dsn: str, workers: int = 1) -> list[Path]:
    """The gateway configuration file(s) of one run: A → [bench/gateway.toml as is], B → one on
    PostgreSQL, C → two nodes on PostgreSQL (ports 2700/2701, their own data_dir and node).
    ``server.workers = workers`` in every one of them (also 1: the default is one per CPU)."""
    base = bench_config(0, []).read_text()
    base = base.replace("[server]\n", f"[server]\nworkers = {workers}\n", 1)
    assert f"workers = {workers}" in base, "bench/gateway.toml changed shape"
    if kind == "A":
        out = BENCH_DIR / "pg-relay-A.toml"
        out.write_text(base)
        return [out]
    paths = []
    for i in range(1 if kind == "B" else 2):
        text = base.replace("127.0.0.1:2700", f"127.0.0.1:{PORTS[i]}")
        text = text.replace("/tmp/mailgate-bench/gw-data", f"{BENCH_DIR}/pg-gw{i + 1}")
        text += ('\n[continuity]\nmode = "off"\n\n[webmail]\nenabled = false\n\n'
                 '[admin]\nlisten = "127.0.0.1:0"\n\n'
                 f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\nnode = "gw{i + 1}"\n')
        out = BENCH_DIR / f"pg-relay-{kind}{i + 1}.toml"
        out.write_text(text)
        paths.append(out)
    return paths


def fresh_dirs() -> None:
    for d in ("gw-data", "pg-gw1", "pg-gw2"):
        shutil.rmtree(BENCH_DIR / d, ignore_errors=True)


async def split_load(ports: list[int], sessions: int, n: int, start: int, deadline: float):
    """``n`` messages over ``sessions`` sessions, split evenly across ``ports`` (scaling.load per
    port, concurrently). Returns (latencies s, ok, failed, seconds until the last one ended)."""
    k = len(ports)
    t0 = time.perf_counter()
    parts = await asyncio.gather(*(load(p, sessions // k, n // k, start + i * (n // k), deadline)
                                   for i, p in enumerate(ports)))
    lat = [x for part in parts for x in part[0]]
    return lat, sum(p[1] for p in parts), sum(p[2] for p in parts), time.perf_counter() - t0


def run(kind: str, rnd: int, cluster: pg.PgCluster, a, logdir: Path, spy_s: float = 0) -> dict:
    """One run of ``kind`` (A, B, C). Returns its row (rates msg/s, CPU ms/msg, latencies ms)."""
    fresh_dirs()
    dbname = f"bench_{kind.lower()}_{rnd}_{int(time.time())}"
    dsn = ""
    if kind != "A":
        cluster.sql(f"CREATE DATABASE {dbname}")
        dsn = cluster.dsn(dbname)
    paths = configs(kind, dsn, a.workers)
    ports = list(PORTS[:len(paths)])
    load_start = os.getloadavg()[0]
    sink = Downstream(logdir)
    STARTED.append(sink.p)
    gws: list[subprocess.Popen] = []
    spy = None
    n = a.n_spy if spy_s else a.n
    try:
        for i, path in enumerate(paths):     # one after the other: the first migrates the database
            with open(logdir / f"pg-relay-{kind}{i + 1}.log", "ab") as log:
                gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(path),
                                       "serve"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
            gws.append(gw)
            STARTED.append(gw)
            wait_smtp(ports[i], timeout=60)
        deadline = time.monotonic() + a.max_s
        warm = a.warmup - a.warmup % len(ports)
        asyncio.run(split_load(ports, 10, warm, 0, deadline))
        while sink.count() < warm and time.monotonic() < deadline:
            time.sleep(0.05)
        pm = postmaster_pid(cluster)
        if spy_s:
            with open(logdir / "pyspy.err", "ab") as err:
                spy = subprocess.Popen(["py-spy", "record", "--pid", str(gws[0].pid), "--threads",
                                        "--nonblocking", "--rate", "100", "--format", "raw", "-d",
                                        str(int(spy_s)), "-o", str(BENCH_DIR / "pg-relay-spy.txt")],
                                       stdout=subprocess.DEVNULL, stderr=err)
            STARTED.append(spy)
            time.sleep(1.0)
        got0, t0 = sink.count(), time.monotonic()
        gw0 = [tree_cpu_s(g.pid) for g in gws]
        pg0 = tree_cpu_s(pm)
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        lat, ok, failed, ingress_s = asyncio.run(split_load(ports, a.sessions, n, warm, deadline))
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        while sink.count() - got0 < ok and time.monotonic() < deadline:
            time.sleep(0.02)
        e2e_s = time.monotonic() - t0
        delivered = sink.count() - got0
        gw_cpu = sum(tree_cpu_s(g.pid) for g in gws) - sum(gw0)
        pg_cpu = tree_cpu_s(pm) - pg0
        if spy is not None:
            spy.wait(max(5.0, spy_s + 30 - e2e_s))
    finally:
        if spy is not None:
            stop(spy)
        for gw in gws:
            stop(gw)
        sink.close()
        xacts = None
        if kind != "A":
            try:
                time.sleep(0.5)
                xacts = db_xacts(cluster, dbname)
                cluster.sql(f"DROP DATABASE IF EXISTS {dbname} WITH (FORCE)")
            except psycopg.Error as e:     # the cluster is destroyed at the end anyway
                print(f"pg_relay: drop {dbname}: {e}", file=sys.stderr)
    client = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    per = 1000 / max(1, delivered)
    return {"kind": kind, "round": rnd, "gateways": len(gws), "workers": a.workers, "n": n, "ok": ok, "failed": failed,
            "delivered": delivered, "ingress_msg_s": round(ok / ingress_s, 1),
            "e2e_msg_s": round(delivered / e2e_s, 1), "p50_ms": round(pct(lat, 0.5), 2),
            "p99_ms": round(pct(lat, 0.99), 2), "gw_cpu_ms_per_msg": round(gw_cpu * per, 3),
            "pg_cpu_ms_per_msg": round(pg_cpu * per, 3) if kind != "A" else None,
            "pg_cpu_ms_per_msg_idle": round(pg_cpu * per, 3) if kind == "A" else None,
            "client_cpu_ms_per_msg": round(client * per, 3),
            "pg_xacts_per_msg": round(xacts / (n + warm), 2) if xacts else None,
            "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2),
            "time": time.strftime("%H:%M:%S"), "pyspy": bool(spy_s)}


def med(xs) -> float:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def table(rows: list[dict]) -> str:
    """Per-run rows, then medians per kind and the ratios B/A, C/B (median of rounds' ratios)."""
    out = [("| run | time | gateways | delivered | e2e msg/s | ingress msg/s | dot→250 p50 / p99 ms | "
            "gateway CPU ms/msg | PostgreSQL CPU ms/msg | client CPU ms/msg | failed | load start → end |"),
           "|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        pgc = r["pg_cpu_ms_per_msg"] if r["kind"] != "A" else r["pg_cpu_ms_per_msg_idle"]
        out.append(f"| {r['kind']}{r['round']} | {r['time']} | {r['gateways']} | "
                   f"{r['delivered']:,}/{r['n']:,} | {r['e2e_msg_s']:.0f} | {r['ingress_msg_s']:.0f} | "
                   f"{r['p50_ms']:.1f} / {r['p99_ms']:.1f} | {r['gw_cpu_ms_per_msg']:.2f} | "
                   f"{pgc:.2f}{' (idle)' if r['kind'] == 'A' else ''} | "
                   f"{r['client_cpu_ms_per_msg']:.2f} | {r['failed']} | "
                   f"{r['load_start']:.1f} → {r['load_end']:.1f} |")
    out += ["", ("| spool | runs | e2e msg/s | ingress msg/s | gateway CPU ms/msg | PostgreSQL CPU ms/msg |"
                 " gateway + PostgreSQL CPU ms/msg | PostgreSQL transactions/msg | p50 / p99 ms |"),
            "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
    names = {"A": "A: SQLite, 1 gateway", "B": "B: PostgreSQL, 1 gateway",
             "C": "C: PostgreSQL, 2 gateways"}
    for k in "ABC":
        rs = [r for r in rows if r["kind"] == k]
        if not rs:
            continue
        pgc = med(r["pg_cpu_ms_per_msg"] or 0 for r in rs)
        out.append(f"| {names[k]} | {len(rs)} | {med(r['e2e_msg_s'] for r in rs):.0f} | "
                   f"{med(r['ingress_msg_s'] for r in rs):.0f} | "
                   f"{med(r['gw_cpu_ms_per_msg'] for r in rs):.2f} | {pgc:.2f} | "
                   f"{med(r['gw_cpu_ms_per_msg'] + (r['pg_cpu_ms_per_msg'] or 0) for r in rs):.2f} | "
                   f"{'—' if k == 'A' else format(med(r['pg_xacts_per_msg'] for r in rs), '.1f')} | "
                   f"{med(r['p50_ms'] for r in rs):.1f} / {med(r['p99_ms'] for r in rs):.1f} |")
    by = {(r["kind"], r["round"]): r for r in rows}

    def ratio(x: str, y: str, key: str) -> str:
        rs = [by[(x, i)][key] / by[(y, i)][key] for (k, i) in by if k == x and (y, i) in by]
        return f"{med(rs):.2f} ({', '.join(f'{v:.2f}' for v in rs)})" if rs else "n/a"
    out += ["", (f"B/A e2e {ratio('B', 'A', 'e2e_msg_s')}, ingress {ratio('B', 'A', 'ingress_msg_s')}; "
                 f"C/B e2e {ratio('C', 'B', 'e2e_msg_s')}, ingress {ratio('C', 'B', 'ingress_msg_s')} "
                 "(median of the rounds, then each round)")]
    return "\n".join(out)


def spy_top(path: Path, k: int = 15) -> str:
    """Top ``k`` frames of a py-spy raw file (``frame;frame;... count`` lines): self and inclusive
    percentages of all samples, frames without line numbers."""
    self_c, incl, total = Counter(), Counter(), 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not cnt.isdigit():
            continue
        c = int(cnt)
        total += c
        frames = [f.rsplit(":", 1)[0] + ")" if ":" in f else f for f in stack.split(";")]
        self_c[frames[-1]] += c
        for f in set(frames):
            incl[f] += c
    out = [f"{total} samples"]
    out += [f"self {100 * c / total:5.1f} %  {f}" for f, c in self_c.most_common(k)]
    out += [f"incl {100 * c / total:5.1f} %  {f}" for f, c in incl.most_common(k + 10)]
    return "\n".join(out)


def cleanup(cluster: pg.PgCluster | None) -> None:
    for p in reversed(STARTED):
        if p.poll() is None:
            try:
                stop(p, grace=10)
            except (OSError, subprocess.TimeoutExpired):
                p.kill()
    if cluster is not None:
        cluster.destroy()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=3, help="rounds of A B C (>= 3)")
    ap.add_argument("--n", type=int, default=3000, help="messages per run")
    ap.add_argument("--sessions", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--kinds", default="ABC", help="which of A, B, C to run, in this order")
    ap.add_argument("--max-s", type=float, default=120.0, help="bound per run")
    ap.add_argument("--pyspy", type=float, default=0, help="seconds of py-spy on one extra B run")
    ap.add_argument("--n-spy", type=int, default=8000, help="messages of the py-spy run")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="server.workers of every gateway (A, B and C; gateway/supervisor.py; "
                         "default one per CPU, as shipped)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("pg_relay.py: run as root (smtp-sink -u postfix; the cluster runs as postgres)")
    if not pg.available():
        sys.exit(f"pg_relay.py: PostgreSQL 15 not found in {pg.PG_BIN} (postgresql-15)")
    busy = [p for p in (*PORTS, SINK_PORT) if not port_free(p)]
    if busy:
        sys.exit(f"pg_relay.py: ports {busy} are in use")
    logdir = BENCH_DIR / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    out = BENCH_DIR / f"pg-relay-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"

    def on_signal(signum, _frame):
        raise SystemExit(f"pg_relay.py: signal {signum}")
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    cluster = None
    rows = []
    try:
        cluster = pg.started_cluster()
        print(f"cluster on port {cluster.port}, {cluster.base}", file=sys.stderr, flush=True)
        for rnd in range(1, a.reps + 1):
            for kind in a.kinds:
                r = run(kind, rnd, cluster, a, logdir)
                rows.append(r)
                with open(out, "a") as f:
                    f.write(json.dumps(r) + "\n")
                print(json.dumps(r), file=sys.stderr, flush=True)
        spy = None
        if a.pyspy:
            r = run("B", 0, cluster, a, logdir, spy_s=a.pyspy)
            print(json.dumps(r), file=sys.stderr, flush=True)
            with open(out, "a") as f:
                f.write(json.dumps(r) + "\n")
            spy = spy_top(BENCH_DIR / "pg-relay-spy.txt")
    finally:
        cleanup(cluster)
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  workers {a.workers}  load average "
          f"{os.getloadavg()[0]:.2f}  rows: {out}")
    print(table(rows))
    if spy:
        print(f"\npy-spy, one B gateway, {a.pyspy:.0f} s ({BENCH_DIR / 'pg-relay-spy.txt'}):\n{spy}")
    return 0 if all(r["failed"] == 0 and r["delivered"] >= r["n"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
