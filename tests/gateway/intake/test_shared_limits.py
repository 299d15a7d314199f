"""The connection limits shared by intake workers (gateway.intake.shared_limits): counted over
every worker's process on one shared memory table, each worker changing only its own counts, a
dead worker's sessions cleared, a full table admitting without a per-client count. Real
processes map the one memfd (as gateway.worker does)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from gateway.intake import replies
from gateway.intake.shared_limits import SharedConnectionLimits, SharedTable

ROOT = Path(__file__).resolve().parents[3]


def test_per_client_and_total_limits_hold_over_two_workers():
    t = SharedTable.create(2, max_connections=5)
    w1 = SharedConnectionLimits(t, 1, total=5, per_client=3)
    w2 = SharedConnectionLimits(t, 2, total=5, per_client=3)
    assert [w1.acquire("192.0.2.1"), w2.acquire("192.0.2.1"), w1.acquire("192.0.2.1")] == [None] * 3
    assert w2.acquire("192.0.2.1") == replies.TOO_MANY_CONNECTIONS_FROM_YOU   # 3 in all
    assert w2.acquire("2001:db8::7") is None and w1.acquire("198.51.100.9") is None
    assert w1.open == 5
    assert w2.acquire("203.0.113.5") == replies.TOO_MANY_CONNECTIONS          # 5 in all
    w2.release("192.0.2.1")                                                   # any worker's own
    assert w1.acquire("192.0.2.1") is None
    for w, ip in ((w1, "192.0.2.1"), (w1, "192.0.2.1"), (w1, "192.0.2.1"), (w2, "2001:db8::7"),
                  (w1, "198.51.100.9")):
        w.release(ip)
    assert w1.open == 0
    assert [w1.acquire("192.0.2.1") for _ in range(3)] == [None] * 3       # the entry came back


def test_a_dead_workers_sessions_are_cleared():
    t = SharedTable.create(2, max_connections=10)
    w1 = SharedConnectionLimits(t, 1, total=10, per_client=2)
    w2 = SharedConnectionLimits(t, 2, total=10, per_client=2)
    assert w1.acquire("192.0.2.1") is None and w1.acquire("192.0.2.1") is None
    assert w2.acquire("192.0.2.1") == replies.TOO_MANY_CONNECTIONS_FROM_YOU
    t.clear_worker(1)                               # worker 1 died with its two sessions
    assert w1.open == 0
    assert w2.acquire("192.0.2.1") is None and w2.acquire("192.0.2.1") is None


def test_a_full_table_admits_new_clients_without_a_per_client_count():
    t = SharedTable.create(1, max_connections=1)   # the smallest table: 64 entries
    w = SharedConnectionLimits(t, 1, total=1000, per_client=1)
    ips = [f"10.0.{i // 250}.{i % 250 + 1}" for i in range(t.slots + 3)]
    assert all(w.acquire(ip) is None for ip in ips)  # 3 of them beyond the table
    assert w.open == len(ips)
    for ip in ips:
        w.release(ip)
    assert w.open == 0 and w.acquire(ips[0]) is None and w.acquire(ips[0]) is not None


CHILD = """
import os, sys
from gateway.intake.shared_limits import SharedConnectionLimits, SharedTable
fd, slots, worker = map(int, sys.argv[1:4])
lim = SharedConnectionLimits(SharedTable(fd, 2, slots), worker, total=1000, per_client=50)
got = sum(lim.acquire("192.0.2.44") is None for _ in range(40))
print(got, flush=True)
sys.stdin.readline()
"""


def test_two_processes_share_one_table():
    t = SharedTable.create(2, max_connections=100)
    procs = [subprocess.Popen([sys.executable, "-c", CHILD, str(t.fd), str(t.slots), str(k)],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, pass_fds=[t.fd],
                              cwd=ROOT, text=True) for k in (1, 2)]
    try:
        got = sorted(int(p.stdout.readline()) for p in procs)
    finally:
        for p in procs:
            p.communicate("\n", timeout=10)
    assert sum(got) == 50                          # 50 for the client in all, over both
    seen = SharedConnectionLimits(t, 1, total=1000, per_client=50)
    assert seen.open == 50 and seen.acquire("192.0.2.44") == replies.TOO_MANY_CONNECTIONS_FROM_YOU


WAITER = """
import sys, threading
from gateway.intake.shared_limits import SharedConnectionLimits, SharedTable
fd, slots = map(int, sys.argv[1:3])
lim = SharedConnectionLimits(SharedTable(fd, 2, slots), 2, total=10, per_client=10)
t = threading.Thread(target=lim.acquire, args=("192.0.2.9",), daemon=True)
t.start()
t.join(0.5)
print("waited" if t.is_alive() else "not excluded", flush=True)
t.join(10)
print("admitted" if not t.is_alive() else "stuck", flush=True)
"""


def test_a_worker_waits_while_another_holds_the_table():
    """The lock excludes across processes even though every worker inherits the one descriptor
    (a flock on a shared open file description would exclude nobody: 51 of 50 seen in CI)."""
    t = SharedTable.create(2, max_connections=10)
    with t:                                          # this process holds the table
        p = subprocess.Popen([sys.executable, "-c", WAITER, str(t.fd), str(t.slots)],
                             stdout=subprocess.PIPE, pass_fds=[t.fd], cwd=ROOT, text=True)
        first = p.stdout.readline().strip()
    rest = p.communicate(timeout=20)[0].split()
    assert (first, rest) == ("waited", ["admitted"])
    assert SharedConnectionLimits(t, 1, total=10, per_client=10).open == 1
