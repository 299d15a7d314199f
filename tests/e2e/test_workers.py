"""Intake in worker processes (``server.workers = 2``, gateway/supervisor.py, gateway/worker.py),
end to end: a real gateway supervisor with its workers, a real sink, SMTP clients in threads.

Every message a client got a 250 for must reach the sink exactly once: with both workers
serving, after ``kill -9`` of one worker in the middle of the load (the supervisor restarts it;
the listener keeps answering meanwhile), and across a SIGTERM of the supervisor (every process
exits, the supervisor with 0; what was acknowledged and not yet delivered is delivered after the
restart). The workers are checked to be separate processes through /proc: children of the
supervisor, each holding the listening socket.
"""
from __future__ import annotations

import json
import os
import re
import signal
import smtplib
import socket
import threading
import time
from collections import Counter, deque
from pathlib import Path


from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

QUEUED = 250
TOKEN = re.compile(rb"^X-Test-Token: (m\d+-a\d+)", re.M)
QUEUE_ID = re.compile(r"queued as ([0-9A-Z]+)")


def toml(port: int, data_dir: Path, sink_port: int, workers: int = 2,
         event_loop: str | None = None) -> str:
    """The test gateway with ``workers`` intake processes; one client address may hold many
    sessions (all the load comes from 127.0.0.1)."""
    listen = f'listen = ["127.0.0.1:{port}"]'
    return config_toml(port=port, data_dir=data_dir, smarthost=f"[127.0.0.1]:{sink_port}",
                       event_loop=event_loop).replace(
        "[server]\n", f"[server]\nworkers = {workers}\n", 1).replace(
        listen, listen + "\nmax_connections_per_client = 1000\nmax_concurrent_data_per_client = 32", 1)


def delivered(sink) -> Counter:
    return Counter(m.decode() for _env, data in sink.messages() for m in TOKEN.findall(data))


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (/proc/PID/task/*/children)."""
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:             # a thread that ended while we looked
            continue
    return out


def cmdline(pid: int) -> list[str]:
    """The argv of ``pid``; [] for a process that exited (and was reaped) after it was listed."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return []


def workers_of(gw) -> list[int]:
    return sorted(p for p in children(gw.p.pid) if "gateway.worker" in cmdline(p))


def listening_inode(port: int) -> str:
    """The inode of the socket listening on 127.0.0.1:port (/proc/net/tcp, state 0A)."""
    want = f"0100007F:{port:04X}"
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[1] == want and f[3] == "0A":
            return f[9]
    raise AssertionError(f"nothing listens on 127.0.0.1:{port}")


def socket_inodes(pid: int) -> set[str]:
    out = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            out.add(target[8:-1])
    return out


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def greeted(port: int) -> int:
    with socket.create_connection(("127.0.0.1", port), 5) as s:
        s.settimeout(5)
        return int(s.recv(512).startswith(b"220"))


class Load:
    """``conns`` client threads sending messages 0..n-1, ``per_session`` per connection (then a
    new one); a message without a 250 (broken connection, 4xx) is sent again under a new token
    ``m<n>-a<attempt>``. ``acked`` maps each acknowledged token to its queue ID."""

    def __init__(self, port: int, n: int, conns: int = 20, per_session: int = 10,
                 deadline: float = 240.0):
        self.port, self.n, self.per_session = port, n, per_session
        self.deadline = time.monotonic() + deadline
        self.lock = threading.Lock()
        self.acked: dict[str, str] = {}
        self.errors: Counter = Counter()
        self.sessions = 0
        self.threads = [threading.Thread(target=self._client, args=(i, conns), daemon=True)
                        for i in range(conns)]

    def start(self) -> "Load":
        for t in self.threads:
            t.start()
        return self

    def join(self) -> None:
        for t in self.threads:
            t.join(max(1.0, self.deadline - time.monotonic()))
        assert not any(t.is_alive() for t in self.threads), "client threads did not finish"

    def _client(self, i: int, conns: int) -> None:
        todo, attempt, smtp, sent = deque(range(i, self.n, conns)), 0, None, 0
        while todo and time.monotonic() < self.deadline:
            token = f"m{todo[0]}-a{attempt}"
            try:
                if smtp is None:
                    smtp, sent = smtplib.SMTP("127.0.0.1", self.port, timeout=30), 0
                    with self.lock:
                        self.sessions += 1
                smtp.ehlo_or_helo_if_needed()
                smtp.mail("alice@remote.test")
                smtp.rcpt("bob@example.com")
                code, reply = smtp.data(
                    (f"From: alice@remote.test\r\nTo: bob@example.com\r\nSubject: {token}\r\n"
                     f"X-Test-Token: {token}\r\n\r\n" + "body line\r\n" * 30).encode())
            except (OSError, smtplib.SMTPException) as e:
                with self.lock:
                    self.errors[type(e).__name__] += 1
                if smtp is not None:
                    smtp.close()
                smtp, attempt = None, attempt + 1
                time.sleep(0.05)
                continue
            if code != QUEUED:
                attempt += 1
                continue
            with self.lock:
                self.acked[token] = QUEUE_ID.search(reply.decode()).group(1)
            todo.popleft()
            attempt, sent = 0, sent + 1
            if sent >= self.per_session:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
                smtp = None
        if smtp is not None:
            smtp.close()


def assert_exactly_once(sink, acked: dict[str, str], timeout: float = 90.0,
                        in_flight: set[str] = frozenset()) -> Counter:
    """Every acknowledged token reaches the sink, and none of them twice, except messages whose
    delivery was in flight when the delivering process was killed (``in_flight`` queue IDs,
    ``active`` in the spool: at-least-once, as tests/e2e/test_durability.py)."""
    wait_for(lambda: set(acked) <= set(delivered(sink)), timeout, interval=0.5,
             what="every acknowledged message at the sink")
    time.sleep(1.0)                                  # a late duplicate would show up now
    got = delivered(sink)
    assert {t: got[t] for t in acked if got[t] != 1 and acked[t] not in in_flight} == {}
    return got


def test_two_workers_2000_messages_each_delivered_once(peers, tmp_path, event_loop_choice):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port, event_loop=event_loop_choice), port)
    pids = wait_for(lambda: len(workers_of(gw)) == 2 and workers_of(gw), 20, what="2 workers")
    # separate processes: children of the supervisor, each with the listening socket open
    inode = listening_inode(port)
    for pid in pids:
        assert int(Path(f"/proc/{pid}/status").read_text().split("PPid:")[1].split()[0]) == gw.p.pid
        assert inode in socket_inodes(pid)
    assert inode in socket_inodes(gw.p.pid)            # the supervisor keeps it open too
    t0 = time.monotonic()
    load = Load(port, 2000, conns=20, per_session=10).start()
    load.join()
    ingress = time.monotonic() - t0
    assert len(load.acked) == 2000, load.errors
    got = assert_exactly_once(sink, load.acked)
    ids = list(load.acked.values())
    assert len(set(ids)) == 2000 and all(len(q) == 16 for q in ids)   # 10 time + tag + 4 random
    tags = Counter(q[10:12] for q in ids)
    log = gw.log_text()
    per_worker = Counter(int(m) for m in re.findall(r"event='queued' .*?worker=(\d+)", log))
    want = "loop='uvloop" if event_loop_choice == "uvloop" else "loop='asyncio'"
    assert len(re.findall(rf"event='event_loop' worker=\d {want}", log)) == 2
    print(f"\n2 workers ({event_loop_choice}): 2000 messages, {load.sessions} sessions, ingress {ingress:.1f}s, "
          f"per worker {dict(per_worker)}, tags {dict(tags)}, sink {sum(got.values())} copies")
    assert set(per_worker) == {1, 2} and sum(per_worker.values()) == 2000, per_worker
    assert len(tags) == 2
    assert not re.search(r"event='(queued|worker_listening)'(?!.*worker=\d)", log)
    assert workers_of(gw) == pids                      # nobody died


def test_kill_9_of_a_worker_mid_stream(peers, tmp_path):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port), port)
    before = wait_for(lambda: len(workers_of(gw)) == 2 and workers_of(gw), 20, what="2 workers")
    load = Load(port, 1500, conns=16, per_session=5).start()
    wait_for(lambda: len(load.acked) >= 300, 60, interval=0.01, what="300 250s")
    victim = before[0]
    os.kill(victim, signal.SIGKILL)
    killed_at = len(load.acked)
    # the listener keeps answering: the other worker greets new connections at once
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            assert s.recv(512).startswith(b"220")
            s.sendall(b"QUIT\r\n")
    after = wait_for(lambda: len(w := workers_of(gw)) == 2 and victim not in w and w, 20,
                     what="the killed worker restarted")
    load.join()
    assert len(load.acked) == 1500, load.errors
    assert_exactly_once(sink, load.acked)
    log = gw.log_text()
    assert re.search(rf"event='worker_exited' worker_number=\d pid={victim} signal='SIGKILL'", log)
    print(f"\nkill -9 of worker pid {victim} after {killed_at} 250s: workers {before} -> {after}, "
          f"client errors {dict(load.errors)}")
    assert gw.running


def test_sigterm_stops_every_process_and_loses_nothing(peers, tmp_path):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port), port)
    pids = wait_for(lambda: len(workers_of(gw)) == 2 and workers_of(gw), 20, what="2 workers")
    load = Load(port, 1000, conns=16, per_session=5, deadline=60.0).start()
    wait_for(lambda: len(load.acked) >= 300, 60, interval=0.01, what="300 250s")
    gw.p.send_signal(signal.SIGTERM)
    assert gw.p.wait(60) == 0
    assert not [p for p in pids if alive(p)], "a worker outlived the supervisor"
    load.deadline = 0            # the clients stop trying (connection refused from now on)
    load.join()
    acked = dict(load.acked)
    assert 300 <= len(acked) < 1000
    log = gw.log_text()
    assert log.count("event='worker_stopped'") == 2 and "event='workers_stopped'" in log
    # what was acknowledged and not yet delivered is in the spool: the next start delivers it
    gw.start()
    assert_exactly_once(sink, acked)
    print(f"\nSIGTERM after {len(acked)} 250s: supervisor exit 0, workers {pids} gone")


def test_workers_stop_when_the_supervisor_is_killed(peers, tmp_path):
    """kill -9 of the supervisor: no worker is left serving an orphaned listener; the next start
    recovers and delivers everything that was acknowledged."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port), port)
    pids = wait_for(lambda: len(workers_of(gw)) == 2 and workers_of(gw), 20, what="2 workers")
    load = Load(port, 600, conns=8, per_session=5, deadline=60.0).start()
    wait_for(lambda: len(load.acked) >= 150, 60, interval=0.01, what="150 250s")
    gw.kill()
    wait_for(lambda: not [p for p in pids if alive(p)], 15, what="the workers to stop")
    load.deadline = 0
    load.join()
    assert "event='supervisor_gone'" in gw.log_text()
    active = {m["queue_id"] for m in json.loads(gw.cli("queue", "list", "--json").stdout)
              if m["state"] == "active"}         # deliveries the kill interrupted
    gw.start()
    got = assert_exactly_once(sink, dict(load.acked), in_flight=active)
    print(f"\nkill -9 of the supervisor after {len(load.acked)} 250s: workers {pids} stopped; "
          f"{len(active)} deliveries in flight, {sum(n - 1 for n in got.values())} duplicates")


def test_a_worker_that_keeps_dying_is_restarted_with_a_doubling_backoff(peers, tmp_path):
    """Four kill -9 of the same worker slot, each soon after its restart (within STABLE_AFTER):
    the supervisor waits RESTART_FIRST (0.5 s), then 1, 2 and 4 s before starting it again
    (its worker_exited lines say restart_in, and the next worker_started comes after at least
    that long); the other worker serves throughout."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port), port)
    pids = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    def number(p: int) -> int | None:
        argv = cmdline(p)
        return int(argv[argv.index("--number") + 1]) if "--number" in argv else None
    victim, k = pids[0], number(pids[0])
    gaps = []
    for _ in range(4):
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        assert greeted(port) == 1           # the other worker greets meanwhile
        new = wait_for(lambda: [p for p in workers_of(gw) if p not in pids and number(p) == k],
                       20, interval=0.02, what=f"worker {k} restarted")
        gaps.append(time.monotonic() - killed)
        pids.append(new[0])
        victim = new[0]
    delays = [float(d) for d in re.findall(
        rf"event='worker_exited' worker_number={k} pid=\d+ signal='SIGKILL' ran_s=[\d.]+ "
        rf"restart_in=([\d.]+)", gw.log_text())]
    assert delays == [0.5, 1.0, 2.0, 4.0], delays
    assert all(g >= d for g, d in zip(gaps, delays)), (gaps, delays)
    print(f"\nrestart delays {delays}, seen after {[round(g, 2) for g in gaps]} s")
    assert gw.running


def test_a_reload_while_a_worker_is_starting_does_not_kill_it(peers, tmp_path):
    """SIGHUP to the supervisor is forwarded to every worker, also to one still importing its
    modules (restarted a moment ago): it starts with SIGHUP blocked and takes the reload once
    its handler is in place, instead of dying of SIGHUP's default action. The same worker
    process is still serving seconds later."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(toml(port, tmp_path / "data", sink.port), port)
    pids = wait_for(lambda: len(w := workers_of(gw)) == 2 and w, 20, what="2 workers")
    os.kill(pids[0], signal.SIGKILL)
    (new,) = wait_for(lambda: [p for p in workers_of(gw) if p not in pids], 20, interval=0.01,
                      what="the replacement worker spawned")
    gw.p.send_signal(signal.SIGHUP)              # at once: the new worker is still importing
    wait_for(lambda: re.search(rf"event='worker_ready' .*pid={new}\b", gw.log_text()), 20,
             what="the replacement worker ready")
    time.sleep(1.0)
    assert new in workers_of(gw) and alive(new), gw.log_text()[-2000:]
    assert len(workers_of(gw)) == 2 and gw.running
