"""The account verbs of the SQLite spool (a mixin of spool.store.Spool): webmail users, sessions,
one-time login secrets, the webmail audit log and admin accounts, as async wrappers over
spool.accounts, spool.admins and spool.account_ops run by the spool's writer thread (writes, one
transaction each) or its readers (reads). spool.pg.accounts.PgAccountVerbs has the same verbs on
PostgreSQL.

Rows are dicts of the table's columns (webmail_users, webmail_sessions, webmail_tokens,
webmail_audit, admin_users); flags (disabled, revoked, mfa) are 0/1 here, booleans on PostgreSQL:
test them for truth. Addresses are mailbox keys; admin names are case-folded. Session ids, links
and codes are stored only as SHA-256. Times are unix seconds (this node's clock here; the
database's clock on PostgreSQL). Errors: SpoolError (spool.store) when the storage fails;
ValueError for an unknown field or kind (nothing written).
"""
from __future__ import annotations

from spool import account_ops as _ops
from spool import accounts as _a
from spool import admins as _adm
from spool import db as _db
from spool.account_ops import Actor


class AccountVerbs:
    """Account verbs over ``self.read`` / ``self.write`` (spool.store.Spool)."""

    # -- users ----------------------------------------------------------------------------------
    async def get_user(self, address: str) -> dict | None:
        """The account of ``address`` (columns of webmail_users), or None."""
        return await self.read(_a.get_user, address)

    async def ensure_user(self, address: str) -> dict:
        """The account of ``address``, created (no password, enabled) if missing."""
        return await self.write(_a.ensure_user, address)

    async def update_user(self, address: str, **fields) -> bool:
        """Set ``fields`` (password_hash, totp_secret, disabled, alt_email, phone,
        password_changed_at, totp_last_step) on the account, created if missing; True.
        ValueError for another field."""
        return await self.write(lambda c: _a.update_user(c, address, **fields))

    async def list_users(self) -> list[dict]:
        """Every account, by address."""
        return await self.read(_a.list_users)

    # -- sessions -------------------------------------------------------------------------------
    async def create_session(self, address: str, *, lifetime: float, client: str = "",
                             user_agent: str = "", mfa: bool = False,
                             replacing: str | None = None) -> tuple[str, str]:
        """A new session of ``address`` (a user's mailbox key, or "admin:NAME") valid at most
        ``lifetime`` s, revoking session ``replacing`` (a cookie value) in the same transaction;
        (session id for the cookie, CSRF token). ``client`` is cut to 200, ``user_agent`` to
        500 characters."""
        return await self.write(lambda c: _ops.open_session(
            c, address, lifetime=lifetime, client=client, user_agent=user_agent, mfa=mfa,
            replacing=replacing))

    async def get_session(self, session_id: str, *, idle: float) -> dict | None:
        """The live session of cookie value ``session_id`` (columns of webmail_sessions and the
        account's ``disabled``, None without an account): not revoked, not expired, used within
        ``idle`` s, account not disabled. Otherwise None."""
        return await self.read(lambda c: _a.get_session(c, session_id, idle=idle))

    async def touch_session(self, session_id: str, now: float | None = None) -> None:
        """Record use of the session (last_seen = ``now``, default the clock)."""
        await self.write(_a.touch_session, session_id, now)

    async def revoke_session(self, session_id: str) -> bool:
        """Revoke the session of cookie value ``session_id``; False if none was live."""
        return await self.write(_a.revoke_session, session_id)

    async def revoke_all_sessions(self, address: str) -> int:
        """Revoke every session of ``address``; how many."""
        return await self.write(_a.revoke_all_sessions, address)

    # -- one-time secrets -----------------------------------------------------------------------
    async def issue_token(self, address: str, kind: str, *, ttl: float, detail: str = "") -> str:
        """A new single-use token of ``kind`` (spool.accounts.TOKEN_KINDS but "code") for
        ``address``, valid ``ttl`` s; the token (only its hash is stored). ValueError for
        another kind."""
        return await self.write(lambda c: _a.issue_token(c, address, kind, ttl=ttl, detail=detail))

    async def peek_token(self, token: str, kind: str) -> dict | None:
        """The live (unused, unexpired) row of ``token`` of ``kind`` (id, address, kind,
        created_at, expires_at, used_at, tries, detail), or None. Read-only."""
        return await self.read(lambda c: _a.peek_token(c, token, kind))

    async def use_token(self, token: str, kind: str) -> dict | None:
        """Use up the live ``token`` of ``kind``: its row as it was, or None (missing, used,
        expired). Single use under concurrent calls."""
        return await self.write(lambda c: _a.use_token(c, token, kind))

    async def count_token_try(self, token: str, kind: str, *, max_tries: int) -> int:
        """Count a wrong try against live ``token``; spent at ``max_tries``. The tries so far,
        0 if the token is not live."""
        return await self.write(lambda c: _a.count_token_try(c, token, kind, max_tries=max_tries))

    async def revoke_tokens(self, address: str) -> int:
        """Spend every live code, link and pending login of ``address``; how many."""
        return await self.write(_a.revoke_tokens, address)

    async def issue_code(self, address: str, code: str, *, ttl: float) -> int:
        """Store login ``code`` for ``address`` (its account created if missing) valid ``ttl``
        s, spending any earlier live code of the account; the row id."""
        def tx(c):
            _a.ensure_user(c, address)
            return _a.issue_code(c, address, code, ttl=ttl)
        return await self.write(tx)

    async def use_code(self, address: str, code: str, *, max_tries: int) -> str:
        """Check ``code`` against the live code of ``address``, using it up if it matches:
        "ok", "wrong" (a try counted; spent at ``max_tries``), "expired" or "none"."""
        return await self.write(lambda c: _a.use_code(c, address, code, max_tries=max_tries))

    # -- logins in one transaction --------------------------------------------------------------
    async def enrol_user(self, token: str, *, password_hash: str) -> bool:
        """Use up enrolment link ``token``, set its account's password, revoke its sessions;
        False (nothing changed) if the link is not live."""
        return await self.write(_ops.enrol_user, token, password_hash)

    async def accept_totp_login(self, token: str, step: int) -> bool:
        """Use up pending login ``token`` (kind mfa), recording TOTP ``step`` as its account's
        last; False (nothing changed) if the token is not live."""
        return await self.write(_ops.accept_totp_login, token, step)

    async def change_password(self, address: str, *, password_hash: str,
                              keep_session_id: str) -> int:
        """Set the password of ``address`` and revoke its sessions but ``keep_session_id``;
        how many were revoked."""
        return await self.write(_ops.change_password, address, password_hash, keep_session_id)

    # -- admins' changes to users (each with its audit row) -------------------------------------
    async def set_user_disabled(self, address: str, disabled: bool, *, by: Actor) -> int:
        """Disable ``address`` (revoking its sessions and live tokens) or enable it, audited
        user_disabled / user_enabled by ``by``; the sessions revoked."""
        return await self.write(_ops.set_user_disabled, address, disabled, by)

    async def set_user_password(self, address: str, password_hash: str, *, by: Actor,
                                action: str = "password_set") -> int:
        """Set (``""``: clear) the password of ``address``, revoke all its sessions, audited as
        ``action``; the sessions revoked."""
        return await self.write(_ops.set_user_password, address, password_hash, by, action)

    async def issue_user_link(self, address: str, kind: str, *, ttl: float, by: Actor) -> str | None:
        """A login ("link") or enrolment ("enrol") link token for ``address`` valid ``ttl`` s,
        audited; None if the account is disabled. ValueError for another kind."""
        return await self.write(_ops.issue_user_link, address, kind, ttl, by)

    async def reset_user_totp(self, address: str, *, by: Actor) -> None:
        """Turn two-step login off for ``address``, audited as totp_reset."""
        await self.write(_ops.reset_user_totp, address, by)

    async def set_contacts(self, changes: list[tuple[str, dict]], *, by: Actor) -> int:
        """Set alt_email / phone of several accounts in one transaction, each audited; how
        many. ValueError (nothing written) for another field."""
        return await self.write(_ops.set_contacts, changes, by)

    # -- audit ----------------------------------------------------------------------------------
    async def append_audit(self, action: str, *, address: str = "", actor: str = "",
                           result: str = "ok", client: str = "", user_agent: str = "",
                           detail: str = "") -> int:
        """Append one row to the append-only webmail_audit (client cut to 200, user_agent to
        500, detail to 2000 characters); its id (ids grow)."""
        return await self.write(lambda c: _a.audit(c, action, address=address, actor=actor,
                                                   result=result, client=client,
                                                   user_agent=user_agent, detail=detail))

    async def list_audit(self, address: str | None = None, limit: int = 200) -> list[dict]:
        """The newest ``limit`` audit rows (only ``address``'s if given), newest first."""
        return await self.read(_a.list_audit, address, limit)

    # -- admin accounts -------------------------------------------------------------------------
    async def get_admin(self, name: str) -> dict | None:
        """Admin ``name`` (case-folded; columns of admin_users), or None."""
        return await self.read(_adm.get_admin, name)

    async def ensure_admin(self, name: str) -> dict:
        """Admin ``name``, created (not enrolled) if missing."""
        return await self.write(_adm.ensure_admin, name)

    async def update_admin(self, name: str, **fields) -> bool:
        """Set ``fields`` (spool.admins.FIELDS) on admin ``name``; False if there is none.
        ValueError for another field."""
        return await self.write(lambda c: _adm.update_admin(c, name, **fields))

    async def list_admins(self) -> list[dict]:
        """Every admin, by name."""
        return await self.read(_adm.list_admins)

    async def accept_admin_totp(self, token: str, step: int) -> bool:
        """Use up pending admin login ``token`` (admin_mfa) and record TOTP ``step`` for its
        admin if later than the last; False if the token is not live (nothing changed) or the
        step is not later (the token is spent)."""
        return await self.write(_ops.accept_admin_totp, token, step)

    async def enrol_admin(self, token: str, *, password_hash: str, totp_secret: str) -> bool:
        """Use up admin enrolment link ``token``, set its admin's password and TOTP secret,
        revoke its sessions; False (nothing changed) if the link is not live."""
        return await self.write(_ops.enrol_admin, token, password_hash, totp_secret)

    async def admin_enrol_link(self, name: str, *, reset: bool, ttl: float,
                               by: Actor) -> str | None:
        """An enrolment link token for admin ``name`` (spool.account_ops.admin_enrol_link):
        "" if already enrolled (``reset=False``), None if missing (``reset=True``)."""
        return await self.write(lambda c: _ops.admin_enrol_link(c, name, reset=reset, ttl=ttl,
                                                                by=by))

    async def set_admin_disabled(self, name: str, disabled: bool, *, by: Actor) -> int | None:
        """Disable (revoking sessions and tokens) or enable admin ``name``, audited; the
        sessions revoked, or None if there is no such admin."""
        return await self.write(_ops.set_admin_disabled, name, disabled, by)

    async def set_admin_password(self, name: str, password_hash: str, *, by: Actor) -> int | None:
        """Set admin ``name``'s password, revoke its sessions, audited; the sessions revoked,
        or None if there is no such admin."""
        return await self.write(_ops.set_admin_password, name, password_hash, by)

    # -- server secrets ---------------------------------------------------------------------------
    async def shared_secret(self, name: str) -> bytes:
        """The 32-byte secret ``name`` of this storage (random, made on first use, then the same
        for every process and node): e.g. "webmail-pre", the key of the pre-login form tokens."""
        return await self.write(_a.shared_secret, name)


class ConnectionAccounts(AccountVerbs):
    """The account verbs on one SQLite connection of the calling thread (the CLI: no writer
    thread; WAL lets it share the file with a running gateway): each write in a BEGIN IMMEDIATE
    transaction of its own (spool.db.transaction), each read on the connection as it is."""

    def __init__(self, conn):
        self.conn = conn

    async def read(self, fn, *args):
        return fn(self.conn, *args)

    async def write(self, fn, *args):
        return _db.transaction(self.conn, lambda: fn(self.conn, *args))


__all__ = ["AccountVerbs", "Actor", "ConnectionAccounts"]
