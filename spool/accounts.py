"""Webmail accounts, server-side sessions, one-time login secrets and the append-only audit log
(migrations 0005 and 0006), and the webmail's server secrets (0015).

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
                          "password_changed_at", "totp_last_step"})


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


def revoke_other_sessions(conn: sqlite3.Connection, address: str, keep_session_id: str) -> int:
    """Revoke every session of ``address`` but the one of cookie value ``keep_session_id`` (a
    password change from that session); returns how many."""
    return conn.execute("UPDATE webmail_sessions SET revoked=1 WHERE address=? AND revoked=0"
                        " AND id_hash<>?", (address, _hash_id(keep_session_id))).rowcount


# -- one-time secrets (migration 0006) ----------------------------------------------------------
#: kinds of webmail_tokens rows: a login code (sent to an alternate address or phone), an
#: admin-issued login link, an enrolment link (sets a password), a pending second factor; and
#: the admin console's: an admin's enrolment link, an admin's pending second factor, the
#: decision link carried by an alert (webmail.admin).
TOKEN_KINDS = frozenset({"code", "link", "enrol", "mfa", "admin_enrol", "admin_mfa", "admin_alert"})


def code_hash(address: str, code: str) -> str:
    """The stored form of a login code: hex SHA-256 of ``address`` NUL ``code``."""
    return hashlib.sha256(f"{address}\0{code}".encode()).hexdigest()


def token_hash(token: str) -> str:
    """The stored form of a link or pending-login token: hex SHA-256."""
    return hashlib.sha256(token.encode()).hexdigest()


def _purge_tokens(conn: sqlite3.Connection, now: float) -> None:
    conn.execute("DELETE FROM webmail_tokens WHERE expires_at < ?", (now - 86400.0,))


def issue_code(conn: sqlite3.Connection, address: str, code: str, *, ttl: float,
               now: float | None = None) -> int:
    """Store a new login code for ``address`` valid ``ttl`` seconds; any earlier live code of
    the account is spent (one live code per account). Returns the row id."""
    now = time.time() if now is None else now
    _purge_tokens(conn, now)
    conn.execute("UPDATE webmail_tokens SET used_at=? WHERE address=? AND kind='code' AND used_at=0",
                 (now, address))
    return conn.execute(
        "INSERT INTO webmail_tokens (token_hash, address, kind, created_at, expires_at)"
        " VALUES (?,?,?,?,?)", (code_hash(address, code), address, "code", now, now + ttl)).lastrowid


def use_code(conn: sqlite3.Connection, address: str, code: str, *, max_tries: int,
             now: float | None = None) -> str:
    """Check ``code`` against the live code of ``address`` and, if it matches, use it up.
    Returns "ok", "wrong" (a try counted; the code is spent at ``max_tries`` wrong tries),
    "expired" or "none" (no live code). A write: run it in a write transaction."""
    import hmac
    now = time.time() if now is None else now
    row = conn.execute("SELECT * FROM webmail_tokens WHERE address=? AND kind='code' AND used_at=0"
                       " ORDER BY id DESC LIMIT 1", (address,)).fetchone()
    if row is None:
        return "none"
    if now >= row["expires_at"]:
        conn.execute("UPDATE webmail_tokens SET used_at=? WHERE id=?", (now, row["id"]))
        return "expired"
    if hmac.compare_digest(row["token_hash"], code_hash(address, code)):
        conn.execute("UPDATE webmail_tokens SET used_at=? WHERE id=? AND used_at=0", (now, row["id"]))
        return "ok"
    tries = row["tries"] + 1
    conn.execute("UPDATE webmail_tokens SET tries=?, used_at=? WHERE id=?",
                 (tries, now if tries >= max_tries else 0, row["id"]))
    return "wrong"


def issue_token(conn: sqlite3.Connection, address: str, kind: str, *, ttl: float, detail: str = "",
                now: float | None = None) -> str:
    """A new random single-use token of ``kind`` (link, enrol, mfa) for ``address``, valid
    ``ttl`` seconds; returns the token (shown once, only its hash is stored)."""
    if kind not in TOKEN_KINDS or kind == "code":
        raise ValueError(f"not a token kind: {kind!r}")
    now = time.time() if now is None else now
    _purge_tokens(conn, now)
    token = secrets.token_urlsafe(32)
    conn.execute(
        "INSERT INTO webmail_tokens (token_hash, address, kind, created_at, expires_at, detail)"
        " VALUES (?,?,?,?,?,?)", (token_hash(token), address, kind, now, now + ttl, detail))
    return token


def peek_token(conn: sqlite3.Connection, token: str, kind: str,
               now: float | None = None) -> dict | None:
    """The live (unused, unexpired) row of ``token`` of ``kind``, or None. Read-only."""
    now = time.time() if now is None else now
    row = conn.execute("SELECT * FROM webmail_tokens WHERE token_hash=? AND kind=?",
                       (token_hash(token), kind)).fetchone()
    if row is None or row["used_at"] or now >= row["expires_at"]:
        return None
    return dict(row)


def use_token(conn: sqlite3.Connection, token: str, kind: str, now: float | None = None) -> dict | None:
    """Use up the live ``token`` of ``kind``: returns its row (as it was), or None if it does not
    exist, was used, or expired. Single use even under concurrent calls (guarded UPDATE)."""
    now = time.time() if now is None else now
    row = peek_token(conn, token, kind, now)
    if row is None:
        return None
    done = conn.execute("UPDATE webmail_tokens SET used_at=? WHERE id=? AND used_at=0",
                        (now, row["id"])).rowcount
    return row if done == 1 else None


def count_token_try(conn: sqlite3.Connection, token: str, kind: str, *, max_tries: int,
                    now: float | None = None) -> int:
    """Count a wrong try against ``token`` (a pending second factor); it is spent at
    ``max_tries``. Returns the tries so far (0 if the token is not live)."""
    now = time.time() if now is None else now
    row = peek_token(conn, token, kind, now)
    if row is None:
        return 0
    tries = row["tries"] + 1
    conn.execute("UPDATE webmail_tokens SET tries=?, used_at=? WHERE id=?",
                 (tries, now if tries >= max_tries else 0, row["id"]))
    return tries


def revoke_tokens(conn: sqlite3.Connection, address: str) -> int:
    """Spend every live code, link and pending login of ``address`` (account disabled)."""
    return conn.execute("UPDATE webmail_tokens SET used_at=? WHERE address=? AND used_at=0",
                        (time.time(), address)).rowcount


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


# -- server secrets -----------------------------------------------------------------------------
def shared_secret(conn: sqlite3.Connection, name: str, now: float | None = None) -> bytes:
    """The 32-byte secret ``name`` (e.g. "webmail-pre"), made of random bytes on first use and
    the same from then on for every process on this spool (a write: the writer thread)."""
    now = time.time() if now is None else now
    conn.execute("INSERT OR IGNORE INTO webmail_secrets (name, value, created_at) VALUES (?,?,?)",
                 (name, secrets.token_bytes(32), now))
    return bytes(conn.execute("SELECT value FROM webmail_secrets WHERE name=?", (name,)).fetchone()[0])
