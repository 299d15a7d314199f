"""Fixtures for health probe tests: HTTP servers as real processes (Python's http.server serving
a directory, and tests/support/healthpages.py answering configured statuses), stopped at teardown
through the ``peers`` fixture."""
from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from tests.support.peers import HERE, Proc, free_port


def wait_tcp(host: str, port: int, proc: Proc, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if not proc.running:
            raise RuntimeError(f"{proc.argv} exited before listening on {host}:{port}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout}s")


class HealthPages(Proc):
    """tests/support/healthpages.py on 127.0.0.1; ``set(path=status, ...)`` changes answers live."""

    def __init__(self, base: Path, pages: dict[str, int], delays: dict[str, float],
                 tls: tuple[str, str] | None = None):
        self.port, self.scheme = free_port(), ("https" if tls else "http")
        self.state = base / f"healthpages-{self.port}.json"
        self.state.write_text(json.dumps({"pages": pages, "delays": delays}))
        super().__init__([sys.executable, str(HERE / "healthpages.py"), "--listen",
                          f"127.0.0.1:{self.port}", "--state", str(self.state),
                          *(["--tls", ",".join(tls)] if tls else [])],
                         base / f"healthpages-{self.port}.log")

    def url(self, path: str) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}{path}"

    def set(self, pages: dict[str, int]) -> None:
        s = json.loads(self.state.read_text())
        s["pages"].update(pages)
        tmp = self.state.with_suffix(".tmp")
        tmp.write_text(json.dumps(s))
        tmp.rename(self.state)


@pytest.fixture
def health_pages(peers, tmp_path):
    """Factory: ``health_pages({"/owa/healthcheck.htm": 200}, delays={path: 30}, tls=(cert, key))`` →
    a running HealthPages."""

    def start(pages: dict[str, int], delays: dict[str, float] | None = None,
              tls: tuple[str, str] | None = None) -> HealthPages:
        hp = HealthPages(tmp_path, pages, delays or {}, tls)
        peers.procs.append(hp)
        hp.start()
        wait_tcp("127.0.0.1", hp.port, hp)
        return hp

    return start


@pytest.fixture(scope="module")
def tls_ca(tmp_path_factory):
    """A trustme CA and a certificate for "localhost", 127.0.0.1 and mx1.site-a.smarthost.test:
    (ca_pem, cert_pem, key_pem) paths."""
    import trustme
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost", "127.0.0.1", "mx1.site-a.smarthost.test")
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    cert.private_key_pem.write_to_path(str(d / "key.pem"))
    cert.cert_chain_pems[0].write_to_path(str(d / "cert.pem"))
    return str(d / "ca.pem"), str(d / "cert.pem"), str(d / "key.pem")


@pytest.fixture
def static_site(peers, tmp_path):
    """``python -m http.server`` serving a directory that holds only owa/healthcheck.htm;
    yields the base URL."""
    root = tmp_path / "www"
    (root / "owa").mkdir(parents=True)
    (root / "owa" / "healthcheck.htm").write_text("200 OK<br/>EXCH01.example.test")
    port = free_port()
    proc = Proc([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                 str(root), str(port)], tmp_path / "http-server.log")
    peers.procs.append(proc)
    proc.start()
    wait_tcp("127.0.0.1", port, proc)
    return f"http://127.0.0.1:{port}"
