"""The account verbs of the PostgreSQL spool (a mixin of spool.pg.store.PgSpool): the same verbs
as spool.accounts_verbs.AccountVerbs (see there for shapes and errors), over the SQL of
spool.pg.account_rows and spool.pg.account_ops. Writes run in short transactions of their own
(``self.transaction``), reads on any pooled connection (``self.read``). Differences from SQLite:
every time written is the database's clock (``touch_session``'s ``now`` is ignored), flags are
booleans, and audit rows also carry ``node`` (the gateway that wrote them).
"""
from __future__ import annotations

from spool.account_ops import Actor
from spool.pg import account_ops as _ops
from spool.pg import account_rows as _r
from spool.pg.db import OneConnection


class PgAccountVerbs:
    """Account verbs over PgSpool's ``read`` / ``transaction``."""

    # -- users ----------------------------------------------------------------------------------
    async def get_user(self, address: str) -> dict | None:
        return await self.read(_r.get_user, address)

    async def ensure_user(self, address: str) -> dict:
        return await self.transaction(_r.ensure_user, address)

    async def update_user(self, address: str, **fields) -> bool:
        return await self.transaction(lambda c: _r.update_user(c, address, **fields))

    async def list_users(self) -> list[dict]:
        return await self.read(_r.list_users)

    # -- sessions -------------------------------------------------------------------------------
    async def create_session(self, address: str, *, lifetime: float, client: str = "",
                             user_agent: str = "", mfa: bool = False,
                             replacing: str | None = None) -> tuple[str, str]:
        return await self.transaction(lambda c: _r.create_session(
            c, address, lifetime=lifetime, client=client, user_agent=user_agent, mfa=mfa,
            replacing=replacing))

    async def get_session(self, session_id: str, *, idle: float) -> dict | None:
        return await self.read(lambda c: _r.get_session(c, session_id, idle=idle))

    async def touch_session(self, session_id: str, now: float | None = None) -> None:
        """last_seen = the database's clock (``now`` is ignored)."""
        await self.transaction(_r.touch_session, session_id)

    async def revoke_session(self, session_id: str) -> bool:
        return await self.transaction(_r.revoke_session, session_id)

    async def revoke_all_sessions(self, address: str) -> int:
        return await self.transaction(_r.revoke_all_sessions, address)

    # -- one-time secrets -----------------------------------------------------------------------
    async def issue_token(self, address: str, kind: str, *, ttl: float, detail: str = "") -> str:
        return await self.transaction(lambda c: _r.issue_token(c, address, kind, ttl=ttl,
                                                               detail=detail))

    async def peek_token(self, token: str, kind: str) -> dict | None:
        return await self.read(_r.peek_token, token, kind)

    async def use_token(self, token: str, kind: str) -> dict | None:
        return await self.transaction(_r.use_token, token, kind)

    async def count_token_try(self, token: str, kind: str, *, max_tries: int) -> int:
        return await self.transaction(lambda c: _r.count_token_try(c, token, kind,
                                                                   max_tries=max_tries))

    async def revoke_tokens(self, address: str) -> int:
        return await self.transaction(_r.revoke_tokens, address)

    async def issue_code(self, address: str, code: str, *, ttl: float) -> int:
        return await self.transaction(lambda c: _r.issue_code(c, address, code, ttl=ttl))

    async def use_code(self, address: str, code: str, *, max_tries: int) -> str:
        return await self.transaction(lambda c: _r.use_code(c, address, code, max_tries=max_tries))

    # -- logins in one transaction --------------------------------------------------------------
    async def enrol_user(self, token: str, *, password_hash: str) -> bool:
        return await self.transaction(_ops.enrol_user, token, password_hash)

    async def accept_totp_login(self, token: str, step: int) -> bool:
        return await self.transaction(_ops.accept_totp_login, token, step)

    async def change_password(self, address: str, *, password_hash: str,
                              keep_session_id: str) -> int:
        return await self.transaction(_ops.change_password, address, password_hash,
                                      keep_session_id)

    # -- admins' changes to users ---------------------------------------------------------------
    async def set_user_disabled(self, address: str, disabled: bool, *, by: Actor) -> int:
        return await self.transaction(_ops.set_user_disabled, self.node, address, disabled, by)

    async def set_user_password(self, address: str, password_hash: str, *, by: Actor,
                                action: str = "password_set") -> int:
        return await self.transaction(_ops.set_user_password, self.node, address, password_hash,
                                      by, action)

    async def issue_user_link(self, address: str, kind: str, *, ttl: float, by: Actor) -> str | None:
        return await self.transaction(_ops.issue_user_link, self.node, address, kind, ttl, by)

    async def reset_user_totp(self, address: str, *, by: Actor) -> None:
        await self.transaction(_ops.reset_user_totp, self.node, address, by)

    async def set_contacts(self, changes: list[tuple[str, dict]], *, by: Actor) -> int:
        return await self.transaction(_ops.set_contacts, self.node, changes, by)

    # -- audit ----------------------------------------------------------------------------------
    async def append_audit(self, action: str, *, address: str = "", actor: str = "",
                           result: str = "ok", client: str = "", user_agent: str = "",
                           detail: str = "") -> int:
        return await self.transaction(lambda c: _r.audit(
            c, self.node, action, address=address, actor=actor, result=result, client=client,
            user_agent=user_agent, detail=detail))

    async def list_audit(self, address: str | None = None, limit: int = 200) -> list[dict]:
        return await self.read(_r.list_audit, address, limit)

    # -- admin accounts -------------------------------------------------------------------------
    async def get_admin(self, name: str) -> dict | None:
        return await self.read(_r.get_admin, name)

    async def ensure_admin(self, name: str) -> dict:
        return await self.transaction(_r.ensure_admin, name)

    async def update_admin(self, name: str, **fields) -> bool:
        return await self.transaction(lambda c: _r.update_admin(c, name, **fields))

    async def list_admins(self) -> list[dict]:
        return await self.read(_r.list_admins)

    async def accept_admin_totp(self, token: str, step: int) -> bool:
        return await self.transaction(_ops.accept_admin_totp, token, step)

    async def enrol_admin(self, token: str, *, password_hash: str, totp_secret: str) -> bool:
        return await self.transaction(_ops.enrol_admin, token, password_hash, totp_secret)

    async def admin_enrol_link(self, name: str, *, reset: bool, ttl: float,
                               by: Actor) -> str | None:
        return await self.transaction(lambda c: _ops.admin_enrol_link(
            c, self.node, name, reset=reset, ttl=ttl, by=by))

    async def set_admin_disabled(self, name: str, disabled: bool, *, by: Actor) -> int | None:
        return await self.transaction(_ops.set_admin_disabled, self.node, name, disabled, by)

    async def set_admin_password(self, name: str, password_hash: str, *, by: Actor) -> int | None:
        return await self.transaction(_ops.set_admin_password, self.node, name, password_hash, by)

    # -- server secrets ---------------------------------------------------------------------------
    async def shared_secret(self, name: str) -> bytes:
        return await self.transaction(_r.shared_secret, name)


class PgConnectionAccounts(PgAccountVerbs, OneConnection):
    """The account verbs on one CLI connection (spool.pg.db.OneConnection)."""


__all__ = ["PgAccountVerbs", "PgConnectionAccounts"]
