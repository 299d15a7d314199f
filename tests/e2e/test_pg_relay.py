"""Two real gateway processes on one real PostgreSQL 15 spool (issue 9): the relay path.

- kill -9 of one gateway mid-stream: every message that got a 250 reaches the sink; the dead
  node's claimed mail is delivered by the other within the claim TTL; duplicates are bounded
  by what the dead node had in flight (its claims, and sessions it never answered).
- a partition between a gateway and PostgreSQL (a proxy that keeps the sockets and passes no
  byte): intake answers 4xx within the operation timeout, the node sends no final dot once its
  claims' local deadlines have passed, and after the heal it takes and delivers mail again by
  itself;
- ``pg_ctl stop -m immediate`` during intake: clients get only 4xx while it is down, never a
  250 or a 5xx; after the restart every 250 is in the database and reaches the sink.

Assertions are on what the sink received and on the database's rows.
"""
from __future__ import annotations

import json
import re
import signal
import smtplib
import threading
import time
from collections import Counter

import psycopg
import pytest

from gateway import __version__
from tests.conftest import config_toml
from tests.support import postgres as pg
from tests.support.partition import PartitionProxy
from tests.support.peers import GatewayProc, free_port, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

CLAIM_TTL = 6.0


@pytest.fixture(scope="module")
def pg_server():
    """A PostgreSQL cluster of this module's own (the outage test stops and starts it)."""
    cluster = pg.started_cluster()
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def dsn(pg_server):
    if not _up(pg_server):
        pg_server.start()
    name = f"relay_{time.monotonic_ns()}"
    pg_server.sql(f"CREATE DATABASE {name}")
    yield pg_server.dsn(name)
    if _up(pg_server):
        pg_server.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def _up(cluster) -> bool:
    try:
        cluster.sql("SELECT 1")
        return True
    except psycopg.Error:
        return False


def gateway_toml(node: str, port: int, sink_port: int, workdir, dsn: str,
                 connect_timeout: float = 5.0, operation_timeout: float = 30.0) -> str:
    toml = config_toml(port=port, data_dir=workdir / "data", smarthost=f"[127.0.0.1]:{sink_port}",
                       minimal_backoff=1.0, maximal_backoff=2.0)
    toml = toml.replace('hostname = "gw.test"', f'hostname = "{node}.test"')
    toml = toml.replace("[delivery]\n", f"[delivery]\nclaim_ttl = {CLAIM_TTL}\n")
    return toml + (f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\nnode = "{node}"\n'
                   f"connect_timeout = {connect_timeout}\noperation_timeout = {operation_timeout}\n")


def message(n: int) -> bytes:
    return (f"From: a@remote.test\r\nTo: bob@example.com\r\nSubject: m{n}\r\n"
            f"Message-ID: <m{n}@remote.test>\r\n\r\nbody {n}\r\n").encode()


def send(port: int, n: int) -> int:
    """One SMTP session with message ``n``: the reply code to the final dot (or to the command
    that failed), 0 if the session broke without a reply, -1 if nothing answered at all."""
    try:
        s = smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=20)
    except OSError:
        return -1
    try:
        with s:
            s.ehlo()
            for code, _text in (s.mail("a@remote.test"), s.rcpt("bob@example.com")):
                if code != 250:
                    return code
            return s.data(message(n))[0]
    except smtplib.SMTPResponseException as e:     # data() raises for a reply other than 250
        return e.smtp_code
    except (OSError, smtplib.SMTPException):
        return 0


def subjects(sink) -> Counter:
    return Counter(re.search(rb"Subject: m(\d+)", data).group(1).decode()
                   for _env, data in sink.messages())


def rows(dsn: str, sql: str, *args):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def two_gateways(peers, tmp_path, dsn: str, sink) -> dict[str, GatewayProc]:
    """gw1 and gw2 on one database, relaying to ``sink``, started (stopped by ``peers``)."""
    gws = {}
    for node in ("gw1", "gw2"):
        port = free_port()
        gws[node] = GatewayProc(tmp_path / node, gateway_toml(node, port, sink.port,
                                                              tmp_path / node, dsn), port)
        peers.procs.append(gws[node])
        gws[node].start()
    return gws


def test_kill_9_of_one_gateway_loses_no_acknowledged_message(peers, tmp_path, dsn):
    # a slow Exchange (0.3 s before each reply): the killed node holds claims in flight
    sink = peers.sink("127.0.0.1", None, "exchange", "--data-delay", "0.3")
    gws = two_gateways(peers, tmp_path, dsn, sink)
    total, acked, uncertain = 300, set(), 0
    lock, next_n = threading.Lock(), iter(range(total))
    killed = threading.Event()
    stats = {}

    def client():
        nonlocal uncertain
        while True:
            with lock:
                n = next(next_n, None)
            if n is None:
                return
            order = ["gw1", "gw2"] if n % 2 == 0 else ["gw2", "gw1"]
            for node in order:          # a sending MTA tries the next MX at once
                code = send(gws[node].port, n)
                if code == 250:
                    with lock:
                        acked.add(str(n))
                        if len(acked) == 100 and not killed.is_set():
                            # what gw1 held at the kill: an upper bound of its duplicates
                            gws["gw1"].kill()
                            killed.set()
                            stats["t_kill"] = time.monotonic()
                            stats["claims"] = rows(dsn, "SELECT count(*) FROM messages WHERE"
                                                   " state='active' AND claim_owner='gw1'")[0][0]
                    break
                if 400 <= code < 500:
                    time.sleep(0.2)
                    continue
                if code >= 500:
                    raise AssertionError(f"message {n}: {code} from {node}")
                if code == 0:
                    with lock:
                        uncertain += 1  # the session broke: the final dot may have been taken

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    assert killed.is_set() and len(acked) == total, (len(acked), killed.is_set())
    got = wait_for(lambda: (c := subjects(sink)) and acked <= set(c) and c, CLAIM_TTL * 2 + 60,
                   what="every acknowledged message at the sink")
    t_all = time.monotonic() - stats["t_kill"]
    # gw2 delivered what gw1 had claimed: within the TTL (+ a renew interval, + the slow sink)
    assert t_all < CLAIM_TTL + CLAIM_TTL / 3 + 20, t_all
    dups = sum(n - 1 for n in got.values() if n > 1)
    assert dups <= stats["claims"] + uncertain, (dups, stats, uncertain)
    left = rows(dsn, "SELECT state, count(*) FROM messages GROUP BY state")
    assert dict(left).get("delivered", 0) >= total and set(dict(left)) == {"delivered"}, left
    assert "claims_requeued" in gws["gw2"].log_text() or stats["claims"] == 0
    owners = dict(rows(dsn, "SELECT node, count(*) FROM messages GROUP BY node"))
    assert owners.get("gw1", 0) >= 1 and owners.get("gw2", 0) >= 1, owners
    # the survivor's heartbeat is fresh and carries its version; the dead node's is not renewed
    out = json.loads(gws["gw2"].cli("cluster", "status", "--json").stdout)
    nodes = {n["name"]: n for n in out["nodes"]}
    assert set(nodes) == {"gw1", "gw2"} and nodes["gw2"]["version"] == __version__, nodes
    since_kill = time.monotonic() - stats["t_kill"]
    assert nodes["gw2"]["seconds_since_seen"] < 12, nodes          # beats every 5 s
    assert nodes["gw1"]["seconds_since_seen"] > since_kill - 6, (since_kill, nodes)
    assert nodes["gw1"]["claims_held"] == 0, nodes      # gw2 took them back
    print(f"\nkill -9: {stats['claims']} claims held by gw1, {uncertain} unanswered sessions, "
          f"{dups} duplicates, all delivered {t_all:.1f} s after the kill")


def test_postgresql_restart_during_intake_gives_only_4xx_and_loses_nothing(
        peers, tmp_path, dsn, pg_server):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = GatewayProc(tmp_path / "gw1", gateway_toml("gw1", port, sink.port, tmp_path / "gw1", dsn,
                                                    connect_timeout=2.0), port)
    peers.procs.append(gw)
    gw.start()
    codes: list[tuple[int, int, bool]] = []       # (message, code, database up when sent)
    stop = threading.Event()
    down = threading.Event()

    def client(k: int):
        n = k * 100_000
        while not stop.is_set():
            was_down = down.is_set()
            codes.append((n, send(port, n), was_down))
            n += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    wait_for(lambda: sum(c == 250 for _n, c, _d in codes) >= 30, 60, what="30 messages before")
    pg_server.stop("immediate")
    down.set()
    time.sleep(10)
    during = [c for _n, c, d in codes if d]
    pg_server.start()
    down.clear()
    wait_for(lambda: sum(c == 250 for _n, c, d in codes[-20:]) >= 10, 60, what="250s again")
    stop.set()
    for t in threads:
        t.join(60)
    assert during and all(400 <= c < 500 or c <= 0 for c in during), Counter(during)
    assert any(400 <= c < 500 for c in during), Counter(during)
    assert not [c for _n, c, _d in codes if c >= 500], Counter(c for _n, c, _d in codes)
    acked = {str(n) for n, c, _d in codes if c == 250}
    got = wait_for(lambda: (c := subjects(sink)) and acked <= set(c) and c, 60,
                   what="every acknowledged message at the sink")
    assert acked <= set(got)
    assert "spool_commit_failed" in gw.log_text()
    print(f"\npg_ctl stop -m immediate: {len(during)} sessions while down, "
          f"{Counter(during)}; {len(acked)} acknowledged, all delivered")


def test_a_gateway_cut_off_from_postgresql_answers_4xx_stops_delivering_and_rejoins(
        peers, tmp_path, dsn):
    sink = peers.sink("127.0.0.1", None, "exchange", "--data-delay", "0.3")
    params = dict(psycopg.conninfo.conninfo_to_dict(dsn))
    proxy = PartitionProxy(int(params["port"]))
    try:
        via = psycopg.conninfo.make_conninfo("", **{**params, "port": str(proxy.port)})
        port = free_port()
        gw = GatewayProc(tmp_path / "gw1", gateway_toml("gw1", port, sink.port, tmp_path / "gw1",
                                                        via, connect_timeout=2.0,
                                                        operation_timeout=3.0), port)
        peers.procs.append(gw)
        gw.start()
        log: list[tuple[int, int, float, float, bool]] = []   # (n, code, start, end, cut)
        stop, cut = threading.Event(), threading.Event()

        def client(k: int):
            n = k * 100_000
            while not stop.is_set():
                was_cut, t0 = cut.is_set(), time.monotonic()
                code = send(port, n)
                log.append((n, code, t0, time.monotonic(), was_cut))
                n += 1

        threads = [threading.Thread(target=client, args=(k,)) for k in range(3)]
        for t in threads:
            t.start()
        wait_for(lambda: sum(c == 250 for _n, c, *_ in log) >= 20, 60, what="20 messages")
        proxy.cut()
        cut.set()
        t_cut = time.monotonic()
        time.sleep(CLAIM_TTL + 1.5)
        at_deadline = sink.count()          # claims' local deadlines have passed by now
        time.sleep(6)
        at_heal = sink.count()
        during = [(c, end - start) for _n, c, start, end, was in log if was]
        proxy.heal()
        t_heal = time.monotonic()
        wait_for(lambda: sum(c == 250 for _n, c, start, _e, _w in log if start > t_heal) >= 10,
                 60, what="250s after the heal")
        stop.set()
        for t in threads:
            t.join(60)
        acked = {str(n) for n, c, *_ in log if c == 250}
        got = wait_for(lambda: (c := subjects(sink)) and acked <= set(c) and c, 60,
                       what="every acknowledged message at the sink")
    finally:
        proxy.close()
    assert during, "no session ended during the partition"
    assert all(400 <= c < 500 for c, _d in during), Counter(c for c, _d in during)
    # each answered within the operation timeout (3 s) plus the pool's wait (2 s), with slack
    assert max(d for _c, d in during) < 3.0 + 2.0 + 4.0, during
    assert at_heal == at_deadline, (at_deadline, at_heal)     # no final dot past a deadline
    assert acked <= set(got)
    dups = sum(n - 1 for n in got.values() if n > 1)
    print(f"\npartition: {len(during)} sessions during it ({Counter(c for c, _d in during)}), "
          f"slowest {max(d for _c, d in during):.1f} s; sink {at_deadline} at the claims' "
          f"deadline and {at_heal} at the heal; {len(acked)} acknowledged, {dups} duplicates; "
          f"cut for {t_heal - t_cut:.1f} s")


def metric(gw, name: str) -> float:
    """A sample of ``gw``'s /metrics (its admin listener's address is in its log)."""
    import httpx
    addr = re.search(r"event='admin_listening' node='\w+' address='([\d.:]+)'",
                     gw.log_text()).group(1)
    text = httpx.get(f"http://{addr}/metrics", timeout=10).text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))


def test_sigstop_past_the_claim_ttl_the_resumed_node_sends_no_final_dot(peers, tmp_path, dsn):
    sink = peers.sink("127.0.0.1", None, "exchange", "--data-delay", "0.5")
    gws = two_gateways(peers, tmp_path, dsn, sink)
    acked: set[str] = set()
    lock = threading.Lock()

    def client(first: int):
        for n in range(first, first + 10):
            if send(gws["gw1"].port, n) == 250:
                with lock:
                    acked.add(str(n))
    threads = [threading.Thread(target=client, args=(k * 10,)) for k in range(4)]
    for t in threads:
        t.start()
    held = wait_for(lambda: r if len(r := rows(dsn, "SELECT queue_id FROM messages WHERE"
                                                  " state='active' AND claim_owner='gw1'")) >= 3
                    else None, 30, what="gw1 holding claims")
    gws["gw1"].p.send_signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    try:                                   # (sessions open on gw1 wait for the SIGCONT)
        # gw2 takes the paused node's claims back and delivers them
        wait_for(lambda: not rows(dsn, "SELECT 1 FROM messages WHERE claim_owner='gw1' AND"
                                       " state='active'"), CLAIM_TTL * 3, what="claims requeued")
        wait_for(lambda: all(r[0] == "delivered" for r in rows(
            dsn, "SELECT state FROM messages WHERE queue_id = ANY(%s)", [q for (q,) in held])),
            30, what="gw1's claimed messages delivered by gw2")
        time.sleep(1.0)                    # the sink's delay for dots sent before the stop
        before = sink.count()
    finally:
        gws["gw1"].p.send_signal(signal.SIGCONT)
    t_cont = time.monotonic()
    for t in threads:
        t.join(60)
    time.sleep(5.0)
    wait_for(lambda: not rows(dsn, "SELECT 1 FROM messages WHERE state NOT IN"
                                   " ('delivered','bounced')"), 60, what="all delivered")
    after_resume = rows(dsn, "SELECT count(*) FROM messages")[0][0]
    # the resumed node sent no final dot for the claims it had lost: what reaches the sink after
    # the resume is only mail not delivered before it (sessions that waited on the paused gw1),
    # each once
    after = Counter(re.search(rb"Subject: m(\d+)", d).group(1).decode()
                    for _e, d in sink.messages()[before:])
    earlier = set(subjects_at(sink, before))
    assert not set(after) & earlier and max(after.values(), default=1) == 1, (before, after)
    refused = metric(gws["gw1"], "mailgate_stale_claim_writes_total")
    assert refused >= 1, refused                    # its late outcomes were refused, counted
    got = subjects(sink)
    assert acked <= set(got), acked - set(got)
    dups = sum(n - 1 for n in got.values() if n > 1)
    assert dups <= len(held), (dups, len(held))
    print(f"\nSIGSTOP {t_cont - t_stop:.1f} s: gw1 held {len(held)} claims, {int(refused)} of its "
          f"writes refused after SIGCONT, {dups} duplicates, {after_resume} messages")


def subjects_at(sink, count: int) -> Counter:
    """The subjects of the first ``count`` messages the sink stored (in arrival order)."""
    msgs = sink.messages()[:count]
    return Counter(re.search(rb"Subject: m(\d+)", d).group(1).decode() for _e, d in msgs)
