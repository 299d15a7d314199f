"""Shared fixtures: the real-world corpus, and real peers (SMTP sinks, the gateway) as processes.

Whole-path tests start the gateway with ``peers.gateway(config_toml(...))`` and sinks with
``peers.sink(...)``; every process is stopped at teardown. The DNS server fixture lives in
tests/support/dnsserver.py (Debian's dnsmasq on a loopback port).
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.support.peers import GatewayProc, SinkProc, free_port  # noqa: E402

CORPUS = ROOT.parent / "shared" / "corpus" / "messages"


def corpus_files() -> list[Path]:
    """Every real-world message of ../shared/corpus/messages, sorted by name."""
    return sorted(CORPUS.glob("*.eml"))


def config_toml(*, port: int, data_dir: Path, smarthost: str, accepted=("example.com",),
                directory: Path | None = None, trusted=(), dns_port: int | None = None,
                mx_port: int = 25, smarthost_port: int | None = None, minimal_backoff: float = 2.0,
                maximal_backoff: float = 4.0, continuity: str | None = "off", extra: str = "",
                event_loop: str | None = None, workers: int | None = None) -> str:
    """A gateway configuration for tests: SMTP on 127.0.0.1:port, routes to ``smarthost``,
    DNS from the test server when ``dns_port`` is given. ``smarthost_port`` is the port for a
    smarthost given as a name (MX-priority smarthosts); the backoffs are seconds. ``extra`` is
    appended TOML (it must not repeat a table emitted here: TOML forbids duplicate tables).
    ``continuity`` is the engine mode ("off" by default so relay tests are not turned into
    continuity events by a downstream they stop on purpose); None emits no [continuity] table."""
    lines = [
        "[server]", 'hostname = "gw.test"', f'data_dir = "{data_dir}"',
        *([f'event_loop = "{event_loop}"'] if event_loop else []),
        *([f"workers = {workers}"] if workers is not None else []),   # None: the default, "auto"
        "[smtp]", f'listen = ["127.0.0.1:{port}"]',
        "[relay]", f"accepted_domains = {list(accepted)!r}".replace("'", '"'),
        f"trusted_networks = {list(trusted)!r}".replace("'", '"'),
        "[routing]", f'default_smarthost = "{smarthost}"', f"mx_port = {mx_port}",
        *([f"smarthost_port = {smarthost_port}"] if smarthost_port is not None else []),
        'smarthost_tls = "opportunistic"', "smarthost_verify_tls = false",
        "[delivery]", "connect_timeout = 2.0", "dead_host_ttl = 5.0",
        f"minimal_backoff = {minimal_backoff}", f"maximal_backoff = {maximal_backoff}",
        "[log]", 'level = "info"',
    ]
    if directory is not None:
        lines += ["[directory]", f'file = "{directory}"', "reload_interval = 0.5"]
    if dns_port is not None:
        lines += ["[dns]", 'nameservers = ["127.0.0.1"]', f"port = {dns_port}", "timeout = 1.0",
                  "lifetime = 2.0"]
    if continuity is not None:
        lines += ["[continuity]", f'mode = "{continuity}"']
    if "[admin]" not in extra:    # a free port: gateways in parallel tests never collide
        lines += ["[admin]", 'listen = "127.0.0.1:0"']
    if "[webmail]" not in extra:  # off unless a test asks for it (its default port is fixed)
        lines += ["[webmail]", "enabled = false"]
    return "\n".join(lines) + "\n" + extra


def fast_continuity(canary: str, *, mode: str = "automatic", **continuity) -> str:
    """TOML tables for a continuity engine that decides in seconds (for ``config_toml(extra=...,
    continuity=None)``): an SMTP probe every 0.5 s (1 s timeout) with ``canary`` as its RCPT,
    enter_after and hold_down 2 s, tick 0.2 s; ``continuity`` overrides or adds keys of
    [continuity] (seconds, rates), e.g. ``replay_concurrency=20``."""
    keys = {"enter_after": 2.0, "hold_down": 2.0, "tick": 0.2, **continuity}
    lines = ["[continuity]", f'mode = "{mode}"', *(f"{k} = {v!r}" for k, v in keys.items()),
             "[probes]", "smtp_interval = 0.5", "smtp_timeout = 1.0", f'canary_rcpt = "{canary}"']
    return "\n" + "\n".join(lines) + "\n"


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_choice(request) -> str:
    """server.event_loop for a gateway process: the test runs once on each loop (uvloop must
    be installed: the extra "fast")."""
    return request.param


def assert_loop(gw, choice: str) -> None:
    """The gateway process ``gw`` logged that it runs on ``choice``."""
    want = "loop='uvloop" if choice == "uvloop" else "loop='asyncio'"
    assert any("event='event_loop'" in line and want in line for line in gw.log_text().splitlines()), \
        gw.log_text()[-2000:]


class Peers:
    def __init__(self, base: Path):
        self.base = base
        self.procs: list = []

    def sink(self, host: str = "127.0.0.1", port: int | None = None, name: str = "sink",
             *extra: str) -> SinkProc:
        s = SinkProc(host, port or free_port(), self.base / f"sink-{name}", name, *extra)
        self.procs.append(s)
        return s.start()

    def gateway(self, toml: str, port: int, name: str = "gw") -> GatewayProc:
        g = GatewayProc(self.base / name, toml, port)
        self.procs.append(g)
        return g.start()

    def close(self) -> None:
        for p in reversed(self.procs):
            p.stop()


@pytest.fixture
def peers(tmp_path):
    p = Peers(tmp_path)
    yield p
    p.close()


@pytest.fixture
def webhook(tmp_path):
    """A webhook receiver process (tests/support/webhook.py): (port, directory of POST bodies)."""
    port, d = free_port(), tmp_path / "hooks"
    p = subprocess.Popen([sys.executable, str(ROOT / "tests/support/webhook.py"), "--port", str(port),
                          "--dir", str(d)])
    time.sleep(0.5)
    yield port, d
    p.terminate()
    p.wait(5)


# -- PostgreSQL (issue 9): one throwaway cluster per session, a fresh database per test ---------
@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL 15 cluster on a loopback port (tests/support/postgres.py) with a migrated
    template database; skipped if postgresql-15 is not installed."""
    from tests.support import postgres as pg
    if not pg.available():
        pytest.skip(f"PostgreSQL server binaries not found in {pg.PG_BIN} (postgresql-15)")
    cluster = pg.started_cluster()
    try:
        pg.make_template(cluster)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_dsn(pg_cluster):
    """The DSN of a new database cloned from the migrated template, dropped afterwards."""
    from tests.support import postgres as pg
    name, dsn = pg.fresh_database(pg_cluster)
    yield dsn
    pg_cluster.sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
