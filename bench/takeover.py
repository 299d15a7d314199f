#!/usr/bin/env python3
"""Continuity leader takeover on PostgreSQL: kill -9 and SIGSTOP of the leader (issue 9's figures).

One invocation starts a throwaway PostgreSQL 15 cluster (tests/support/postgres.py) and runs
``--runs`` rounds of each fault, alternating kill, stop, kill, stop, ... Every round: a fresh
database, a real sink as Exchange, two real gateway processes (gw1, gw2; the configuration of
tests/e2e/test_pg_continuity.py: lease TTL 15 s, renew 5 s, claim TTL 6 s), gw1 started
first so it leads at epoch 1, then gw2; ``--mail`` messages are sent to gw1 and gw2 during
the round (one session per node: gw1's half just before the fault, so its deliveries are in
flight when the leader goes, gw2's half while the fault happens).

  kill   kill -9 of gw1. Measured: seconds from the signal until gw2 holds the lease at a
         higher epoch (the ``leases`` row, polled every 50 ms); duplicates at the sink among
         the acknowledged messages (at most the claims gw1 held at the kill); 0 lost.
  stop   SIGSTOP of gw1 until gw2 holds the lease, then SIGCONT. Measured: the takeover as
         above; after the resume, from gw1's /metrics: step-downs and the fenced writes the
         database refused (mailgate_fenced_writes_refused_total: writes at the old epoch that
         were attempted and refused; 0 when the node noticed its pause before writing), and
         its stale-claim writes (outcomes refused by the claim token).

The summary: median and max takeover per fault, duplicates per kill, fenced writes and stale
claim writes per pause, the load average at the start and end. Rows as JSON lines in
/tmp/mailgate-bench/takeover-TIME.jsonl.

    python3 bench/takeover.py                 # 10 rounds of each fault (about 10 minutes)
    python3 bench/takeover.py --runs 3 --mail 100

As root (the cluster runs as user postgres). Everything started is stopped on exit.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.e2e.test_pg_continuity import (LEASE_TTL, RENEW, at_sink, metrics, one,  # noqa: E402
                                          gateway_toml, send)
from tests.support import postgres as pg  # noqa: E402
from tests.support.peers import GatewayProc, SinkProc, free_port, wait_for  # noqa: E402

BENCH_DIR = Path("/tmp/mailgate-bench")


def lease(dsn: str):
    return one(dsn, "SELECT holder, epoch FROM leases WHERE name='continuity'")


def round_(fault: str, k: int, cluster: pg.PgCluster, mail: int, base: Path) -> dict:
    """One round of ``fault`` ("kill" or "stop"); returns its row."""
    _name, dsn = pg.fresh_database(cluster)
    work = base / f"{fault}{k}"
    sink = SinkProc("127.0.0.1", free_port(), work / "sink", "exchange").start()
    gws = {}
    try:
        for node in ("gw1", "gw2"):
            port, admin = free_port(), free_port()
            gws[node] = GatewayProc(work / node, gateway_toml(node, port, sink.port, work / node, dsn,
                                                              admin_port=admin), port)
            gws[node].admin_port = admin
            gws[node].start()
            if node == "gw1":
                wait_for(lambda: lease(dsn) == ("gw1", 1), 30, interval=0.05, what="gw1 leads")
        acked, errors = [], []

        def client(node):
            try:
                acked.extend(send(gws[node].port, [f"{fault}{k}-{node}-{i}" for i in range(mail // 2)]))
            except Exception as e:            # a node that dies mid-session: its acks count
                errors.append(repr(e))

        client("gw1")                                # gw1's half acked, its deliveries in flight
        senders = [threading.Thread(target=client, args=("gw2",))]
        for t in senders:                            # gw2's half while the fault happens
            t.start()
        gw1 = gws["gw1"]
        t0 = time.monotonic()
        in_flight = None
        if fault == "kill":
            gw1.kill()
            in_flight = one(dsn, "SELECT count(*) FROM messages WHERE state='active' "
                                 "AND claim_owner='gw1'")[0]
        else:
            gw1.p.send_signal(signal.SIGSTOP)
        wait_for(lambda: (lz := lease(dsn)) and lz[0] == "gw2" and lz[1] > 1,
                 LEASE_TTL + RENEW + 20, interval=0.05, what="gw2 takes the lease")
        takeover = time.monotonic() - t0
        row = {"fault": fault, "round": k, "takeover_s": round(takeover, 2)}
        if fault == "stop":
            gw1.p.send_signal(signal.SIGCONT)
            wait_for(lambda: "continuity_step_down" in gw1.log_text(), 30, what="gw1 steps down")
            time.sleep(2.0)                          # a few follower steps
            m = metrics(gw1)
            row.update(stepdowns=m["mailgate_continuity_stepdowns_total"],
                       fenced_refused=m["mailgate_fenced_writes_refused_total"],
                       stale_claim_writes=m["mailgate_stale_claim_writes_total"],
                       leader_after=m["mailgate_continuity_leader"])
        for t in senders:
            t.join(120)
        got = wait_for(lambda: (c := at_sink(sink)) and set(acked) <= set(c) and c, 60,
                       what="every acknowledged message at the sink")
        row.update(acked=len(acked), lost=len(set(acked) - set(got)),
                   duplicates=sum(n - 1 for t, n in got.items() if t in set(acked) and n > 1),
                   claims_in_flight=in_flight, client_errors=len(errors))
        return row
    finally:
        for g in gws.values():
            if g.p is not None and g.p.poll() is None:
                g.p.send_signal(signal.SIGCONT)
            g.stop()
        sink.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10, help="rounds per fault (default 10)")
    ap.add_argument("--mail", type=int, default=200, help="messages sent during each round")
    a = ap.parse_args()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    out = BENCH_DIR / f"takeover-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    cluster = pg.started_cluster()
    base = Path(tempfile.mkdtemp(prefix="mailgate-takeover-"))
    load0 = os.getloadavg()
    rows = []
    try:
        pg.make_template(cluster)
        for k in range(a.runs):
            for fault in ("kill", "stop"):
                row = round_(fault, k, cluster, a.mail, base)
                rows.append(row)
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(json.dumps(row), flush=True)
    finally:
        cluster.destroy()
    load1 = os.getloadavg()
    print(f"\nlease TTL {LEASE_TTL:g} s, renew {RENEW:g} s; load average {load0[0]:.2f} at the "
          f"start, {load1[0]:.2f} at the end; rows in {out}")
    for fault in ("kill", "stop"):
        rs = [r for r in rows if r["fault"] == fault]
        t = [r["takeover_s"] for r in rs]
        line = (f"{fault:5s} x{len(rs)}: takeover median {statistics.median(t):.1f} s, max {max(t):.1f} s;"
                f" lost {sum(r['lost'] for r in rs)}; duplicates per round "
                f"{[r['duplicates'] for r in rs]}")
        if fault == "kill":
            line += f" (claims of the dead leader in flight {[r['claims_in_flight'] for r in rs]})"
        else:
            line += (f"; fenced writes refused per pause {[int(r['fenced_refused']) for r in rs]}, "
                     f"stale claim writes {[int(r['stale_claim_writes']) for r in rs]}")
        print(line)
    return 0 if all(r["lost"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
