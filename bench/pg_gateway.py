#!/usr/bin/env python3
"""The gateway on a PostgreSQL spool *and* that PostgreSQL as one process tree, for
``bench/run.py --backend postgresql`` (../shared/bench/compare.py measures the CPU of the
gateway command's process tree, so the database's work is counted with the gateway's, as
Postfix's whole tree is counted on its side).

On start: a throwaway PostgreSQL 15 cluster in BENCH_DIR/pg-tree (tests/support/postgres.py:
initdb, fsync on, synchronous_commit on, loopback TCP), its postmaster run in the foreground as
a child of this process, one database ``mailgate``; then ``mailgate serve`` as a second child
with bench/gateway.toml plus ``[spool] backend = "postgresql"`` (and the keys pg_relay.py's B
run sets: continuity off, webmail off, admin API on port 0). SIGTERM/SIGINT, or either child
ending: the gateway gets SIGTERM, then the postmaster SIGINT (fast shutdown), the cluster
directory is removed; the exit status is the gateway's.

    python3 bench/pg_gateway.py --workers 2     # what run.py --backend postgresql starts

As root (the cluster runs as user postgres).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psycopg
from memory import BENCH_DIR
from pg_relay import configs

from tests.support import postgres as pg

BASE = BENCH_DIR / "pg-tree"


def wait_ready(cluster: pg.PgCluster, server: subprocess.Popen, timeout: float = 60.0) -> None:
    """Until the server accepts a connection (raises RuntimeError if it exits or times out)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            psycopg.connect(cluster.dsn(), connect_timeout=2).close()
            return
        except psycopg.OperationalError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start:\n{cluster.log_tail()}") from None
            time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="server.workers of the gateway (default: one per CPU, the shipped default)")
    a = ap.parse_args()
    stopping = False

    def on_signal(_signum, _frame):
        nonlocal stopping
        stopping = True
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for d in (BASE, BENCH_DIR / "pg-gw1"):     # the cluster and the gateway's data_dir, fresh
        shutil.rmtree(d, ignore_errors=True)
    cluster = pg.PgCluster(BASE)
    cluster.init()
    server = subprocess.Popen(cluster.foreground_argv(), stdout=open(cluster.logfile, "ab"),
                              stderr=subprocess.STDOUT)
    gateway: subprocess.Popen | None = None
    try:
        wait_ready(cluster, server)
        cluster.sql("CREATE DATABASE mailgate")
        (config,) = configs("B", cluster.dsn("mailgate"), a.workers)
        gateway = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"],
                                   cwd=Path(__file__).resolve().parent.parent)
        while not stopping and gateway.poll() is None and server.poll() is None:
            time.sleep(0.2)
    finally:
        if gateway is not None and gateway.poll() is None:
            gateway.terminate()
            try:
                gateway.wait(30)
            except subprocess.TimeoutExpired:
                gateway.kill()
                gateway.wait()
        if server.poll() is None:
            try:   # the postmaster itself (the child may be runuser, which waits for it)
                os.kill(int((cluster.datadir / "postmaster.pid").read_text().split()[0]), signal.SIGINT)
            except (OSError, ValueError):
                server.terminate()
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
        shutil.rmtree(BASE, ignore_errors=True)
    return gateway.returncode if gateway is not None and gateway.returncode is not None else 1


if __name__ == "__main__":
    sys.exit(main())
