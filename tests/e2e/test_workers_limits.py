"""Intake workers (``server.workers = 2``) and the gateway's limits, end to end: PROXY refusals
counted in the workers show on the supervisor's /metrics; the per-client connection limit and
the DATA limit hold over both workers, and a DATA slot is the gateway's, taken by whichever
worker needs it (gateway.intake.shared_limits). Real gateway processes and sinks (tests/e2e/test_workers.py
has the helpers and the delivery, crash and restart tests)."""
from __future__ import annotations

import os
import re
import signal
import smtplib
import socket
import time

import httpx

from tests.e2e.test_workers import delivered, greeted, toml, workers_of
from tests.support.peers import free_port, wait_for


def test_proxy_refusals_counted_in_the_workers_show_on_the_supervisors_metrics(peers, tmp_path):
    """A PROXY listener served by 2 workers: connections from an untrusted peer (127.0.0.1, the
    trusted proxy is 127.0.0.9) are closed without a greeting in whichever worker took them,
    and the supervisor's /metrics counts every one (gateway.worker ReportedCounter)."""
    sink = peers.sink(name="exchange")
    port, pport = free_port(), free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port) + f"""
[[smtp.listeners]]
address = "127.0.0.1:{pport}"
proxy_protocol = true
proxy_trusted = ["127.0.0.9"]
""", port)
    wait_for(lambda: len(workers_of(gw)) == 2, 20, what="2 workers")
    n = 8
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", pport), 5) as s:
            s.sendall(b"PROXY TCP4 192.0.2.7 127.0.0.1 4000 25\r\nEHLO x\r\n")
            s.settimeout(5)
            try:
                got = s.recv(512)
            except ConnectionResetError:
                got = b""
            assert got == b""                       # closed: no greeting
    addr = re.search(r"event='admin_listening' address='([\d.:]+)'", gw.log_text()).group(1)

    def untrusted() -> float:
        m = httpx.get(f"http://{addr}/metrics", timeout=10).text
        found = re.search(r'mailgate_proxy_refused_connections_total\{reason="untrusted"\} (\S+)', m)
        return float(found.group(1)) if found else -1.0
    wait_for(lambda: untrusted() == n, 10, what=f"{n} untrusted refusals on /metrics")
    wait_for(lambda: gw.log_text().count("event='proxy_refused'") == n, 10,
             what=f"{n} proxy_refused log lines (one per refusal, from both workers)")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as s:   # the plain listener still serves
        assert s.noop()[0] == 250


def test_the_per_client_connection_limit_holds_over_both_workers(peers, tmp_path):
    """max_connections_per_client = 3 with 2 workers: of 6 sessions from one address, 3 are
    greeted and 3 refused with 421 4.7.0, whichever worker accepted each
    (gateway.intake.shared_limits); after a kill -9 of both workers their sessions no longer
    count (the supervisor clears a dead worker's column: 3 greeted again, not 0)."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port).replace(
        "max_connections_per_client = 1000", "max_connections_per_client = 3"), port)
    pids = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    wait_for(lambda: gw.log_text().count("event='worker_ready'") == 2, 20, what="2 workers ready")
    time.sleep(0.5)     # the start-up check's session (QUIT) is released by its worker
    socks, greetings = [], []
    for _ in range(6):
        s = socket.create_connection(("127.0.0.1", port), 5)
        s.settimeout(5)
        socks.append(s)
        greetings.append(s.recv(512)[:9])
    try:
        assert sorted(greetings) == [b"220 gw.te"] * 3 + [b"421 4.7.0"] * 3, greetings
        for pid in pids:                  # the greeted sessions die with their workers
            os.kill(pid, signal.SIGKILL)
        wait_for(lambda: len(w := workers_of(gw)) == 2 and not set(pids) & set(w), 20,
                 what="both workers restarted")
        for s in socks:
            s.close()
        socks = []
        wait_for(lambda: sum(greeted(port) for _ in range(1)) == 1, 10,
                 what="a new session greeted after the others closed")
        again = [socket.create_connection(("127.0.0.1", port), 5) for _ in range(4)]
        try:
            for s in again:
                s.settimeout(5)
            got = sorted(s.recv(512)[:9] for s in again)
        finally:
            for s in again:
                s.close()
        assert got == [b"220 gw.te"] * 3 + [b"421 4.7.0"], got
    finally:
        for s in socks:
            s.close()



def _line(s: socket.socket) -> bytes:
    """One SMTP reply line (the tests' replies are one line each)."""
    buf = b""
    while not buf.endswith(b"\r\n"):
        chunk = s.recv(1)
        if not chunk:
            break
        buf += chunk
    return buf


def test_the_data_limit_is_the_gateways_over_both_workers(peers, tmp_path):
    """max_concurrent_data = 2 with 2 workers: the slots are counted over both
    (gateway.intake.shared_limits.SharedDataSlots), so of 6 sessions that all send DATA at
    once exactly 2 get their 354 (not 2 per worker: the memory bound of one process holds for
    the gateway); the others wait, get theirs as slots are given back, and all 6 messages are
    delivered."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port).replace(
        "max_concurrent_data_per_client = 32", "max_concurrent_data_per_client = 32\n"
        "max_concurrent_data = 2"), port)
    wait_for(lambda: len(workers_of(gw)) == 2, 20, what="2 workers")
    socks = []
    try:
        for k in range(6):
            s = socket.create_connection(("127.0.0.1", port), 10)
            s.settimeout(10)
            socks.append(s)
            assert _line(s).startswith(b"220")
            for cmd in (b"HELO client.test", b"MAIL FROM:<a@client.test>",
                        f"RCPT TO:<user{k}@example.com>".encode()):
                s.sendall(cmd + b"\r\n")
                assert _line(s).startswith(b"250"), cmd
            s.sendall(b"DATA\r\n")
        time.sleep(1.5)                     # every worker has read every DATA by now
        waiting, started = [], []
        for s in socks:
            s.setblocking(False)
            try:
                got = s.recv(512)
            except BlockingIOError:
                got = b""
            s.setblocking(True)
            (started if got.startswith(b"354") else waiting).append(s)
        assert len(started) == 2, (len(started), len(waiting))
        for s in started + waiting:     # the slot holders first; the others in arrival order
            k = socks.index(s)
            if s in waiting:
                assert _line(s).startswith(b"354")  # its turn came: a slot was given back
            s.sendall(f"Subject: m\r\nX-Test-Token: m{k}-a0\r\n\r\nbody\r\n.\r\n".encode())
            assert _line(s).startswith(b"250 2.0.0"), k
    finally:
        for s in socks:
            s.close()
    wait_for(lambda: len(delivered(sink)) == 6, 30, what="6 messages delivered")
    assert set(delivered(sink)) == {f"m{k}-a0" for k in range(6)}


def test_one_worker_may_use_every_data_slot_of_the_gateway(peers, tmp_path):
    """max_concurrent_data = 2 with 2 workers, worker 2 stopped (SIGSTOP), so worker 1 accepts
    every session: both of its sessions get their 354 at once (the slots are the gateway's,
    not one per worker), a third waits until one of them is done; all three are delivered."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port).replace(
        "max_concurrent_data_per_client = 32", "max_concurrent_data_per_client = 32\n"
        "max_concurrent_data = 2"), port)
    w1, w2 = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    gw.wait_workers_ready()                         # both serve before one is stopped
    os.kill(w2, signal.SIGSTOP)
    socks = []
    try:
        for k in range(3):
            s = socket.create_connection(("127.0.0.1", port), 10)
            s.settimeout(10)
            socks.append(s)
            assert _line(s).startswith(b"220")     # greeted: worker 1 took it
            for cmd in (b"HELO client.test", b"MAIL FROM:<a@client.test>",
                        f"RCPT TO:<user{k}@example.com>".encode(), b"DATA"):
                s.sendall(cmd + b"\r\n")
                if cmd != b"DATA":
                    assert _line(s).startswith(b"250"), cmd
            if k < 2:
                assert _line(s).startswith(b"354"), k   # both slots, in the one worker
        socks[2].settimeout(1.0)
        try:
            early = socks[2].recv(512)
        except socket.timeout:
            early = b""
        assert early == b"", early                  # the third waits: the gateway's 2 are taken
        socks[2].settimeout(10)
        socks[0].sendall(b"Subject: m\r\nX-Test-Token: m0-a0\r\n\r\nbody\r\n.\r\n")
        assert _line(socks[0]).startswith(b"250 2.0.0")
        assert _line(socks[2]).startswith(b"354")   # its turn came
        for k in (1, 2):
            socks[k].sendall(f"Subject: m\r\nX-Test-Token: m{k}-a0\r\n\r\nbody\r\n.\r\n".encode())
            assert _line(socks[k]).startswith(b"250 2.0.0"), k
    finally:
        os.kill(w2, signal.SIGCONT)
        for s in socks:
            s.close()
    wait_for(lambda: len(delivered(sink)) == 3, 30, what="3 messages delivered")
    assert set(delivered(sink)) == {f"m{k}-a0" for k in range(3)}
    assert workers_of(gw) == [w1, w2]               # nobody died or was restarted
