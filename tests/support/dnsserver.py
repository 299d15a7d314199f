"""A real DNS server for tests: Debian's dnsmasq on 127.0.0.1 serving records given in Python.

    with DnsServer(mx={"d.test": [(10, "mx1.d.test")]}, a={"mx1.d.test": "127.0.0.11"}) as dns:
        resolver = MxResolver(["127.0.0.1"], port=dns.port)

Checked against dnsmasq 2.90:
- null MX works: ``--mx-host=nullmx.test,.,0`` is answered as ``MX 0 .`` (RFC 7505).
- ``servfail=[...]`` domains get ``--server=/domain/#`` ("use the standard servers"); with
  ``--no-resolv`` there are none, so dnsmasq answers REFUSED, which dnspython reports as
  ``NoNameservers`` exactly like SERVFAIL.
- ``timeout=[...]`` domains are forwarded to a closed local UDP port: dnsmasq never answers, so
  clients see a timeout (``LifetimeTimeout``).
- ``txt={name: text or [texts]}``: one TXT record per text, written as ``txt-record=name,"..."``
  lines of a conf file (on the command line dnsmasq keeps the quotes and splits at commas); a
  text longer than 255 bytes becomes one record of 255-byte strings (RFC 7208 §3.3, RFC 6376
  §3.6.2.2: receivers concatenate them).
- names under ``--local=/test/`` with no record are NXDOMAIN; a name that has only an A record is
  NOERROR with no answer (NoAnswer) for MX and AAAA.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

DNSMASQ = "/usr/sbin/dnsmasq"


def _free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
            u.bind(("127.0.0.1", 0))
            port = u.getsockname()[1]
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
                try:
                    t.bind(("127.0.0.1", port))
                except OSError:
                    continue
        return port
    raise RuntimeError("no free UDP+TCP port on 127.0.0.1")


def _as_list(value: str | list[str] | tuple[str, ...]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


class DnsServer:
    """dnsmasq serving ``mx`` {name: [(pref, target)]}, ``a``/``aaaa`` {name: addr or [addrs]},
    answering REFUSED (→ NoNameservers) under ``servfail`` domains and never answering under
    ``timeout`` domains. Every other name under ``local`` ("test") is NXDOMAIN."""

    def __init__(self, *, mx: dict[str, list[tuple[int, str]]] | None = None,
                 a: dict[str, str | list[str]] | None = None,
                 aaaa: dict[str, str | list[str]] | None = None,
                 servfail: list[str] = (), timeout: list[str] = (), local: str = "test",
                 txt: dict[str, str | list[str]] | None = None) -> None:
        self.mx, self.a, self.aaaa = mx or {}, a or {}, aaaa or {}
        self.txt = txt or {}
        self.servfail, self.timeout, self.local = list(servfail), list(timeout), local
        self.port: int = 0
        self.pid: int | None = None
        self._proc: subprocess.Popen | None = None
        self._dir: str | None = None
        self._black_hole: socket.socket | None = None

    def args(self) -> list[str]:
        """The dnsmasq command line (without the binary) for the current records."""
        args = [f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces",
                "--no-resolv", "--no-hosts", "--no-daemon", "--log-queries",
                "--conf-file=/dev/null", f"--local=/{self.local}/",
                f"--pid-file={os.path.join(self._dir or '.', 'dnsmasq.pid')}", "--cache-size=0"]
        for name, records in self.mx.items():
            args += [f"--mx-host={name},{target or '.'},{pref}" for pref, target in records]
        for table in (self.a, self.aaaa):     # one --host-record per address: dnsmasq merges them
            args += [f"--host-record={name},{addr}" for name, addrs in table.items()
                     for addr in _as_list(addrs)]
        if self.txt:
            args.append(f"--conf-file={self._txt_file()}")
        args += [f"--server=/{d}/#" for d in self.servfail]
        if self.timeout:
            hole = self._black_hole.getsockname()[1] if self._black_hole else 9
            args += [f"--server=/{d}/127.0.0.1#{hole}" for d in self.timeout]
        return args

    def _txt_file(self) -> str:
        """Write the TXT records as a dnsmasq conf file (quotes parsed there); its path."""
        path = os.path.join(self._dir or ".", "txt.conf")
        lines = []
        for name, texts in self.txt.items():
            for text in _as_list(texts):
                chunks = [text[i:i + 255] for i in range(0, len(text), 255)] or [""]
                quoted = ('"' + c.replace("\\", "\\\\").replace('"', '\\"') + '"' for c in chunks)
                lines.append(f"txt-record={name}," + ",".join(quoted))
        with open(path, "w") as f:
            f.write("\n".join(lines) + "\n")
        return path

    def start(self) -> "DnsServer":
        """Start dnsmasq and wait until it answers (≤5 s). Raises RuntimeError if dnsmasq is
        missing or fails to start (its stderr is in the message)."""
        if not (os.access(DNSMASQ, os.X_OK) or shutil.which("dnsmasq")):
            raise RuntimeError(f"dnsmasq not found at {DNSMASQ}: apt-get install dnsmasq-base")
        binary = DNSMASQ if os.access(DNSMASQ, os.X_OK) else shutil.which("dnsmasq")
        self._dir = tempfile.mkdtemp(prefix="mailgate-dns-")
        if self.timeout:    # a bound UDP socket nobody reads: queries vanish, no ICMP refusal
            self._black_hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self._black_hole.bind(("127.0.0.1", 0))
        for _attempt in range(3):
            self.port = _free_port()
            self._log = open(os.path.join(self._dir, "dnsmasq.log"), "w+b")
            self._proc = subprocess.Popen([binary, *self.args()], stdout=self._log,
                                          stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
            self.pid = self._proc.pid
            if self._wait_ready():
                return self
            self._kill()
        raise RuntimeError(f"dnsmasq did not start: {self.log_text()[-2000:]}")

    def _wait_ready(self) -> bool:
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.settimeout(0.2)
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return True
            time.sleep(0.05)
        return False

    def log_text(self) -> str:
        """dnsmasq's output so far (its query log, with --log-queries)."""
        try:
            with open(os.path.join(self._dir or ".", "dnsmasq.log"), "rb") as f:
                return f.read().decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        """Stop dnsmasq by its PID (SIGTERM, then SIGKILL after 5 s), wait for it, clean up."""
        self._kill()
        if self._black_hole is not None:
            self._black_hole.close()
            self._black_hole = None
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self) -> "DnsServer":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
