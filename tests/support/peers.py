"""Starting real peers as separate processes for end-to-end tests: SMTP sinks and the gateway.

Every process is started with Popen, waited for (a 220 greeting), and stopped by PID in
``stop()`` (SIGTERM, then SIGKILL); ``kill()`` is SIGKILL at once (crash tests).
"""
from __future__ import annotations

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_smtp(host: str, port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before listening on {host}:{port}")
        try:
            with socket.create_connection((host, port), timeout=2) as s:
                if s.recv(512).startswith(b"220"):
                    s.sendall(b"QUIT\r\n")
                    return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing answers 220 on {host}:{port} after {timeout}s")


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict | None = None):
        self.argv, self.log, self.env = argv, log, env
        self.p: subprocess.Popen | None = None

    def start(self) -> "Proc":
        self.p = subprocess.Popen(self.argv, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT,
                                  env={**os.environ, **(self.env or {})}, cwd=ROOT)
        return self

    def stop(self, grace: float = 15.0) -> None:
        if self.p is None or self.p.poll() is not None:
            return
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(grace)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait(5)

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait(5)

    @property
    def running(self) -> bool:
        return self.p is not None and self.p.poll() is None


class SinkProc(Proc):
    """tests/support/sink.py on ``host:port``, storing into ``directory``."""

    def __init__(self, host: str, port: int, directory: Path, name: str, *extra: str):
        directory.mkdir(parents=True, exist_ok=True)
        self.host, self.port, self.dir, self.name = host, port, directory, name
        super().__init__([sys.executable, str(HERE / "sink.py"), "--listen", f"{host}:{port}",
                          "--dir", str(directory), "--name", name, *extra], directory.parent / f"{name}.log")

    def start(self) -> "SinkProc":
        super().start()
        wait_smtp(self.host, self.port, proc=self.p)
        return self

    def messages(self) -> list[tuple[dict, bytes]]:
        """[(envelope, bytes)] of every message stored so far, in arrival order."""
        out = []
        for meta in sorted(glob.glob(str(self.dir / "*.json"))):
            with open(meta) as f:
                env = json.load(f)
            out.append((env, Path(meta[:-5] + ".eml").read_bytes()))
        return out

    def count(self) -> int:
        return len(glob.glob(str(self.dir / "*.json")))


class GatewayProc(Proc):
    """`python -m gateway.cli serve --config FILE` with the config written from a TOML string."""

    def __init__(self, workdir: Path, toml: str, port: int):
        workdir.mkdir(parents=True, exist_ok=True)
        self.workdir, self.port = workdir, port
        self.config = workdir / "mailgate.toml"
        self.config.write_text(toml)
        super().__init__([sys.executable, "-m", "gateway.cli", "--config", str(self.config), "serve"],
                         workdir / "gateway.log")

    def start(self) -> "GatewayProc":
        super().start()
        wait_smtp("127.0.0.1", self.port, proc=self.p)
        return self

    def kill_all(self) -> None:
        """SIGKILL the supervisor and every child of it (its intake workers) at once, as a
        machine crash or systemd's SIGKILL of the whole control group does; ``kill()`` kills
        the supervisor only, and its workers then stop by themselves, finishing what they do."""
        if self.p is None or self.p.poll() is not None:
            return
        kids = []
        for task in Path(f"/proc/{self.p.pid}/task").iterdir():
            try:
                kids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:            # a thread that ended while we looked
                continue
        for pid in kids:
            os.kill(pid, signal.SIGKILL)
        self.p.kill()
        self.p.wait(5)

    def wait_workers_ready(self, timeout: float = 30.0) -> int:
        """With ``server.workers`` > 1 the 220 above comes from the first worker ready; wait
        until every worker of the newest start has said ``worker_ready`` (so each has loaded
        the recipient directory as it is now). Returns the number of workers (1: one process,
        no wait). Raises AssertionError after ``timeout`` s."""
        def ready():
            text = self.log_text()
            start = text.rfind("event='workers_started'")
            if start < 0:
                return 1 if "event='listening'" in text else None
            m = re.search(r"workers=(\d+)", text[start:])
            n = int(m.group(1)) if m else 0
            return n if text.count("event='worker_ready'", start) >= n > 0 else None
        return wait_for(ready, timeout, what="every intake worker ready")

    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(self.config), *args],
                              capture_output=True, text=True, cwd=ROOT, check=check, timeout=60)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def wait_for(pred, timeout: float, interval: float = 0.1, what: str = "condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


async def until(pred, timeout: float, what: str = "condition", interval: float = 0.1):
    """The asyncio wait_for: await ``pred()`` until it returns something true; return it, or
    raise AssertionError after ``timeout`` seconds."""
    import asyncio
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = await pred()
        if v:
            return v
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
