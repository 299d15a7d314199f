"""Opening the spool database: pragmas for durability and numbered migrations.

A new spool gets PAGE_SIZE pages. Every connection gets WAL journaling with ``synchronous=FULL`` (a COMMIT returns only after the
WAL is fsynced, so a 250 given after it survives power loss), foreign keys on, and a busy timeout
so the CLI and the gateway can share the file. Migrations are the files ``migrations/NNNN_*.sql``
applied in order; ``PRAGMA user_version`` records the last one applied.
"""
from __future__ import annotations

import os
import sqlite3
from importlib import resources
from pathlib import Path

BUSY_TIMEOUT_MS = 10_000
#: Page size in bytes of a spool created from now on (SQLite's default is 4,096). A message body
#: is a chain of overflow pages, each written to the WAL by its own write(2) and copied again by
#: the checkpoint: at 16 KiB a 1 MiB body is 64 pages instead of 256, and two intake workers at
#: 1 MiB × 10 sessions relayed 15-18 % more (bench/README.md). A spool created earlier keeps its
#: page size (in WAL mode SQLite changes it only by a VACUUM outside WAL; nothing needs that).
PAGE_SIZE = 16_384


def connect(path: str | os.PathLike) -> sqlite3.Connection:
    """Open the spool at ``path`` (created with its directory if missing), migrated to the newest
    schema. Autocommit mode: callers open write transactions with ``BEGIN IMMEDIATE``.

    Raises sqlite3.DatabaseError if the file is not a usable SQLite database.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=True)
    conn.row_factory = sqlite3.Row
    conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
    conn.execute(f"PRAGMA page_size={PAGE_SIZE}")    # no effect once the file has its first page
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    migrate(conn)
    return conn


def migrations() -> list[tuple[int, str, str]]:
    """The numbered migrations shipped with the package: [(number, name, sql)] in order."""
    out = []
    for entry in resources.files("spool").joinpath("migrations").iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:4].isdigit():
            out.append((int(name[:4]), name, entry.read_text()))
    return sorted(out)


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration newer than ``PRAGMA user_version``; return the resulting version."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, _name, sql in migrations():
        if number <= current:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # re-check under the write lock: another process may have migrated meanwhile
            if conn.execute("PRAGMA user_version").fetchone()[0] >= number:
                conn.execute("ROLLBACK")
                continue
            for stmt in _statements(sql):
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version={number}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        current = number
    return current


def _statements(sql: str) -> list[str]:
    buf, out = [], []
    for line in sql.splitlines():
        buf.append(line)
        if sqlite3.complete_statement("\n".join(buf)):
            stmt = "\n".join(buf).strip()
            if stmt.strip(";").strip():
                out.append(stmt)
            buf = []
    return out


def transaction(conn: sqlite3.Connection, fn):
    """Run ``fn()`` inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back if it raises); return
    its result. For a connection in autocommit mode outside the writer thread (the CLI)."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        out = fn()
        conn.execute("COMMIT")
        return out
    except BaseException:
        conn.execute("ROLLBACK")
        raise
