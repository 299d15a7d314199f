"""Webmail accounts on the PostgreSQL spool: users, sessions, one-time login secrets, the webmail
audit log, admin accounts (migration 0005) and the webmail's server secrets (0008); the SQL of
spool.accounts and spool.admins.

Several gateways share these rows, so every "now" (created_at, last_seen, expires_at, used_at,
an audit row's at) is the database's clock, and each single-use step is one guarded UPDATE
(a code, link or pending login is used at most once across the cluster). Flags are booleans.
Functions take an AsyncConnection; the verbs (spool.pg.accounts.PgAccountVerbs) run them
through PgSpool's ``read`` / ``transaction``; the multi-step changes are spool.pg.account_ops. Errors: SpoolError (spool.store) when the
database is unreachable.
"""
from __future__ import annotations

import hmac
import secrets

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from spool.accounts import TOKEN_KINDS, _hash_id, code_hash, token_hash
from spool.admins import FIELDS as ADMIN_FIELDS

NOW = "extract(epoch FROM clock_timestamp())::float8"
USER_FIELDS = frozenset({"password_hash", "totp_secret", "disabled", "alt_email", "phone",
                         "password_changed_at", "totp_last_step"})
_BOOLEAN = frozenset({"disabled"})


async def _one(conn: AsyncConnection, sql: str, args=()) -> dict | None:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, args)
        return await cur.fetchone()


async def _all(conn: AsyncConnection, sql: str, args=()) -> list[dict]:
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, args)
        return await cur.fetchall()


async def _now(conn: AsyncConnection) -> float:
    cur = await conn.execute(f"SELECT {NOW}")
    return (await cur.fetchone())[0]


def _set_clause(fields: dict) -> tuple[str, list]:
    cols = ", ".join(f"{k}=%s" for k in fields)
    return cols, [bool(v) if k in _BOOLEAN else v for k, v in fields.items()]


# -- users --------------------------------------------------------------------------------------
async def get_user(conn: AsyncConnection, address: str) -> dict | None:
    return await _one(conn, "SELECT * FROM webmail_users WHERE address=%s", (address,))


async def ensure_user(conn: AsyncConnection, address: str) -> dict:
    await conn.execute(f"INSERT INTO webmail_users (address, created_at) VALUES (%s, {NOW})"
                       " ON CONFLICT (address) DO NOTHING", (address,))
    return await get_user(conn, address)


async def update_user(conn: AsyncConnection, address: str, **fields) -> bool:
    bad = set(fields) - USER_FIELDS
    if bad:
        raise ValueError(f"unknown account fields: {sorted(bad)}")
    await ensure_user(conn, address)
    if fields:
        cols, values = _set_clause(fields)
        await conn.execute(f"UPDATE webmail_users SET {cols} WHERE address=%s", (*values, address))
    return True


async def list_users(conn: AsyncConnection) -> list[dict]:
    return await _all(conn, "SELECT * FROM webmail_users ORDER BY address")


# -- sessions -----------------------------------------------------------------------------------
async def create_session(conn: AsyncConnection, address: str, *, lifetime: float, client: str = "",
                         user_agent: str = "", mfa: bool = False,
                         replacing: str | None = None) -> tuple[str, str]:
    if replacing is not None:
        await revoke_session(conn, replacing)
    sid, csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO webmail_sessions (id_hash, address, csrf_token, created_at, last_seen,"
        f" expires_at, client, user_agent, mfa) SELECT %s, %s, %s, n, n, n + %s, %s, %s, %s"
        f" FROM (SELECT {NOW} AS n) t",
        (_hash_id(sid), address, csrf, lifetime, client[:200], user_agent[:500], bool(mfa)))
    return sid, csrf


async def get_session(conn: AsyncConnection, session_id: str, *, idle: float) -> dict | None:
    return await _one(
        conn, "SELECT s.*, u.disabled FROM webmail_sessions s LEFT JOIN webmail_users u"
        f" ON u.address = s.address, (SELECT {NOW} AS n) t WHERE s.id_hash=%s AND NOT s.revoked"
        " AND NOT coalesce(u.disabled, false) AND t.n < s.expires_at AND t.n - s.last_seen <= %s",
        (_hash_id(session_id), idle))


async def touch_session(conn: AsyncConnection, session_id: str) -> None:
    await conn.execute(f"UPDATE webmail_sessions SET last_seen={NOW} WHERE id_hash=%s",
                       (_hash_id(session_id),))


async def revoke_session(conn: AsyncConnection, session_id: str) -> bool:
    cur = await conn.execute("UPDATE webmail_sessions SET revoked=true WHERE id_hash=%s"
                             " AND NOT revoked", (_hash_id(session_id),))
    return cur.rowcount == 1


async def revoke_all_sessions(conn: AsyncConnection, address: str) -> int:
    cur = await conn.execute("UPDATE webmail_sessions SET revoked=true WHERE address=%s"
                             " AND NOT revoked", (address,))
    return cur.rowcount


async def revoke_other_sessions(conn: AsyncConnection, address: str, keep_session_id: str) -> int:
    cur = await conn.execute("UPDATE webmail_sessions SET revoked=true WHERE address=%s"
                             " AND NOT revoked AND id_hash<>%s", (address, _hash_id(keep_session_id)))
    return cur.rowcount


# -- one-time secrets ---------------------------------------------------------------------------
_TOKEN_COLS = "id, token_hash, address, kind, created_at, expires_at, tries, detail"


async def _purge_tokens(conn: AsyncConnection) -> None:
    await conn.execute(f"DELETE FROM webmail_tokens WHERE expires_at < {NOW} - 86400.0")


async def issue_code(conn: AsyncConnection, address: str, code: str, *, ttl: float) -> int:
    """Ensures the account; spends any earlier live code of it (one live code per account)."""
    await ensure_user(conn, address)
    # the account row lock serialises two nodes issuing codes for one account
    await conn.execute("SELECT 1 FROM webmail_users WHERE address=%s FOR UPDATE", (address,))
    await _purge_tokens(conn)
    await conn.execute(f"UPDATE webmail_tokens SET used_at={NOW} WHERE address=%s AND kind='code'"
                       " AND used_at=0", (address,))
    cur = await conn.execute(
        "INSERT INTO webmail_tokens (token_hash, address, kind, created_at, expires_at)"
        f" SELECT %s, %s, 'code', n, n + %s FROM (SELECT {NOW} AS n) t RETURNING id",
        (code_hash(address, code), address, ttl))
    return (await cur.fetchone())[0]


async def use_code(conn: AsyncConnection, address: str, code: str, *, max_tries: int) -> str:
    row = await _one(conn, f"SELECT id, token_hash, expires_at, tries, {NOW} AS now"
                     " FROM webmail_tokens WHERE address=%s AND kind='code' AND used_at=0"
                     " ORDER BY id DESC LIMIT 1 FOR UPDATE", (address,))
    if row is None:
        return "none"
    now = row["now"]
    if now >= row["expires_at"]:
        await conn.execute("UPDATE webmail_tokens SET used_at=%s WHERE id=%s", (now, row["id"]))
        return "expired"
    if hmac.compare_digest(row["token_hash"], code_hash(address, code)):
        await conn.execute("UPDATE webmail_tokens SET used_at=%s WHERE id=%s", (now, row["id"]))
        return "ok"
    tries = row["tries"] + 1
    await conn.execute("UPDATE webmail_tokens SET tries=%s, used_at=%s WHERE id=%s",
                       (tries, now if tries >= max_tries else 0, row["id"]))
    return "wrong"


async def issue_token(conn: AsyncConnection, address: str, kind: str, *, ttl: float,
                      detail: str = "") -> str:
    if kind not in TOKEN_KINDS or kind == "code":
        raise ValueError(f"not a token kind: {kind!r}")
    await _purge_tokens(conn)
    token = secrets.token_urlsafe(32)
    await conn.execute(
        "INSERT INTO webmail_tokens (token_hash, address, kind, created_at, expires_at, detail)"
        f" SELECT %s, %s, %s, n, n + %s, %s FROM (SELECT {NOW} AS n) t",
        (token_hash(token), address, kind, ttl, detail))
    return token


async def peek_token(conn: AsyncConnection, token: str, kind: str) -> dict | None:
    return await _one(conn, f"SELECT {_TOKEN_COLS}, used_at FROM webmail_tokens WHERE token_hash=%s"
                      f" AND kind=%s AND used_at=0 AND expires_at > {NOW} ORDER BY id LIMIT 1",
                      (token_hash(token), kind))


async def use_token(conn: AsyncConnection, token: str, kind: str) -> dict | None:
    """The row as it was (used_at 0), or None; one guarded UPDATE (single use cluster-wide)."""
    return await _one(
        conn, f"UPDATE webmail_tokens SET used_at={NOW} WHERE id = (SELECT id FROM webmail_tokens"
        f" WHERE token_hash=%s AND kind=%s AND used_at=0 AND expires_at > {NOW} ORDER BY id LIMIT 1)"
        f" AND used_at=0 RETURNING {_TOKEN_COLS}, 0::float8 AS used_at", (token_hash(token), kind))


async def count_token_try(conn: AsyncConnection, token: str, kind: str, *, max_tries: int) -> int:
    row = await _one(
        conn, f"UPDATE webmail_tokens SET tries = tries + 1, used_at = CASE WHEN tries + 1 >= %s"
        f" THEN {NOW} ELSE 0 END WHERE id = (SELECT id FROM webmail_tokens WHERE token_hash=%s"
        f" AND kind=%s AND used_at=0 AND expires_at > {NOW} ORDER BY id LIMIT 1) AND used_at=0"
        " RETURNING tries", (max_tries, token_hash(token), kind))
    return row["tries"] if row else 0


async def revoke_tokens(conn: AsyncConnection, address: str) -> int:
    cur = await conn.execute(f"UPDATE webmail_tokens SET used_at={NOW} WHERE address=%s"
                             " AND used_at=0", (address,))
    return cur.rowcount


# -- audit --------------------------------------------------------------------------------------
async def audit(conn: AsyncConnection, node: str, action: str, *, address: str = "",
                actor: str = "", result: str = "ok", client: str = "", user_agent: str = "",
                detail: str = "") -> int:
    cur = await conn.execute(
        "INSERT INTO webmail_audit (at, address, actor, action, result, client, user_agent,"
        f" detail, node) VALUES ({NOW},%s,%s,%s,%s,%s,%s,%s,%s) RETURNING id",
        (address, actor, action, result, client[:200], user_agent[:500], detail[:2000], node))
    return (await cur.fetchone())[0]


async def list_audit(conn: AsyncConnection, address: str | None = None,
                     limit: int = 200) -> list[dict]:
    if address is None:
        return await _all(conn, "SELECT * FROM webmail_audit ORDER BY id DESC LIMIT %s", (limit,))
    return await _all(conn, "SELECT * FROM webmail_audit WHERE address=%s ORDER BY id DESC"
                      " LIMIT %s", (address, limit))


# -- admin accounts -----------------------------------------------------------------------------
async def get_admin(conn: AsyncConnection, name: str) -> dict | None:
    return await _one(conn, "SELECT * FROM admin_users WHERE name=%s", (name.casefold(),))


async def ensure_admin(conn: AsyncConnection, name: str) -> dict:
    await conn.execute(f"INSERT INTO admin_users (name, created_at) VALUES (%s, {NOW})"
                       " ON CONFLICT (name) DO NOTHING", (name.casefold(),))
    return await get_admin(conn, name)


async def update_admin(conn: AsyncConnection, name: str, **fields) -> bool:
    bad = set(fields) - set(ADMIN_FIELDS)
    if bad:
        raise ValueError(f"unknown admin_users fields: {sorted(bad)}")
    if not fields:
        return await get_admin(conn, name) is not None
    cols, values = _set_clause(fields)
    cur = await conn.execute(f"UPDATE admin_users SET {cols} WHERE name=%s",
                             (*values, name.casefold()))
    return cur.rowcount > 0


async def list_admins(conn: AsyncConnection) -> list[dict]:
    return await _all(conn, "SELECT * FROM admin_users ORDER BY name")


async def shared_secret(conn: AsyncConnection, name: str) -> bytes:
    """spool.accounts.shared_secret: the first node's random bytes win (ON CONFLICT DO NOTHING,
    then read back: two nodes asking at once get the same value)."""
    await conn.execute(f"INSERT INTO webmail_secrets (name, value, created_at) VALUES (%s, %s, {NOW})"
                       " ON CONFLICT (name) DO NOTHING", (name, secrets.token_bytes(32)))
    cur = await conn.execute("SELECT value FROM webmail_secrets WHERE name=%s", (name,))
    return bytes((await cur.fetchone())[0])


__all__ = ["NOW", "shared_secret", "get_user", "ensure_user", "update_user", "list_users", "create_session",
           "get_session", "touch_session", "revoke_session", "revoke_all_sessions",
           "revoke_other_sessions", "issue_code", "use_code", "issue_token", "peek_token",
           "use_token", "count_token_try", "revoke_tokens", "audit", "list_audit", "get_admin",
           "ensure_admin", "update_admin", "list_admins"]
