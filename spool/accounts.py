"""Webmail accounts, server-side sessions and the append-only audit log (migration 0005).

Every function takes a sqlite3 connection: writes run in the spool's writer thread
(``Spool.write(fn, ...)``), reads on a reader (``Spool.read(fn, ...)``). Addresses are mailbox
keys (the same key as spool.mailbox). Session ids are 256-bit random values; only their SHA-256 is
stored. Times are unix seconds (wall clock).
"""
from __future__ import annotations

import hashlib
import secrets
import sqlite3
import time


def _hash_id(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


# -- accounts -----------------------------------------------------------------------------------
def get_user(conn: sqlite3.Connection, address: str) -> dict | None:
    """The account row of ``address`` (a mailbox key), or None."""
    row = conn.execute("SELECT * FROM webmail_users WHERE address=?", (address,)).fetchone()
    return dict(row) if row else None


def ensure_user(conn: sqlite3.Connection, address: str, now: float | None = None) -> dict:
    """The account of ``address``, created (no password, enabled) if it does not exist."""
    now = time.time() if now is None else now
    conn.execute("INSERT OR IGNORE INTO webmail_users (address, created_at) VALUES (?, ?)", (address, now))
    return get_user(conn, address)


_USER_FIELDS = frozenset({"password_hash", "totp_secret", "disabled", "alt_email", "phone",
                          "password_changed_at"})


def update_user(conn: sqlite3.Connection, address: str, **fields) -> bool:
    """Set ``fields`` (columns of webmail_users other than address) on an existing account,
    creating it first; returns True. Raises ValueError for an unknown field."""
    bad = set(fields) - _USER_FIELDS
    if bad:
        raise ValueError(f"unknown account fields: {sorted(bad)}")
    ensure_user(conn, address)
    if fields:
        cols = ", ".join(f"{k}=?" for k in fields)
        conn.execute(f"UPDATE webmail_users SET {cols} WHERE address=?", (*fields.values(), address))
    return True


def list_users(conn: sqlite3.Connection) -> list[dict]:
    return [dict(r) for r in conn.execute("SELECT * FROM webmail_users ORDER BY address")]


# -- sessions -----------------------------------------------------------------------------------
def create_session(conn: sqlite3.Connection, address: str, *, lifetime: float, client: str = "",
                   user_agent: str = "", mfa: bool = False, now: float | None = None) -> tuple[str, str]:
    """Open a session for ``address`` valid ``lifetime`` seconds at most; returns (session id for
    the cookie, CSRF token). The id is returned once and never stored in clear."""
    now = time.time() if now is None else now
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO webmail_sessions (id_hash, address, csrf_token, created_at, last_seen, expires_at,"
        " client, user_agent, mfa) VALUES (?,?,?,?,?,?,?,?,?)",
        (_hash_id(sid), address, csrf, now, now, now + lifetime, client[:200], user_agent[:500], int(mfa)))
    return sid, csrf


def get_session(conn: sqlite3.Connection, session_id: str, *, idle: float,
                now: float | None = None) -> dict | None:
    """The live session of cookie value ``session_id`` (not revoked, not past its absolute
    expiry, used within ``idle`` seconds, account enabled), or None. Read-only."""
    now = time.time() if now is None else now
    row = conn.execute(
        "SELECT s.*, u.disabled FROM webmail_sessions s LEFT JOIN webmail_users u ON u.address = s.address"
        " WHERE s.id_hash=?", (_hash_id(session_id),)).fetchone()
    if row is None or row["revoked"] or row["disabled"] or now >= row["expires_at"] \
            or now - row["last_seen"] > idle:
        return None
    return dict(row)


def touch_session(conn: sqlite3.Connection, session_id: str, now: float | None = None) -> None:
    """Record use of the session now (for the idle timeout)."""
    now = time.time() if now is None else now
    conn.execute("UPDATE webmail_sessions SET last_seen=? WHERE id_hash=?", (now, _hash_id(session_id)))


def revoke_session(conn: sqlite3.Connection, session_id: str) -> bool:
    return conn.execute("UPDATE webmail_sessions SET revoked=1 WHERE id_hash=? AND revoked=0",
                        (_hash_id(session_id),)).rowcount == 1


def revoke_all_sessions(conn: sqlite3.Connection, address: str) -> int:
    """Revoke every session of ``address`` (password change, disable); returns how many."""
    return conn.execute("UPDATE webmail_sessions SET revoked=1 WHERE address=? AND revoked=0",
                        (address,)).rowcount


# -- audit --------------------------------------------------------------------------------------
def audit(conn: sqlite3.Connection, action: str, *, address: str = "", actor: str = "",
          result: str = "ok", client: str = "", user_agent: str = "", detail: str = "",
          now: float | None = None) -> int:
    """Append one audit row; returns its id."""
    now = time.time() if now is None else now
    return conn.execute(
        "INSERT INTO webmail_audit (at, address, actor, action, result, client, user_agent, detail)"
        " VALUES (?,?,?,?,?,?,?,?)",
        (now, address, actor, action, result, client[:200], user_agent[:500], detail[:2000])).lastrowid


def list_audit(conn: sqlite3.Connection, address: str | None = None, limit: int = 200) -> list[dict]:
    """Newest first; only ``address``'s rows if given."""
    if address is None:
        rows = conn.execute("SELECT * FROM webmail_audit ORDER BY id DESC LIMIT ?", (limit,))
    else:
        rows = conn.execute("SELECT * FROM webmail_audit WHERE address=? ORDER BY id DESC LIMIT ?",
                            (address, limit))
    return [dict(r) for r in rows]
