"""Two real gateways on one real PostgreSQL spool behind a real HAProxy 2.6 with PROXY v2 (issue
9): gw1 is killed with SIGKILL mid-stream and never restarted. HAProxy's health check moves the
load to gw2, and gw2 delivers what gw1 had acknowledged and not delivered once gw1's claims
expire: every acknowledged message reaches the sink without gw1 coming back (with the SQLite
spool, tests/e2e/test_haproxy.py has to restart gw1 for that). Assertions on what the sink
received and on the database's rows."""
from __future__ import annotations

import re
import time
from pathlib import Path

import psycopg
import pytest

from tests.e2e.test_haproxy import PROXY_IP, Sender, start_cluster
from tests.support.haproxy import HAPROXY
from tests.support.peers import wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not Path(HAPROXY).exists(), reason="haproxy not installed")]

CLAIM_TTL = 6.0


@pytest.fixture
def pg_cluster_behind_haproxy(peers, tmp_path, pg_dsn):
    def on_postgresql(name: str, toml: str) -> str:
        toml = toml.replace("[delivery]\n", f"[delivery]\nclaim_ttl = {CLAIM_TTL}\n")
        return toml + f'[spool]\nbackend = "postgresql"\ndsn = "{pg_dsn}"\nnode = "{name}"\n'
    return (*start_cluster(peers, tmp_path, on_postgresql), pg_dsn)


def test_a_killed_gateways_acknowledged_mail_is_delivered_by_the_other_without_a_restart(
        pg_cluster_behind_haproxy):
    sink, gws, hap, front, dsn = pg_cluster_behind_haproxy
    sender = Sender(front, threads=4, per_thread=50)
    threads = sender.run()
    wait_for(lambda: len(sender.acked) >= 60, 60, what="60 messages acknowledged")
    gws["gw1"].kill()                                     # kill -9, mid-stream, for good
    killed_at = time.monotonic()
    hap.wait_states({"gw1": "DOWN", "gw2": "UP"}, 15)
    for t in threads:
        t.join(180)
    assert not any(t.is_alive() for t in threads)
    acked = set(sender.acked)
    assert len(acked) == 200
    in_sink = lambda: {re.search(rb"Subject: (\S+)", d).group(1).decode()
                       for _, d in sink.messages()}
    wait_for(lambda: acked <= in_sink(), CLAIM_TTL * 2 + 60,
             what="every acknowledged message in the sink, gw1 still dead")
    took = time.monotonic() - killed_at

    def left() -> int:      # copies whose client retried elsewhere may still wait on gw1's claim
        with psycopg.connect(dsn, autocommit=True) as conn:
            return conn.execute("SELECT count(*) FROM messages WHERE state NOT IN"
                                " ('delivered','bounced')").fetchone()[0]
    wait_for(lambda: left() == 0, CLAIM_TTL * 3, what="nothing left in the queue")
    with psycopg.connect(dsn, autocommit=True) as conn:
        by_node = dict(conn.execute("SELECT node, count(*) FROM messages GROUP BY node").fetchall())
    assert by_node.get("gw1", 0) >= 1 and by_node.get("gw2", 0) >= 1, by_node
    assert gws["gw1"].p.poll() is not None                # never restarted
    # the client addresses the real clients' (PROXY v2), in the shared spool too
    with psycopg.connect(dsn, autocommit=True) as conn:
        addrs = {a for (a,) in conn.execute("SELECT DISTINCT client_addr FROM messages")}
    assert PROXY_IP not in addrs and addrs, addrs
    copies = sum(1 for _ in sink.messages()) - len(in_sink())
    print(f"\nhaproxy + PostgreSQL: 200 acknowledged, {by_node} accepted per node, all delivered "
          f"{took:.1f} s after gw1's kill -9 without a restart, {copies} duplicates "
          f"({len(sender.unsure)} final dots without a reply)")
