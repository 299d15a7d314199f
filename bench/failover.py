#!/usr/bin/env python3
"""Failover figures: how long mail takes through MX-priority smarthosts with hosts down.

The speed that tests/e2e/test_failover.py used to bound (now it asserts on the spool and the
sinks only). Real processes (tests/support/peers.py): dnsmasq serving site A (two MX 10 hosts)
and site B (one MX 20 host), one aiosmtpd sink per host, the gateway as `mailgate serve`.
Per scenario: a fresh gateway, N messages sent one after another over one SMTP session, and the
time from the first MAIL to the last message stored by a sink (end to end), with msg/s.

    python3 bench/failover.py                 # N=200 per scenario
    python3 bench/failover.py --n 500

Scenarios: all up; mx1.site-a refusing connections (dead-host memory, dead_host_ttl 60 s);
both site-A hosts refusing (every message fails over to site B within its first attempt).
"""
from __future__ import annotations

import argparse
import smtplib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Peers, config_toml  # noqa: E402
from tests.e2e.test_failover import ADDR, MX1A, MX2A, SMARTHOST, ZONE_MX, shared_port  # noqa: E402
from tests.support.dnsserver import DnsServer  # noqa: E402
from tests.support.peers import free_port, wait_for  # noqa: E402

SCENARIOS = {"all up": (), "mx1.site-a down": (MX1A,), "site A down": (MX1A, MX2A)}


def run(name: str, down: tuple[str, ...], n: int, dns_port: int, base: Path) -> dict:
    peers = Peers(base)
    try:
        port = shared_port(ADDR.values())
        sinks = {h: peers.sink(ADDR[h], port, h.split(".")[0] + h.split(".")[1][-1]) for h in ADDR}
        for h in down:
            sinks[h].stop()
        gw_port = free_port()
        toml = config_toml(port=gw_port, data_dir=base / "data", smarthost=SMARTHOST,
                           dns_port=dns_port, smarthost_port=port, minimal_backoff=300.0,
                           maximal_backoff=4000.0).replace("dead_host_ttl = 5.0", "dead_host_ttl = 60.0")
        peers.gateway(toml, gw_port)
        t0 = time.monotonic()
        with smtplib.SMTP("127.0.0.1", gw_port, timeout=30) as c:
            for i in range(n):
                c.sendmail("alice@remote.test", ["bob@example.com"],
                           f"Subject: failover {i}\r\n\r\nbody {i}\r\n".encode())
        live = [s for h, s in sinks.items() if h not in down]
        wait_for(lambda: sum(s.count() for s in live) >= n, 300, what=f"{n} deliveries")
        secs = time.monotonic() - t0
        return {"scenario": name, "n": n, "seconds": round(secs, 2), "msg_per_s": round(n / secs, 1),
                "per_host": {s.name: s.count() for s in live}}
    finally:
        peers.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=200)
    args = ap.parse_args()
    with DnsServer(mx=ZONE_MX, a=ADDR) as dns, tempfile.TemporaryDirectory(prefix="mg-failover-") as tmp:
        for i, (name, down) in enumerate(SCENARIOS.items()):
            r = run(name, down, args.n, dns.port, Path(tmp) / str(i))
            print(f"{r['scenario']:<18} {r['n']} messages in {r['seconds']:7.2f} s "
                  f"= {r['msg_per_s']:6.1f} msg/s end to end; per live host {r['per_host']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
