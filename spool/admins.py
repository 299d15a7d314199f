"""Admin console accounts (table ``admin_users``, migration 0010).

An admin session is a row of ``webmail_sessions`` whose address is ``admin:NAME``
(``session_address(name)``); see spool.accounts for creating, reading and revoking sessions.
Names are case-folded. Functions take a connection of the writer thread (writes) or a reader.
"""
from __future__ import annotations

import sqlite3
import time

PREFIX = "admin:"
FIELDS = ("password_hash", "totp_secret", "disabled", "password_changed_at", "totp_last_step")


def session_address(name: str) -> str:
    """The ``webmail_sessions.address`` of admin ``name``'s sessions."""
    return PREFIX + name.casefold()


def name_of(session_address_: str) -> str | None:
    """The admin name of a session address, or None if it is not an admin session."""
    return session_address_[len(PREFIX):] if session_address_.startswith(PREFIX) else None


def get_admin(conn: sqlite3.Connection, name: str) -> dict | None:
    """The admin row as a dict (name, password_hash, totp_secret, disabled, created_at,
    password_changed_at, totp_last_step), or None."""
    row = conn.execute("SELECT * FROM admin_users WHERE name = ?", (name.casefold(),)).fetchone()
    return dict(row) if row else None


def ensure_admin(conn: sqlite3.Connection, name: str, now: float | None = None) -> dict:
    """Create admin ``name`` (not enrolled: no password, no TOTP) if missing; return the row."""
    conn.execute("INSERT OR IGNORE INTO admin_users (name, created_at) VALUES (?, ?)",
                 (name.casefold(), time.time() if now is None else now))
    return get_admin(conn, name)


def update_admin(conn: sqlite3.Connection, name: str, **fields) -> bool:
    """Set ``fields`` (a subset of FIELDS) on admin ``name``; False if there is no such admin.
    Raises ValueError for an unknown field."""
    bad = set(fields) - set(FIELDS)
    if bad:
        raise ValueError(f"unknown admin_users fields: {sorted(bad)}")
    if not fields:
        return get_admin(conn, name) is not None
    cols = ", ".join(f"{k} = ?" for k in fields)
    cur = conn.execute(f"UPDATE admin_users SET {cols} WHERE name = ?",
                       (*fields.values(), name.casefold()))
    return cur.rowcount > 0


def list_admins(conn: sqlite3.Connection) -> list[dict]:
    """Every admin, by name."""
    return [dict(r) for r in conn.execute("SELECT * FROM admin_users ORDER BY name")]
