"""A throwaway PostgreSQL 15 cluster for tests: initdb into a temporary directory, pg_ctl start
on a free loopback port, one fresh database per test cloned from a migrated template.

``initdb`` refuses to run as root, so as root the cluster is made and run by a dedicated user
(``postgres`` if it exists, else ``nobody``) in a directory that user owns; as any other user it
runs as that user. Authentication is ``trust`` (loopback only, a test cluster). The server gets
``fsync=on`` (a commit is durable before its 250, as in production) and the server-side timeouts
of CLUSTER-NOTES.md (keepalives 5 s / 2 s / 3, ``idle_in_transaction_session_timeout=10s``,
``client_connection_check_interval=2s``).

``PgCluster.start()`` / ``stop(mode)`` may be called again during a test (the outage tests stop
it with ``-m immediate`` and start it again on the same port).
"""
from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from tests.support.peers import free_port

PG_BIN = Path(os.environ.get("MAILGATE_PG_BIN", "/usr/lib/postgresql/15/bin"))
SUPERUSER = "mailgate"
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "on",
    "tcp_keepalives_idle": "5",
    "tcp_keepalives_interval": "2",
    "tcp_keepalives_count": "3",
    "idle_in_transaction_session_timeout": "10s",
    "client_connection_check_interval": "2s",
    "max_connections": "100",
    "shared_buffers": "32MB",
}


def available() -> bool:
    """True if the PostgreSQL server binaries are installed (postgresql-15)."""
    return (PG_BIN / "initdb").exists() and (PG_BIN / "pg_ctl").exists()


def _run_as() -> str | None:
    """The user to run initdb and the server as: None for the current user, unless root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    raise RuntimeError("running as root and neither user postgres nor nobody exists for initdb")


class PgCluster:
    """One PostgreSQL server in ``base`` (a directory it may own entirely) on 127.0.0.1:port."""

    def __init__(self, base: Path | None = None):
        self.base = Path(base or tempfile.mkdtemp(prefix="mailgate-pg-"))
        self.datadir = self.base / "data"
        self.sockdir = self.base / "sock"
        self.port = free_port()
        self.user = _run_as()
        self.logfile = self.base / "server.log"

    def _cmd(self, *argv: str) -> list[str]:
        if self.user is None:
            return list(argv)
        return ["runuser", "-u", self.user, "--", *argv]

    def _chown(self, path: Path) -> None:
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def init(self) -> None:
        """initdb -A trust into ``datadir`` (raises CalledProcessError with initdb's output)."""
        for d in (self.base, self.sockdir):
            d.mkdir(parents=True, exist_ok=True)
            self._chown(d)
        os.chmod(self.base, 0o755)
        subprocess.run(self._cmd(str(PG_BIN / "initdb"), "-A", "trust", "-U", SUPERUSER,
                                 "-E", "UTF8", "--locale=C", "-D", str(self.datadir)),
                       check=True, capture_output=True, text=True)
        self.logfile.touch()
        self._chown(self.logfile)

    def server_options(self) -> list[str]:
        """The postgres server's options: SERVER_SETTINGS, the port, the socket directory."""
        opts = [x for k, v in SERVER_SETTINGS.items() for x in ("-c", f"{k}={v}")]
        return [*opts, "-p", str(self.port), "-c", f"unix_socket_directories={self.sockdir}"]

    def foreground_argv(self) -> list[str]:
        """The command that runs the server in the foreground (as ``self.user``), for a caller
        that wants the postmaster as its own child (bench/pg_gateway.py: one process tree)."""
        return self._cmd(str(PG_BIN / "postgres"), "-D", str(self.datadir), *self.server_options())

    def start(self, timeout: float = 30.0) -> None:
        """pg_ctl start (waits until it accepts connections)."""
        opts = " ".join(self.server_options())
        subprocess.run(self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-l",
                                 str(self.logfile), "-o", opts, "-w", "-t", str(int(timeout)),
                                 "start"), check=True, capture_output=True, text=True)

    def stop(self, mode: str = "fast") -> None:
        """pg_ctl stop -m ``mode`` (fast, immediate); no error if it is not running."""
        subprocess.run(self._cmd(str(PG_BIN / "pg_ctl"), "-D", str(self.datadir), "-m", mode,
                                 "-w", "stop"), capture_output=True, text=True)

    def dsn(self, dbname: str = "postgres") -> str:
        """A libpq conninfo for ``dbname`` over TCP on the loopback port."""
        return f"host=127.0.0.1 port={self.port} user={SUPERUSER} dbname={dbname}"

    def sql(self, statement: str, dbname: str = "postgres") -> None:
        """Run one statement in autocommit mode (CREATE DATABASE cannot run in a transaction)."""
        import psycopg
        with psycopg.connect(self.dsn(dbname), autocommit=True) as conn:
            conn.execute(statement)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


def wait_until(pred, timeout: float = 30.0, interval: float = 0.05):
    """Poll ``pred()`` until it returns something true; return it, or raise AssertionError."""
    deadline = time.monotonic() + timeout
    while True:
        out = pred()
        if out:
            return out
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)


TEMPLATE = "mailgate_template"


def make_template(cluster: PgCluster) -> None:
    """Create database TEMPLATE with every PostgreSQL spool migration applied (copied per test)."""
    import asyncio

    import psycopg

    from spool.pg import db as pgdb

    cluster.sql(f"CREATE DATABASE {TEMPLATE}")

    async def run():
        async with await psycopg.AsyncConnection.connect(cluster.dsn(TEMPLATE), autocommit=True) as c:
            await pgdb.migrate(c)
    # in a thread of its own: the fixture may be requested from inside a running event loop
    import threading
    errors: list[BaseException] = []

    def target():
        try:
            asyncio.run(run())
        except BaseException as e:   # re-raised below
            errors.append(e)
    t = threading.Thread(target=target)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def started_cluster() -> PgCluster:
    """A new cluster, initialised and started (its log in the error if it does not start)."""
    cluster = PgCluster()
    try:
        cluster.init()
        cluster.start()
    except subprocess.CalledProcessError as e:
        tail = cluster.log_tail()
        cluster.destroy()
        raise RuntimeError(f"PostgreSQL did not start: {e.stderr or e.stdout}\n{tail}") from e
    return cluster


_counter = iter(range(1, 1 << 30))


def fresh_database(cluster: PgCluster) -> tuple[str, str]:
    """CREATE DATABASE ... TEMPLATE mailgate_template; return (name, dsn)."""
    name = f"t{os.getpid()}_{next(_counter)}"
    cluster.sql(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    return name, cluster.dsn(name)
