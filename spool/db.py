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
#: Page size in bytes of a spool created from now on: SQLite's default, 4,096. Every page a COMMIT
#: touches goes to the WAL whole (and is checksummed and copied again by the checkpoint), so for
#: the many small rows of a group commit small pages cost least: 16 KiB pages (used from 8d45cf6
#: to 2026-12-04) made 1 KiB × 10 sessions 20 % slower (wall and CPU, bench/README.md
#: 2026-12-04) and gained nothing at 64 KiB; bodies of 256 KiB or more live in files
#: (spool.bodyfiles), so large pages no longer help large messages. A spool created with another
#: page size keeps it (in WAL mode SQLite changes it only by a VACUUM outside WAL).
PAGE_SIZE = 4_096


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
