"""A real HAProxy (Debian's 2.6, /usr/sbin/haproxy) for end-to-end tests: one TCP frontend on a
loopback address balancing SMTP round-robin over gateways, with PROXY v2 to each server
(``send-proxy-v2``), SMTP health checks that send the header too (``check-send-proxy``,
``option smtpchk``) and fast check intervals, so a killed gateway is marked DOWN within about a
second. Runs in the foreground (``-db``) as a child process, stopped by PID; its admin socket
answers ``show stat`` for the servers' states. deploy/haproxy.cfg is the production example.
"""
from __future__ import annotations

import csv
import io
import socket
import time
from pathlib import Path

from tests.support.peers import Proc

HAPROXY = "/usr/sbin/haproxy"

CONFIG = """\
global
    stats socket {sock} mode 600 level admin
    maxconn 500
    log stdout format raw local0 info

defaults
    mode tcp
    log global
    option tcplog
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout check 2s
    retries 2
    option redispatch 1

frontend smtp_in
    bind {bind}
    default_backend gateways

backend gateways
    balance roundrobin
    option smtpchk EHLO haproxy.test
    source {source}
    default-server send-proxy-v2 check check-send-proxy inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
{servers}
"""


class HAProxyProc(Proc):
    """HAProxy listening on ``bind`` ("127.0.0.10:PORT"), connecting to ``servers`` ({name:
    "host:port"}) from ``source`` (the address the gateways must trust)."""

    def __init__(self, workdir: Path, bind: str, servers: dict[str, str], source: str):
        workdir.mkdir(parents=True, exist_ok=True)
        self.bind, self.servers, self.source = bind, servers, source
        self.sock = workdir / "haproxy.sock"
        self.config = workdir / "haproxy.cfg"
        lines = "\n".join(f"    server {n} {a}" for n, a in servers.items())
        self.config.write_text(CONFIG.format(sock=self.sock, bind=bind, source=source, servers=lines))
        super().__init__([HAPROXY, "-db", "-f", str(self.config)], workdir / "haproxy.log")

    def start(self, timeout: float = 20.0) -> "HAProxyProc":
        """Start, then wait until every server is UP (its health checks pass)."""
        super().start()
        self.wait_states({n: "UP" for n in self.servers}, timeout)
        return self

    def states(self) -> dict[str, str]:
        """{server name: "UP" / "DOWN" / "UP 1/2" ...} from ``show stat`` on the admin socket."""
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(str(self.sock))
            s.sendall(b"show stat\n")
            out = b""
            while chunk := s.recv(65536):
                out += chunk
        rows = csv.DictReader(io.StringIO(out.decode().lstrip("# ")))
        return {r["svname"]: r["status"] for r in rows if r["svname"] in self.servers}

    def wait_states(self, want: dict[str, str], timeout: float) -> dict[str, str]:
        end = time.monotonic() + timeout
        got: dict[str, str] = {}
        while time.monotonic() < end:
            if self.p is not None and self.p.poll() is not None:
                raise RuntimeError(f"haproxy exited with {self.p.returncode}: "
                                   f"{self.log.read_text(errors='replace')[-2000:]}")
            try:
                got = self.states()
            except OSError:
                got = {}
            if all(got.get(n) == st for n, st in want.items()):
                return got
            time.sleep(0.1)
        raise AssertionError(f"haproxy servers {got} never reached {want} in {timeout}s; log: "
                             f"{self.log.read_text(errors='replace')[-2000:]}")
