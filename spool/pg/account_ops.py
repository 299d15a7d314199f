"""The multi-step account changes on the PostgreSQL spool (spool.account_ops on SQLite), each
run in one transaction by PgAccountVerbs: a login replacing a session, an enrolment link used
with the password it sets, a second factor accepted with its TOTP step, an admin's change to a
user with its webmail_audit row. Single-use steps are guarded UPDATEs (spool.pg.account_rows),
so two gateways racing on one link or code cannot both pass. Times: the database's clock.
"""
from __future__ import annotations

from psycopg import AsyncConnection

from spool import admins
from spool.account_ops import Actor
from spool.pg import account_rows as r
from spool.pg.account_rows import NOW


async def _audit(conn, node: str, by: Actor, action: str, address: str, detail: str = "") -> None:
    await r.audit(conn, node, action, address=address, actor=by.name, client=by.client,
                  user_agent=by.user_agent, detail=detail)


async def enrol_user(conn: AsyncConnection, token: str, password_hash: str) -> bool:
    row = await r.use_token(conn, token, "enrol")
    if row is None:
        return False
    await _set_password(conn, row["address"], password_hash)
    await r.revoke_all_sessions(conn, row["address"])
    return True


async def accept_totp_login(conn: AsyncConnection, token: str, step: int) -> bool:
    row = await r.use_token(conn, token, "mfa")
    if row is None:
        return False
    await r.update_user(conn, row["address"], totp_last_step=step)
    return True


async def change_password(conn: AsyncConnection, address: str, password_hash: str,
                          keep_session_id: str) -> int:
    await _set_password(conn, address, password_hash)
    return await r.revoke_other_sessions(conn, address, keep_session_id)


async def _set_password(conn, address: str, password_hash: str) -> None:
    await r.ensure_user(conn, address)
    await conn.execute(f"UPDATE webmail_users SET password_hash=%s, password_changed_at={NOW}"
                       " WHERE address=%s", (password_hash, address))


async def set_user_disabled(conn: AsyncConnection, node: str, address: str, disabled: bool,
                            by: Actor) -> int:
    await r.update_user(conn, address, disabled=disabled)
    revoked = await r.revoke_all_sessions(conn, address) if disabled else 0
    if disabled:
        await r.revoke_tokens(conn, address)
    await _audit(conn, node, by, "user_disabled" if disabled else "user_enabled", address,
                 f"sessions_revoked={revoked}" if disabled else "")
    return revoked


async def set_user_password(conn: AsyncConnection, node: str, address: str, password_hash: str,
                            by: Actor, action: str) -> int:
    await _set_password(conn, address, password_hash)
    revoked = await r.revoke_all_sessions(conn, address)
    await _audit(conn, node, by, action, address, f"by admin; sessions_revoked={revoked}")
    return revoked


async def issue_user_link(conn: AsyncConnection, node: str, address: str, kind: str, ttl: float,
                          by: Actor) -> str | None:
    if kind not in ("link", "enrol"):
        raise ValueError(f"not a user link kind: {kind!r}")
    if (await r.ensure_user(conn, address))["disabled"]:
        return None
    token = await r.issue_token(conn, address, kind, ttl=ttl)
    await _audit(conn, node, by, "enrol_link_issued" if kind == "enrol" else "login_link_issued",
                 address, f"ttl={ttl:.0f}")
    return token


async def reset_user_totp(conn: AsyncConnection, node: str, address: str, by: Actor) -> None:
    await r.update_user(conn, address, totp_secret="", totp_last_step=0)
    await _audit(conn, node, by, "totp_reset", address, "by admin")


async def set_contacts(conn: AsyncConnection, node: str, changes: list[tuple[str, dict]],
                       by: Actor) -> int:
    for _address, fields in changes:
        if set(fields) - {"alt_email", "phone"}:
            raise ValueError(f"not a contact field: {sorted(set(fields) - {'alt_email', 'phone'})}")
    for address, fields in changes:
        await r.update_user(conn, address, **fields)
        await _audit(conn, node, by, "contacts_set", address,
                     " ".join(f"{k}={v}" for k, v in fields.items()))
    return len(changes)


async def accept_admin_totp(conn: AsyncConnection, token: str, step: int) -> bool:
    row = await r.use_token(conn, token, "admin_mfa")
    name = admins.name_of(row["address"]) if row is not None else None
    if name is None:
        return False
    cur = await conn.execute("UPDATE admin_users SET totp_last_step=%s WHERE name=%s"
                             " AND totp_last_step<%s", (step, name, step))
    return cur.rowcount == 1


async def _admin_password(conn, name: str, password_hash: str) -> bool:
    cur = await conn.execute(f"UPDATE admin_users SET password_hash=%s, password_changed_at={NOW}"
                             " WHERE name=%s", (password_hash, name.casefold()))
    return cur.rowcount > 0


async def enrol_admin(conn: AsyncConnection, token: str, password_hash: str,
                      totp_secret: str) -> bool:
    row = await r.use_token(conn, token, "admin_enrol")
    name = admins.name_of(row["address"]) if row is not None else None
    if name is None:
        return False
    await r.update_admin(conn, name, totp_secret=totp_secret, totp_last_step=0)
    await _admin_password(conn, name, password_hash)
    await r.revoke_all_sessions(conn, admins.session_address(name))
    return True


async def admin_enrol_link(conn: AsyncConnection, node: str, name: str, *, reset: bool,
                           ttl: float, by: Actor) -> str | None:
    existing = await conn.execute("SELECT password_hash FROM admin_users WHERE name=%s FOR UPDATE",
                                  (name.casefold(),))
    existing = await existing.fetchone()
    if reset and existing is None:
        return None
    if not reset and existing is not None and existing[0]:
        return ""
    await r.ensure_admin(conn, name)
    address = admins.session_address(name)
    if reset:
        await r.update_admin(conn, name, totp_secret="", totp_last_step=0, password_hash="")
        await r.revoke_all_sessions(conn, address)
        await r.revoke_tokens(conn, address)
    token = await r.issue_token(conn, address, "admin_enrol", ttl=ttl)
    await _audit(conn, node, by, "admin_totp_reset" if reset else "admin_added", address,
                 f"enrolment link ttl={ttl:.0f}")
    return token


async def set_admin_disabled(conn: AsyncConnection, node: str, name: str, disabled: bool,
                             by: Actor) -> int | None:
    if not await r.update_admin(conn, name, disabled=disabled):
        return None
    address = admins.session_address(name)
    revoked = 0
    if disabled:
        revoked = await r.revoke_all_sessions(conn, address)
        await r.revoke_tokens(conn, address)
    await _audit(conn, node, by, "admin_disabled" if disabled else "admin_enabled", address,
                 f"sessions_revoked={revoked}" if disabled else "")
    return revoked


async def set_admin_password(conn: AsyncConnection, node: str, name: str, password_hash: str,
                             by: Actor) -> int | None:
    if not await _admin_password(conn, name, password_hash):
        return None
    address = admins.session_address(name)
    revoked = await r.revoke_all_sessions(conn, address)
    await _audit(conn, node, by, "admin_password_set", address, f"sessions_revoked={revoked}")
    return revoked
