"""Connecting to the PostgreSQL spool: the connection pool, libpq keepalives, numbered migrations,
and which errors mean "the storage failed" (SpoolError) rather than "this operation failed".

Connections come from a psycopg_pool.AsyncConnectionPool in autocommit mode (every transaction
is explicit). Unless the DSN says otherwise, libpq gets the client keepalives of CLUSTER-NOTES.md
(idle 5 s, interval 2 s, count 3, ``tcp_user_timeout`` 10 s) and a 5 s connect timeout, so a
silently partitioned server is noticed in seconds, not after the kernel's 2 h default.
Migrations are ``spool/pg/migrations/NNNN_*.sql``, applied in order, each in its own transaction
under a transaction advisory lock (two nodes starting together do not both migrate), recorded in
``schema_version``.
"""
from __future__ import annotations

import time
import weakref
from importlib import resources

import psycopg
from psycopg import conninfo as _conninfo
from psycopg_pool import AsyncConnectionPool

CLIENT_DEFAULTS = {"keepalives": "1", "keepalives_idle": "5", "keepalives_interval": "2",
                   "keepalives_count": "3", "tcp_user_timeout": "10000", "connect_timeout": "5",
                   "application_name": "mailgate"}
#: Key of the advisory lock taken while migrating (any constant unique to mailgate).
MIGRATION_LOCK = 0x6D61696C67617465 & 0x7FFFFFFFFFFFFFFF


def conninfo(dsn: str) -> str:
    """``dsn`` (a libpq conninfo string or URI) with CLIENT_DEFAULTS for the keys it leaves out.
    Raises psycopg.ProgrammingError if the DSN does not parse."""
    given = _conninfo.conninfo_to_dict(dsn)
    return _conninfo.make_conninfo("", **{**CLIENT_DEFAULTS, **given})


def where(dsn: str) -> str:
    """``host:port/dbname`` of ``dsn`` (libpq's defaults for what it leaves out: localhost,
    5432, the user name as database), never its password: for logs and error messages."""
    try:
        d = _conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(unparsable DSN)"
    return f"{d.get('host') or d.get('hostaddr') or 'localhost'}:{d.get('port') or 5432}/" \
           f"{d.get('dbname') or d.get('user') or ''}"


#: A connection given back to the pool less than this many seconds ago, in a good state, is
#: handed out again without the check's round trip (under load that is nearly every one: the
#: check cost a round trip per spool operation); an older one is checked.
CHECK_AFTER_IDLE = 0.25
_returned_at: "weakref.WeakKeyDictionary[psycopg.AsyncConnection, float]" = weakref.WeakKeyDictionary()


async def _mark_returned(conn: psycopg.AsyncConnection) -> None:
    """The pool's ``reset`` hook: when ``conn`` came back (monotonic seconds)."""
    _returned_at[conn] = time.monotonic()


async def _check(conn: psycopg.AsyncConnection) -> None:
    """The pool's ``check``: psycopg_pool's round trip (a broken connection raises and is
    replaced), skipped for a connection back for less than CHECK_AFTER_IDLE seconds whose
    libpq status is still OK."""
    back = _returned_at.get(conn)
    if (back is not None and time.monotonic() - back < CHECK_AFTER_IDLE and not conn.broken
            and conn.pgconn.status == psycopg.pq.ConnStatus.OK):
        return
    await AsyncConnectionPool.check_connection(conn)


def make_pool(dsn: str, *, min_size: int = 2, max_size: int = 10,
              timeout: float = 5.0) -> AsyncConnectionPool:
    """A pool (not yet open) for ``dsn``; a connection is checked before it is handed out (a
    broken one is replaced) unless it was in use a moment ago (``_check``), and a caller waits
    at most ``timeout`` seconds for one."""
    return AsyncConnectionPool(conninfo(dsn), min_size=min_size, max_size=max_size, open=False,
                               kwargs={"autocommit": True}, timeout=timeout,
                               check=_check, reset=_mark_returned,
                               reconnect_timeout=3600.0, name="mailgate-spool")


def storage_failure(e: BaseException) -> bool:
    """True if ``e`` means the database could not be reached or could not make the work durable
    (connection lost, server shutting down, pool timeout, disk full, deadlock or serialization
    failure: all psycopg.OperationalError), not an error of the operation (a constraint)."""
    return isinstance(e, (psycopg.OperationalError, psycopg.InterfaceError, OSError))


def disk_full(e: BaseException) -> bool:
    """True if ``e`` is PostgreSQL's disk full (SQLSTATE 53100)."""
    return isinstance(e, psycopg.errors.DiskFull)


def migrations() -> list[tuple[int, str, str]]:
    """The numbered PostgreSQL migrations shipped with the package: [(number, name, sql)]."""
    out = []
    for entry in resources.files("spool.pg").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text()))
    return sorted(out)


async def migrate(conn: psycopg.AsyncConnection) -> int:
    """Apply every migration newer than the highest ``schema_version``; return that version."""
    await conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version integer PRIMARY KEY,"
                       " name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
    current = 0
    for number, name, sql in migrations():
        async with conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            cur = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
            current = (await cur.fetchone())[0]
            if number <= current:
                continue
            await conn.execute(sql.encode())    # several statements: the simple query protocol
            await conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                               (number, name))
            current = number
    return current


class OneConnection:
    """``read`` / ``transaction`` / ``write`` over one psycopg AsyncConnection in autocommit mode
    (the CLI: not a node, no pool, no writer), for the verb mixins: each write a transaction of
    its own; audit rows name ``node``."""

    def __init__(self, conn, node: str = "cli"):
        self.conn, self.node = conn, node

    async def read(self, fn, *args):
        """``await fn(conn, *args)`` outside an explicit transaction."""
        return await fn(self.conn, *args)

    async def transaction(self, fn, *args):
        """``await fn(conn, *args)`` in one transaction (committed, or rolled back on error)."""
        async with self.conn.transaction():
            return await fn(self.conn, *args)

    #: no group commit here: a verb's ``write`` is a transaction of its own too
    write = transaction

