#!/usr/bin/env python3
"""Webmail figures for issue 7, measured on a real gateway process (not timed tests):

1. **250 → visible**: seconds from the 250 of a message's DATA to the moment its subject shows in
   the recipient's webmail Inbox (GET /mail/inbox polled every 5 ms), median and p90 over N
   messages, (a) during a continuity event (held and filed at once) and (b) in normal operation
   with ``continuity.journal = "all"`` (delivered to an Exchange sink, then filed).
2. **50 concurrent webmail sessions**: 50 users, each in its own thread with its own session,
   looping Inbox → a message → its body → a search for ``--seconds``; requests per second,
   median latency, and the gateway's peak RSS (VmHWM) before and after.

    python3 bench/webmail.py [--messages 30] [--users 50] [--seconds 20]

Uses loopback ports chosen free at start. Prints a Markdown table for bench/README.md.
"""
from __future__ import annotations

import argparse
import http.client
import os
import re
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from spool import accounts  # noqa: E402
from spool import db as spool_db  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise SystemExit(f"port {port} did not open")


class Gateway:
    def __init__(self, work: Path, *, exchange_port: int, journal: str, users: int):
        work.mkdir(parents=True, exist_ok=True)
        self.work, self.smtp, self.web = work, free_port(), free_port()
        self.data = work / "data"
        directory = work / "directory.csv"
        directory.write_text("PrimarySmtpAddress,RecipientTypeDetails\n" + "".join(
            f"user{i}@example.com,UserMailbox\n" for i in range(users + 1)))
        self.config = work / "mailgate.toml"
        self.config.write_text(f"""
[server]
hostname = "gw.bench.test"
data_dir = "{self.data}"
[smtp]
listen = ["127.0.0.1:{self.smtp}"]
max_connections_per_client = 1000
[relay]
accepted_domains = ["example.com"]
[directory]
file = "{directory}"
[routing]
default_smarthost = "[127.0.0.1]:{exchange_port}"
smarthost_tls = "none"
[delivery]
connect_timeout = 1.0
[continuity]
mode = "automatic"
journal = "{journal}"
enter_after = 3600.0
[admin]
listen = "127.0.0.1:0"
[webmail]
listen = "127.0.0.1:{self.web}"
[log]
level = "warning"
""")
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(self.config),
                                      "serve"], cwd=REPO, stderr=open(work / "gateway.log", "wb"))
        wait_port(self.smtp)
        wait_port(self.web)

    def cli(self, *args: str) -> str:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(self.config), *args],
                              cwd=REPO, capture_output=True, text=True, check=True, timeout=60).stdout

    def session(self, address: str) -> str:
        conn = spool_db.connect(self.data / "spool.db")
        try:
            def tx():
                accounts.ensure_user(conn, address)
                return accounts.create_session(conn, address, lifetime=86400)[0]
            return spool_db.transaction(conn, tx)
        finally:
            conn.close()

    def rss_peak_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
        return 0

    def rss_kib(self) -> int:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def get(port: int, path: str, cookie: str) -> tuple[int, str]:
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        c.request("GET", path, headers={"Cookie": f"mailgate={cookie}"})
        r = c.getresponse()
        return r.status, r.read().decode("utf-8", "replace")
    finally:
        c.close()


def message(i: int, tag: str, to: str) -> bytes:
    body = ("Lorem ipsum dolor sit amet, consectetur adipiscing elit. " * 60)[:3500]
    return (f"From: Sender <sender@example.net>\r\nTo: {to}\r\nSubject: {tag} {i}\r\n"
            f"Message-ID: <{tag}.{i}.{time.time_ns()}@example.net>\r\n"
            f"Date: Wed, 02 Dec 2026 10:00:00 +0000\r\n\r\n{body}\r\n").encode()


def visibility(gw: Gateway, n: int, tag: str) -> list[float]:
    cookie = gw.session("user1@example.com")
    out = []
    for i in range(n):
        s = smtplib.SMTP("127.0.0.1", gw.smtp, timeout=30)
        s.sendmail("sender@example.net", ["user1@example.com"], message(i, tag, "user1@example.com"))
        t0 = time.perf_counter()
        s.quit()
        needle = f"{tag} {i}<"
        while True:
            status, page = get(gw.web, "/mail/inbox", cookie)
            if needle in page:
                out.append(time.perf_counter() - t0)
                break
            if time.perf_counter() - t0 > 60:
                raise SystemExit(f"message {i} not visible after 60 s (status {status})")
            time.sleep(0.005)
    return out


def concurrent_users(gw: Gateway, users: int, seconds: float) -> dict:
    # a few messages per user to read
    s = smtplib.SMTP("127.0.0.1", gw.smtp, timeout=30)
    for u in range(1, users + 1):
        for i in range(3):
            s.sendmail("sender@example.net", [f"user{u}@example.com"], message(i, "load", f"user{u}@example.com"))
    s.quit()
    time.sleep(3)
    cookies = [gw.session(f"user{u}@example.com") for u in range(1, users + 1)]
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    rss_before = gw.rss_kib()

    def user(cookie: str) -> None:
        mine: list[float] = []
        while time.monotonic() < stop_at:
            for path in ("/mail/inbox", None, None, "/mail/search?q=lorem"):
                t = time.perf_counter()
                if path is None:
                    continue
                status, page = get(gw.web, path, cookie)
                mine.append(time.perf_counter() - t)
                if status != 200:
                    with lock:
                        errors[0] += 1
                ids = re.findall(r'href="/msg/(\d+)"', page)
                if ids and path == "/mail/inbox":
                    for sub in (f"/msg/{ids[0]}", f"/msg/{ids[0]}/body"):
                        t = time.perf_counter()
                        status, _ = get(gw.web, sub, cookie)
                        mine.append(time.perf_counter() - t)
                        if status != 200:
                            with lock:
                                errors[0] += 1
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=user, args=(c,)) for c in cookies]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    peak = 0
    while any(t.is_alive() for t in threads):
        peak = max(peak, gw.rss_kib())
        time.sleep(0.2)
    elapsed = time.monotonic() - t0
    return {"requests": len(latencies), "rps": len(latencies) / elapsed, "errors": errors[0],
            "p50_ms": statistics.median(latencies) * 1000 if latencies else float("nan"),
            "p90_ms": statistics.quantiles(latencies, n=10)[-1] * 1000 if len(latencies) > 10 else float("nan"),
            "rss_before_mib": rss_before / 1024, "rss_peak_mib": peak / 1024,
            "hwm_mib": gw.rss_peak_kib() / 1024}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=30)
    ap.add_argument("--users", type=int, default=50)
    ap.add_argument("--seconds", type=float, default=20.0)
    a = ap.parse_args()
    load0 = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory(prefix="mailgate-webmail-bench-") as tmp:
        tmp = Path(tmp)
        # (a) during a continuity event: nothing answers the smarthost; an admin starts the event
        gw = Gateway(tmp / "event", exchange_port=free_port(), journal="held", users=a.users)
        try:
            gw.cli("continuity", "start", "--reason", "bench")
            time.sleep(1.5)
            v = visibility(gw, a.messages, "held")
            rows.append(("during an event (held, filed at the hold)", v))
            load = concurrent_users(gw, a.users, a.seconds)
        finally:
            gw.stop()
        # (b) normal operation, journal = "all": delivered to a sink standing for Exchange
        sink_port = free_port()
        sink = subprocess.Popen([sys.executable, str(REPO / "tests/support/sink.py"), "--listen",
                                 f"127.0.0.1:{sink_port}", "--dir", str(tmp / "sink")], cwd=REPO)
        wait_port(sink_port)
        gw = Gateway(tmp / "journal", exchange_port=sink_port, journal="all", users=a.users)
        try:
            v = visibility(gw, a.messages, "journal")
            rows.append(("normal operation, journal = all (delivered, then filed)", v))
        finally:
            gw.stop()
            sink.terminate()
            sink.wait(10)
    load1 = os.getloadavg()
    print(f"load average before {load0[0]:.2f}, after {load1[0]:.2f} (1 min)")
    print("| case | messages | median s | p90 s | max s |")
    print("|---|---:|---:|---:|---:|")
    for name, v in rows:
        q = statistics.quantiles(v, n=10)[-1] if len(v) > 10 else max(v)
        print(f"| {name} | {len(v)} | {statistics.median(v):.3f} | {q:.3f} | {max(v):.3f} |")
    print()
    print("| concurrent webmail users | seconds | requests | req/s | p50 ms | p90 ms | errors | "
          "RSS before MiB | RSS peak MiB | VmHWM MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {a.users} | {a.seconds:.0f} | {load['requests']} | {load['rps']:.1f} | {load['p50_ms']:.1f} | "
          f"{load['p90_ms']:.1f} | {load['errors']} | {load['rss_before_mib']:.1f} | "
          f"{load['rss_peak_mib']:.1f} | {load['hwm_mib']:.1f} |")


if __name__ == "__main__":
    main()
