#!/usr/bin/env python3
"""Relay throughput, the gateway against Postfix, side by side (../shared/bench/compare.py).

For each cell (body size, concurrent sessions) this runs compare.py once, with a fresh gateway
spool, A B A B ... ``--reps`` pairs, and at the end prints one table: end-to-end and ingress
msg/s of both servers (medians), the ratio gateway/Postfix (median of the pairs' ratios), and
CPU ms per message of each server's process tree. Raw rows go to a JSON-lines file.

    sudo python3 bench/run.py                       # 4 KiB x 50 sessions, 3 pairs (the target)
    sudo python3 bench/run.py --cells 4096x50,65536x50,1024x10 --reps 5
    sudo python3 bench/run.py --workers 2           # server.workers = 2 (gateway/supervisor.py)
    sudo python3 bench/run.py --backend postgresql  # the PostgreSQL spool (bench/pg_gateway.py)

With ``--backend postgresql`` the gateway command is bench/pg_gateway.py: a throwaway
PostgreSQL 15 cluster (fsync on) whose postmaster runs as a child of that command, so the
"gateway CPU ms/msg" column is the gateway's and its database's together (Postfix's column
counts its whole process tree the same way); a new cluster per cell.

Needs root (compare.py runs smtp-sink -u postfix and a private Postfix master) and the free
ports 2525 (Postfix), 2600 (smtp-sink), 2700 (the gateway, bench/gateway.toml).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COMPARE = REPO.parent / "shared" / "bench" / "compare.py"
CONFIG = "bench/gateway.toml"
BENCH_DIR = Path("/tmp/mailgate-bench")


def workers_config(workers: int) -> Path:
    """bench/gateway.toml with ``server.workers = workers`` and its own spool directory
    (``gw-data-wN``), written under BENCH_DIR; the directory file's path made absolute."""
    text = (REPO / CONFIG).read_text()
    text = text.replace('data_dir = "/tmp/mailgate-bench/gw-data"',
                        f'data_dir = "{BENCH_DIR}/gw-data-w{workers}"\nworkers = {workers}', 1)
    text = text.replace('file = "directory.json"', f'file = "{REPO / "bench" / "directory.json"}"', 1)
    assert f"workers = {workers}" in text and str(REPO) in text, "bench/gateway.toml changed shape"
    out = BENCH_DIR / f"gateway-w{workers}.toml"
    out.write_text(text)
    return out


def fresh_spool(config: Path) -> None:
    """Delete the gateway's spool so every cell starts from an empty database. compare.py starts
    the gateway once per invocation; within it the spool keeps one finished row per message
    (bodies are deleted), which the indexed claim query does not notice at these counts."""
    data_dir = Path(tomllib.loads(config.read_text())["server"]["data_dir"])
    if not data_dir.is_absolute():
        data_dir = config.parent / data_dir
    if BENCH_DIR not in data_dir.resolve().parents:
        sys.exit(f"run.py: refusing to delete {data_dir}: not under {BENCH_DIR}")
    shutil.rmtree(data_dir, ignore_errors=True)


def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else float("nan")


def summarize(rows: list[dict]) -> str:
    out = ["| size | sessions | pairs | gateway e2e msg/s | postfix e2e msg/s | e2e ratio | "
           "gateway ingress msg/s | postfix ingress msg/s | ingress ratio | gateway CPU ms/msg | "
           "postfix CPU ms/msg | failed runs |",
           "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for size, conc in sorted({(r["size"], r["conc"]) for r in rows}):
        cell = [r for r in rows if (r["size"], r["conc"]) == (size, conc)]
        g = sorted((r for r in cell if r["server"] == "gateway"), key=lambda r: r["rep"])
        p = sorted((r for r in cell if r["server"] == "postfix"), key=lambda r: r["rep"])
        pairs = list(zip(g, p))
        e2e = [a["e2e_rate"] / b["e2e_rate"] for a, b in pairs if a["e2e_rate"] and b["e2e_rate"]]
        ing = [a["ingress_rate"] / b["ingress_rate"] for a, b in pairs]
        bad = sum(1 for r in cell if r["rc"] != 0 or r["e2e_rate"] is None)
        out.append(
            f"| {size} | {conc} | {len(pairs)} | {med(r['e2e_rate'] for r in g):.0f} | "
            f"{med(r['e2e_rate'] for r in p):.0f} | {med(e2e):.2f} | "
            f"{med(r['ingress_rate'] for r in g):.0f} | {med(r['ingress_rate'] for r in p):.0f} | "
            f"{med(ing):.2f} | {med(r['server_cpu_ms_per_msg'] for r in g):.2f} | "
            f"{med(r['server_cpu_ms_per_msg'] for r in p):.2f} | {bad} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="4096x50", help="SIZExSESSIONS,... (default 4096x50)")
    ap.add_argument("--reps", type=int, default=3, help="A/B pairs per cell (>= 3)")
    ap.add_argument("--n", type=int, default=3000, help="messages per run (64 KiB runs use half)")
    ap.add_argument("--max-run-s", type=float, default=180.0)
    ap.add_argument("--workers", type=int, default=None,
                    help="server.workers for the gateway (default: bench/gateway.toml's: the default \"auto\", one per CPU)")
    ap.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite",
                    help="spool.backend of the gateway (postgresql: bench/pg_gateway.py)")
    ap.add_argument("--out", default=None, help="JSON lines (default /tmp/mailgate-bench/run-TIME.jsonl)")
    a = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("run.py: run as root (compare.py starts smtp-sink -u postfix and a Postfix master)")
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    out = Path(a.out or BENCH_DIR / f"run-{time.strftime('%Y%m%d-%H%M%S')}.jsonl")
    config = REPO / CONFIG if a.workers is None else workers_config(a.workers)
    gateway_cmd = f"{sys.executable} -m gateway.cli --config {config} serve"
    if a.backend == "postgresql":
        gateway_cmd = (f"{sys.executable} {REPO / 'bench' / 'pg_gateway.py'} --workers "
                       f"{a.workers or os.cpu_count() or 1}")
    load_before = os.getloadavg()
    for cell in a.cells.split(","):
        size, conc = cell.lower().split("x")
        if a.backend == "sqlite":
            fresh_spool(config)         # pg_gateway.py starts every cell on a new cluster
        cmd = [sys.executable, str(COMPARE), "--gateway-cmd", gateway_cmd, "--gateway-port", "2700",
               "--sizes", size, "--conc", conc, "--reps", str(a.reps), "--n", str(a.n),
               "--max-run-s", str(a.max_run_s), "--dir", str(BENCH_DIR), "--out", str(out)]
        print("+", " ".join(cmd), file=sys.stderr, flush=True)
        subprocess.run(cmd, cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    print(f"{time.strftime('%Y-%m-%d %H:%M')}  {a.backend}  workers {a.workers or 'auto'}  load average before "
          f"{load_before[0]:.2f}, after {os.getloadavg()[0]:.2f} (1 min)  rows: {out}")
    print(summarize(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
