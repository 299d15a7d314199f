#!/usr/bin/env python3
"""Peak memory of the gateway under large concurrent messages.

Starts a downstream (Postfix's smtp-sink on 127.0.0.1:2600 as root, else tests/support/sink.py
writing to a temporary directory) and the gateway with bench/gateway.toml (fresh spool), then
sends ``--messages`` messages of ``--size`` body bytes over ``--sessions`` concurrent SMTP
sessions with Postfix's smtp-source (one message per connection), waits until the downstream
has them all, and reports the gateway's peak RSS (VmHWM of /proc/PID/status: the kernel's
high-water mark, so no sample can miss the peak) with the RSS sampled every 0.1 s, both summed
over the gateway's process tree (the supervisor and its ``server.workers`` intake workers).

The default is the worst case the defaults allow: as many concurrent uploads as
``smtp.max_concurrent_data`` (default 32), each just under the default ``max_message_size``
(36 MiB). All the load comes from 127.0.0.1, so the per-client DATA limit is lifted to
``--sessions`` in a copy of the configuration (memory-gateway.toml under /tmp/mailgate-bench):
the global limit is what bounds memory.

    python3 bench/memory.py                      # 32 sessions x 1 x 36 MiB; limit 2,500 MiB
    python3 bench/memory.py --sessions 50 --messages 250 --size 1048576 --limit-mib 500
    python3 bench/memory.py --delivery-only          # queue 32 x 36 MiB first, then measure delivery alone
    python3 bench/memory.py --delivery max_inflight_bytes=134217728   # a smaller delivery budget

Exit status 0 if everything was delivered and the peak is under --limit-mib, 1 otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CONFIG = "bench/gateway.toml"
BENCH_DIR = Path("/tmp/mailgate-bench")
GW_PORT, SINK_PORT = 2700, 2600


def wait_smtp(port: int, timeout: float = 30.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing answers 220 on 127.0.0.1:{port}")


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (/proc/PID/task/*/children): the supervisor and its intake
    workers with ``server.workers`` > 1."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:              # a process or thread that ended while we looked
            continue
    return out


def status_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (KiB) summed over the process tree of ``pid`` (one gateway: the
    supervisor and its workers). The summed VmHWM is an upper bound of the tree's peak (each
    process's own high-water mark, maybe at different moments); the sampled VmRSS sum is a
    lower bound."""
    out = {"VmRSS": 0, "VmHWM": 0}
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in out:
                        out[k] += int(v.split()[0])
        except OSError:
            continue
    return out


def stop(p: subprocess.Popen, grace: float = 20.0) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(grace)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


class Downstream:
    """smtp-sink (root) or tests/support/sink.py; ``count()`` = messages received."""

    def __init__(self, logdir: Path):
        self.n, self.tmp = 0, None
        if os.geteuid() == 0 and Path("/usr/sbin/smtp-sink").exists():
            self.p = subprocess.Popen(["/usr/sbin/smtp-sink", "-c", "-u", "postfix",
                                       f"127.0.0.1:{SINK_PORT}", "1000"], stdout=subprocess.PIPE,
                                      stderr=open(logdir / "memory-sink.err", "ab"))
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.tmp = tempfile.mkdtemp(prefix="mailgate-memsink-")
            self.p = subprocess.Popen([sys.executable, str(REPO / "tests/support/sink.py"), "--listen",
                                       f"127.0.0.1:{SINK_PORT}", "--dir", self.tmp],
                                      stdout=subprocess.DEVNULL, stderr=open(logdir / "memory-sink.err", "ab"))
        wait_smtp(SINK_PORT)

    def _read(self) -> None:
        fd, tail, rx = self.p.stdout.fileno(), b"", re.compile(rb"mesg=(\d+)")
        while chunk := os.read(fd, 65536):
            tail = (tail + chunk)[-256:]
            if m := rx.findall(tail):
                self.n = int(m[-1])

    def count(self) -> int:
        if self.tmp is None:
            return self.n
        return sum(1 for f in os.listdir(self.tmp) if f.endswith(".json"))

    def close(self) -> None:
        stop(self.p)
        if self.tmp:
            shutil.rmtree(self.tmp, ignore_errors=True)


def fresh_spool() -> None:
    data_dir = Path(tomllib.loads((REPO / CONFIG).read_text())["server"]["data_dir"])
    if BENCH_DIR not in data_dir.resolve().parents:
        sys.exit(f"memory.py: refusing to delete {data_dir}: not under {BENCH_DIR}")
    shutil.rmtree(data_dir, ignore_errors=True)


def bench_config(per_client: int, extra_smtp: list[str], deliver: bool = True,
                 extra_delivery: tuple[str, ...] = ()) -> Path:
    """bench/gateway.toml with the per-client DATA limit lifted (and ``extra_smtp`` lines, and
    ``extra_delivery`` lines in [delivery]), written under BENCH_DIR with the directory file's
    path made absolute."""
    text = (REPO / CONFIG).read_text()
    text = text.replace('file = "directory.json"', f'file = "{REPO / "bench/directory.json"}"')
    if per_client:
        text = re.sub(r"(?m)^max_concurrent_data_per_client = .*\n", "", text)
    keys = [*([f"max_concurrent_data_per_client = {per_client}"] if per_client else []), *extra_smtp]
    text = text.replace("[smtp]\n", "[smtp]\n" + "".join(k + "\n" for k in keys), 1)
    text = text.replace("[delivery]\n", "[delivery]\n" + "".join(k + "\n" for k in extra_delivery), 1)
    if not deliver:     # nothing listens on port 9: every delivery fails at once (intake only)
        text = text.replace('default_smarthost = "[127.0.0.1]:2600"', 'default_smarthost = "[127.0.0.1]:9"')
    out = BENCH_DIR / "memory-gateway.toml"
    out.write_text(text)
    return out


def preload(a, logdir: Path) -> float:
    """``--delivery-only``, phase 1: the gateway relaying to a closed port takes every message
    (each deferred at its first attempt), then stops; the queue is flushed (due now) with the
    real relay configured. Returns the seconds it took."""
    t0 = time.monotonic()
    config = bench_config(0 if a.old_config else a.sessions, a.smtp, deliver=False,
                          extra_delivery=tuple(a.delivery))
    with open(config, "a") as f:     # the refused relay must not start a continuity event (hold)
        f.write('\n[continuity]\nmode = "off"\n')
    gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"], cwd=REPO,
                          stdout=open(logdir / "memory-gateway.log", "ab"), stderr=subprocess.STDOUT)
    data_dir = Path(tomllib.loads((REPO / CONFIG).read_text())["server"]["data_dir"])
    try:
        wait_smtp(GW_PORT)
        subprocess.run(["/usr/sbin/smtp-source", "-s", str(a.sessions), "-m", str(a.messages),
                        "-l", str(a.size), "-f", "sender@remote.test", "-t", "user1@example.com",
                        f"127.0.0.1:{GW_PORT}"], stdout=subprocess.DEVNULL, check=True, timeout=a.max_s)
        while time.monotonic() - t0 < a.max_s:      # until every message has had its attempt
            db = sqlite3.connect(f"file:{data_dir / 'spool.db'}?mode=ro", uri=True)
            n = dict(db.execute("SELECT state, count(*) FROM messages GROUP BY state").fetchall())
            db.close()
            if n.get("deferred", 0) >= a.messages:
                break
            time.sleep(0.5)
    finally:
        stop(gw)
    config = bench_config(0 if a.old_config else a.sessions, a.smtp, deliver=True,
                          extra_delivery=tuple(a.delivery))
    subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(config), "queue", "flush"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=32)
    ap.add_argument("--messages", type=int, default=None, help="in total (default: one per session)")
    ap.add_argument("--size", type=int, default=36 * 1024 * 1024 - 64 * 1024,
                    help="body bytes per message (default: just under max_message_size)")
    ap.add_argument("--limit-mib", type=float, default=2500.0)
    ap.add_argument("--max-s", type=float, default=300.0, help="bound on the whole load")
    ap.add_argument("--smtp", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [smtp] setting for the gateway, e.g. max_concurrent_data=16")
    ap.add_argument("--delivery", action="append", default=[], metavar="KEY=VALUE",
                    help="extra [delivery] setting, e.g. max_inflight_bytes=134217728")
    ap.add_argument("--old-config", action="store_true",
                    help="for code before max_concurrent_data_per_client existed (before/after runs)")
    ap.add_argument("--delivery-only", action="store_true",
                    help="queue every message first (relay refused), restart the gateway with the "
                         "relay and measure that process: the peak of delivery alone")
    ap.add_argument("--intake-only", action="store_true",
                    help="relay to a closed port: the peak of intake and spool commit alone")
    a = ap.parse_args()
    a.messages = a.messages or a.sessions
    logdir = BENCH_DIR / "logs"
    logdir.mkdir(parents=True, exist_ok=True)
    fresh_spool()
    preload_s = preload(a, logdir) if a.delivery_only else None
    config = bench_config(0 if a.old_config else a.sessions, a.smtp, deliver=not a.intake_only,
                          extra_delivery=tuple(a.delivery))
    sink = Downstream(logdir)
    gw = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(config), "serve"], cwd=REPO,
                          stdout=open(logdir / "memory-gateway.log", "ab"), stderr=subprocess.STDOUT)
    samples: list[tuple[float, int]] = []
    try:
        wait_smtp(GW_PORT)
        base = status_kib(gw.pid)["VmRSS"]
        t0 = time.monotonic()
        load = ["true"] if a.delivery_only else ["/usr/sbin/smtp-source", "-s", str(a.sessions), "-m", str(a.messages),
                                "-l", str(a.size), "-f", "sender@remote.test", "-t", "user1@example.com",
                                f"127.0.0.1:{GW_PORT}"]
        src = subprocess.Popen(load, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        ingress_s = None
        while time.monotonic() - t0 < a.max_s:
            samples.append((round(time.monotonic() - t0, 2), status_kib(gw.pid)["VmRSS"]))
            if ingress_s is None and src.poll() is not None:
                ingress_s = time.monotonic() - t0
            if ingress_s is not None and (a.intake_only or sink.count() >= a.messages):
                break
            time.sleep(0.1)
        e2e_s = time.monotonic() - t0
        if src.poll() is None:
            src.kill()
        err = src.communicate()[1].decode(errors="replace").strip()
        hwm = status_kib(gw.pid)["VmHWM"]
    finally:
        stop(gw)
        sink.close()
    delivered = sink.count()
    peak_sampled = max((kib for _, kib in samples), default=0)
    report = dict(sessions=a.sessions, messages=a.messages, size=a.size, smtp=a.smtp, delivery=a.delivery, delivery_only=a.delivery_only, preload_s=preload_s and round(preload_s, 1), intake_only=a.intake_only, code=str(REPO), delivered=delivered,
                  source_rc=src.returncode, source_err=err[-300:], baseline_rss_mib=round(base / 1024, 1),
                  peak_rss_mib=round(hwm / 1024, 1), peak_sampled_rss_mib=round(peak_sampled / 1024, 1),
                  ingress_s=round(ingress_s or float("nan"), 2), e2e_s=round(e2e_s, 2),
                  limit_mib=a.limit_mib)
    print(json.dumps(report))
    step = max(1, len(samples) // 20)
    print("RSS MiB over time: " + " ".join(f"{t}s:{kib / 1024:.0f}" for t, kib in samples[::step]),
          file=sys.stderr)
    ok = (a.intake_only or delivered >= a.messages) and src.returncode == 0 and hwm / 1024 < a.limit_mib
    print(f"peak RSS {hwm / 1024:.1f} MiB (limit {a.limit_mib:.0f}), delivered {delivered}/{a.messages}: "
          f"{'PASS' if ok else 'FAIL'}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
