"""Which spool the CLI talks to: the one place that knows ``spool.backend`` for the commands.

Every command that reaches the spool runs on either backend, and on PostgreSQL never creates an
empty ``spool.db`` beside the cluster (doctor's disk check says the spool's volume is not checked
there). On PostgreSQL (``cluster status``, ``queue list|show``, the queue's changes ``queue
flush|hold|release|delete``, ``alerts test``'s alert mail, ``users`` / ``admins`` through the
account verbs, gateway.cli_users.on_spool; ``continuity``, ``probes``, ``drill`` and ``mailbox``
through the console and mailbox verbs, ``on_console``) they use ``on_postgresql``: one plain
psycopg connection (read-only unless asked otherwise), never a PgSpool, so the CLI does not
register itself as a node, migrate the schema or start a writer.

Errors: PgUnavailable (exit 1 in the commands) when the database cannot be reached, has no
mailgate schema, or kept a row locked too long for a change; its message names host:port/dbname,
never the password.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["PgUnavailable", "is_postgresql", "on_console", "on_postgresql", "where"]


class PgUnavailable(Exception):
    """The PostgreSQL spool could not be reached or read; str() is one line, no password."""


def is_postgresql(cfg) -> bool:
    return cfg.spool.backend == "postgresql"


def where(dsn: str) -> str:
    """``host:port/dbname`` of ``dsn``, no secrets (spool.pg.db.where)."""
    from spool.pg.db import where as _where
    return _where(dsn)


def _scrub(text: str, dsn: str) -> str:
    """First line of ``text`` with the DSN's password (if any) replaced by ***."""
    import psycopg
    line = (str(text).strip().splitlines() or [""])[0]
    try:
        pw = psycopg.conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.ProgrammingError:
        pw = None
    return line.replace(pw, "***") if pw else line


def on_postgresql(cfg, fn: Callable[..., Awaitable[Any]], *args: Any, read_only: bool = True) -> Any:
    """``await fn(conn, *args)`` on a fresh autocommit psycopg AsyncConnection to ``spool.dsn``
    (libpq keepalives and a 5 s connect timeout from spool.pg.db), closed after; read-only
    unless ``read_only=False`` (the queue's changes: ``fn`` opens its own short transactions,
    spool.pg.admin_ops). Raises PgUnavailable if the database cannot be reached, a row stays
    locked past spool.pg.admin_ops.LOCK_TIMEOUT, or the mailgate schema is missing; other
    exceptions of ``fn`` (InvalidTransition) pass through."""
    import psycopg

    from spool.pg import db as pgdb
    dsn, at = cfg.spool.dsn, where(cfg.spool.dsn)

    async def run():
        async with await psycopg.AsyncConnection.connect(
                pgdb.conninfo(dsn), autocommit=True, application_name="mailgate-cli") as conn:
            if read_only:
                await conn.execute("SET default_transaction_read_only = on")
            return await fn(conn, *args)
    try:
        return asyncio.run(run())
    except (psycopg.errors.UndefinedTable, psycopg.errors.UndefinedColumn) as e:
        raise PgUnavailable(f"the PostgreSQL spool at {at} lacks (part of) the mailgate schema "
                            f"({_scrub(e, dsn)}): start a gateway of this version once to migrate "
                            "it") from None
    except psycopg.errors.LockNotAvailable as e:
        raise PgUnavailable(f"the PostgreSQL spool at {at} kept the message locked: "
                            f"{_scrub(e, dsn)}; nothing changed, try again") from None
    except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as e:
        raise PgUnavailable(f"cannot reach the PostgreSQL spool at {at}: "
                            f"{type(e).__name__}: {_scrub(e, dsn)}") from None


def on_console(cfg, fn: Callable[..., Awaitable[Any]], *args: Any, read_only: bool = True) -> Any:
    """``await fn(verbs, *args)`` with ``verbs`` the spool's console and continuity verbs on one
    connection of the CLI's own (spool.console_verbs.ConnectionConsole on the SQLite file,
    spool.pg.console.PgConnectionConsole on PostgreSQL, through on_postgresql); its result.
    Raises PgUnavailable when the PostgreSQL spool cannot be reached."""
    if is_postgresql(cfg):
        from spool.pg.console import PgConnectionConsole
        return on_postgresql(cfg, lambda conn: fn(PgConnectionConsole(conn), *args),
                             read_only=read_only)
    from spool import db
    from spool.console_verbs import ConnectionConsole
    conn = db.connect(cfg.spool_path)
    try:
        return asyncio.run(fn(ConnectionConsole(conn), *args))
    finally:
        conn.close()
