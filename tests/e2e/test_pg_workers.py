"""Intake in worker processes on the PostgreSQL spool (``server.workers = 2``, ``spool.backend =
"postgresql"``), end to end: one real gateway (supervisor + 2 workers) on a real PostgreSQL 15,
a real sink, SMTP clients in threads.

- 200 messages over 40 sessions: each reaches the sink exactly once; the queue IDs of both
  workers are among the 250s (18 characters: time, the node's tag, the worker's tag, random)
  and in the database's rows; the node is one ``nodes`` row whose ``started_at`` the workers
  never rewrite;
- ``kill -9`` of one worker mid-stream: every message that got a 250 reaches the sink once, the
  supervisor restarts the worker, which takes mail again under its tag;
- ``pg_ctl stop -m immediate``: clients get only 4xx (never a 250, never a 5xx) while it is down,
  a worker killed and restarted meanwhile comes up and answers 4xx too (no crash loop); after
  the start both workers take mail again with no restart of the gateway, and every 250 reaches
  the sink.
"""
from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections import Counter

import pytest

from spool.commit import node_tag
from tests.e2e.test_pg_relay import dsn, gateway_toml, pg_server, rows, send, subjects  # noqa: F401
from tests.e2e.test_workers import Load, assert_exactly_once, workers_of
from tests.support import postgres as pg
from tests.support.peers import GatewayProc, free_port, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

ID = re.compile(r"^[0-9B-Z]{18}$")


def worker_gateway(peers, tmp_path, dsn: str, sink, **kw) -> GatewayProc:
    """gw1 with 2 intake workers on ``dsn``, relaying to ``sink``, started."""
    port = free_port()
    listen = f'listen = ["127.0.0.1:{port}"]'
    toml = gateway_toml("gw1", port, sink.port, tmp_path / "gw1", dsn, **kw).replace(
        "[server]\n", "[server]\nworkers = 2\n", 1).replace(
        listen, listen + "\nmax_connections_per_client = 1000\nmax_concurrent_data_per_client = 32",
        1)
    gw = GatewayProc(tmp_path / "gw1", toml, port)
    peers.procs.append(gw)
    gw.start()
    return gw


def started_at(dsn: str) -> list[tuple[str, float]]:
    return rows(dsn, "SELECT name, extract(epoch FROM started_at)::float8 FROM nodes ORDER BY id")


def test_two_workers_on_postgresql_200_messages_each_once_ids_of_both(peers, tmp_path, dsn):
    sink = peers.sink(name="exchange")
    gw = worker_gateway(peers, tmp_path, dsn, sink)
    pids = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    wait_for(lambda: gw.log_text().count("event='worker_ready'") == 2, 20, what="2 ready")
    node = started_at(dsn)
    assert [n for n, _t in node] == ["gw1"], node
    (tag,) = [node_tag(i) for (i,) in rows(dsn, "SELECT id FROM nodes WHERE name = 'gw1'")]
    load = Load(gw.port, 200, conns=8, per_session=5).start()
    load.join()
    assert len(load.acked) == 200, load.errors
    assert load.sessions >= 40
    assert_exactly_once(sink, load.acked)
    ids = list(load.acked.values())
    assert len(set(ids)) == 200 and all(ID.match(q) for q in ids), ids[:5]
    assert {q[10:12] for q in ids} == {tag}                 # the node's tag
    workers = Counter(q[12:14] for q in ids)                 # the worker's tag
    assert set(workers) == {node_tag(1), node_tag(2)}, workers
    # the database holds exactly those messages, accepted by node gw1, every one delivered
    got = dict(rows(dsn, "SELECT queue_id, state FROM messages WHERE node = 'gw1'"))
    assert set(got) == set(ids) and set(got.values()) == {"delivered"}, Counter(got.values())
    assert started_at(dsn) == node, (node, started_at(dsn))  # the workers registered nothing
    log = gw.log_text()
    per_worker = Counter(int(m) for m in re.findall(r"event='queued' .*?worker=(\d+)", log))
    assert set(per_worker) == {1, 2} and sum(per_worker.values()) == 200, per_worker
    assert workers_of(gw) == pids                            # nobody died
    print(f"\n2 workers on PostgreSQL: 200 messages, {load.sessions} sessions, per worker tag "
          f"{dict(workers)}, e.g. {ids[0]}")


def test_kill_9_of_a_worker_on_postgresql_loses_no_250(peers, tmp_path, dsn):
    sink = peers.sink(name="exchange")
    gw = worker_gateway(peers, tmp_path, dsn, sink)
    before = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    node = started_at(dsn)
    load = Load(gw.port, 600, conns=12, per_session=5).start()
    wait_for(lambda: len(load.acked) >= 150, 60, interval=0.01, what="150 250s")
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = len(load.acked)
    after = wait_for(lambda: len(w := workers_of(gw)) == 2 and victim not in w and w, 20,
                     what="the killed worker restarted")
    load.join()
    assert len(load.acked) == 600, load.errors
    assert_exactly_once(sink, load.acked)
    log = gw.log_text()
    m = re.search(rf"event='worker_exited' node='gw1' worker_number=(\d) pid={victim} "
                  r"signal='SIGKILL'", log)
    assert m, log[-3000:]
    k = int(m.group(1))
    restarted = (set(after) - set(before)).pop()
    # the restarted worker takes mail again under its tag: new sessions once it is ready
    wait_for(lambda: f"event='worker_ready' node='gw1' worker_number={k} pid={restarted}"
             in gw.log_text(), 20, what="the restarted worker ready")
    codes = Counter(send(gw.port, 10_000 + i) for i in range(30))
    assert codes == {250: 30}, codes
    log = gw.log_text()
    since = log[log.index(f"worker_number={k} pid={restarted}"):]
    again = [q for q, w in re.findall(r"event='queued' queue_id='(\w+)' worker=(\d+)", since)
             if int(w) == k]
    assert again and all(q[12:14] == node_tag(k) for q in again), again
    assert {q for (q,) in rows(dsn, "SELECT queue_id FROM messages WHERE queue_id = ANY(%s)",
                               again)} == set(again)
    wait_for(lambda: sum(subjects(sink)[str(10_000 + i)] for i in range(30)) == 30, 30,
             what="the 30 later messages at the sink")
    assert started_at(dsn) == node                 # a worker's restart registers nothing
    assert rows(dsn, "SELECT count(*) FROM messages WHERE state <> 'delivered'") == [(0,)]
    print(f"\nkill -9 of worker {k} (pid {victim}) after {killed_at} 250s: workers {before} -> "
          f"{after}, client errors {dict(load.errors)}; {len(again)} of 30 later messages "
          f"taken by the restarted worker")
    assert gw.running


def test_postgresql_stopped_under_two_workers_gives_4xx_then_both_take_mail_again(
        peers, tmp_path, dsn, pg_server):
    sink = peers.sink(name="exchange")
    gw = worker_gateway(peers, tmp_path, dsn, sink, connect_timeout=2.0)
    pids = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    supervisor = gw.p.pid
    codes: list[tuple[int, int, bool, float]] = []   # (message, code, down when sent, start)
    stop, down = threading.Event(), threading.Event()

    def client(k: int):
        n = k * 100_000
        while not stop.is_set():
            was_down, t0 = down.is_set(), time.monotonic()
            codes.append((n, send(gw.port, n), was_down, t0))
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    try:
        wait_for(lambda: sum(c == 250 for _n, c, _d, _t in codes) >= 30, 60, what="30 250s")
        pg_server.stop("immediate")
        down.set()
        time.sleep(3)
        # a worker (re)started while the database is down comes up and serves (4xx), no loop
        victim = pids[0]
        os.kill(victim, signal.SIGKILL)
        new = wait_for(lambda: len(w := workers_of(gw)) == 2 and victim not in w and w, 20,
                       what="the killed worker restarted while PostgreSQL is down")
        (restarted,) = set(new) - set(pids)
        wait_for(lambda: re.search(rf"event='worker_ready' .*pid={restarted}", gw.log_text()),
                 20, what="the restarted worker ready while PostgreSQL is down")
        time.sleep(5)
        during = [c for _n, c, d, _t in codes if d]
        assert workers_of(gw) == new, "a worker died while PostgreSQL was down"
        pg_server.start()
        t_up = time.monotonic()
        down.clear()
        wait_for(lambda: sum(c == 250 for _n, c, _d, t in codes if t > t_up) >= 40, 90,
                 what="250s again")
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert during and all(400 <= c < 500 or c <= 0 for c in during), Counter(during)
    # several sessions answered while it was down (each waits up to the pool's connect and
    # operation timeouts, so on a loaded machine 4 clients get only a few answers in those ~10 s)
    assert sum(400 <= c < 500 for c in during) >= 3, Counter(during)
    assert not [c for _n, c, _d, _t in codes if c >= 500], Counter(c for _n, c, _d, _t in codes)
    acked = {str(n) for n, c, _d, _t in codes if c == 250}
    got = wait_for(lambda: (c := subjects(sink)) and acked <= set(c) and c, 90,
                   what="every acknowledged message at the sink")
    assert acked <= set(got)
    assert gw.running and gw.p.pid == supervisor               # no restart of the gateway
    assert workers_of(gw) == new                               # nor of a worker after the start
    # both workers took mail after the start: their tags among the IDs made since
    log = gw.log_text()
    after_up = log[log.rindex("event='worker_ready'"):]
    per_worker = Counter(int(m) for m in re.findall(r"event='queued' .*?worker=(\d+)", after_up))
    assert set(per_worker) == {1, 2}, per_worker
    tags = Counter(q[12:14] for (q,) in rows(dsn, "SELECT queue_id FROM messages"))
    assert set(tags) == {node_tag(1), node_tag(2)}, tags
    assert "spool_commit_failed" in log
    print(f"\npg_ctl stop -m immediate under 2 workers: {len(during)} sessions while down "
          f"{Counter(during)}; {len(acked)} acknowledged, all delivered; queued per worker after "
          f"the restarted worker was ready {dict(per_worker)}")
