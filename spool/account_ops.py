"""The multi-step account changes of the webmail, the admin console and `mailgate users|admins`,
each one SQLite transaction (run it with ``Spool.write`` or ``db.transaction``): a login that
replaces a session, an enrolment link used up with the password it sets, a second factor
accepted with its TOTP step, an admin's change to a user with its webmail_audit row.

spool.pg.account_ops has the same steps on PostgreSQL. Tables: webmail_users, webmail_sessions,
webmail_tokens, webmail_audit, admin_users (migrations 0005, 0006, 0010, 0013). Times are unix
seconds (wall clock). Writers of audit rows name who acted with an ``Actor``.
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from spool import accounts, admins


@dataclass(frozen=True)
class Actor:
    """Who makes a change, for its webmail_audit row: ``name`` (the user, "admin:NAME", "cli"),
    the client address and the user agent."""

    name: str
    client: str = ""
    user_agent: str = ""


def _audit(conn, by: Actor, action: str, address: str, detail: str = "") -> None:
    accounts.audit(conn, action, address=address, actor=by.name, client=by.client,
                   user_agent=by.user_agent, detail=detail)


# -- logins -------------------------------------------------------------------------------------
def open_session(conn: sqlite3.Connection, address: str, *, lifetime: float, client: str = "",
                 user_agent: str = "", mfa: bool = False,
                 replacing: str | None = None) -> tuple[str, str]:
    """A new session (accounts.create_session), revoking session ``replacing`` (a cookie value)
    first; returns (session id, CSRF token)."""
    if replacing is not None:
        accounts.revoke_session(conn, replacing)
    return accounts.create_session(conn, address, lifetime=lifetime, client=client,
                                   user_agent=user_agent, mfa=mfa)


def enrol_user(conn: sqlite3.Connection, token: str, password_hash: str) -> bool:
    """Use up enrolment link ``token``, set its account's password and revoke the account's
    sessions; False (nothing changed) if the link is not live."""
    row = accounts.use_token(conn, token, "enrol")
    if row is None:
        return False
    accounts.update_user(conn, row["address"], password_hash=password_hash,
                         password_changed_at=time.time())
    accounts.revoke_all_sessions(conn, row["address"])
    return True


def accept_totp_login(conn: sqlite3.Connection, token: str, step: int) -> bool:
    """Use up pending-login ``token`` (kind mfa) and record TOTP ``step`` as its account's last;
    False (nothing changed) if the token is not live."""
    row = accounts.use_token(conn, token, "mfa")
    if row is None:
        return False
    accounts.update_user(conn, row["address"], totp_last_step=step)
    return True


def change_password(conn: sqlite3.Connection, address: str, password_hash: str,
                    keep_session_id: str) -> int:
    """The user's own password change: set it, revoke their other sessions; how many."""
    accounts.update_user(conn, address, password_hash=password_hash,
                         password_changed_at=time.time())
    return accounts.revoke_other_sessions(conn, address, keep_session_id)


# -- an admin's changes to a user ---------------------------------------------------------------
def set_user_disabled(conn: sqlite3.Connection, address: str, disabled: bool, by: Actor) -> int:
    """Disable (revoking sessions and live tokens) or enable ``address`` (the account is created
    if missing), audited as user_disabled / user_enabled; the sessions revoked."""
    accounts.update_user(conn, address, disabled=int(disabled))
    revoked = accounts.revoke_all_sessions(conn, address) if disabled else 0
    if disabled:
        accounts.revoke_tokens(conn, address)
    _audit(conn, by, "user_disabled" if disabled else "user_enabled", address,
           f"sessions_revoked={revoked}" if disabled else "")
    return revoked


def set_user_password(conn: sqlite3.Connection, address: str, password_hash: str, by: Actor,
                      action: str = "password_set") -> int:
    """Set (``""``: clear) the password of ``address`` and revoke all its sessions, audited as
    ``action`` ("by admin; sessions_revoked=N"); the sessions revoked."""
    accounts.update_user(conn, address, password_hash=password_hash, password_changed_at=time.time())
    revoked = accounts.revoke_all_sessions(conn, address)
    _audit(conn, by, action, address, f"by admin; sessions_revoked={revoked}")
    return revoked


def issue_user_link(conn: sqlite3.Connection, address: str, kind: str, ttl: float,
                    by: Actor) -> str | None:
    """A login (``kind`` "link") or enrolment ("enrol") link token for ``address`` valid ``ttl``
    s (the account is created if missing), audited; None if the account is disabled."""
    if kind not in ("link", "enrol"):
        raise ValueError(f"not a user link kind: {kind!r}")
    if accounts.ensure_user(conn, address)["disabled"]:
        return None
    token = accounts.issue_token(conn, address, kind, ttl=ttl)
    _audit(conn, by, "enrol_link_issued" if kind == "enrol" else "login_link_issued", address,
           f"ttl={ttl:.0f}")
    return token


def reset_user_totp(conn: sqlite3.Connection, address: str, by: Actor) -> None:
    """Turn two-step login off for ``address``, audited as totp_reset."""
    accounts.update_user(conn, address, totp_secret="", totp_last_step=0)
    _audit(conn, by, "totp_reset", address, "by admin")


def set_contacts(conn: sqlite3.Connection, changes: list[tuple[str, dict]], by: Actor) -> int:
    """Set alt_email / phone of several accounts ([(address, {field: value})]), each audited as
    contacts_set; how many accounts. Raises ValueError (nothing written) for another field."""
    for _address, fields in changes:
        if set(fields) - {"alt_email", "phone"}:
            raise ValueError(f"not a contact field: {sorted(set(fields) - {'alt_email', 'phone'})}")
    for address, fields in changes:
        accounts.update_user(conn, address, **fields)
        _audit(conn, by, "contacts_set", address, " ".join(f"{k}={v}" for k, v in fields.items()))
    return len(changes)


# -- admins -------------------------------------------------------------------------------------
def accept_admin_totp(conn: sqlite3.Connection, token: str, step: int) -> bool:
    """Use up pending admin login ``token`` (admin_mfa) and record TOTP ``step`` for its admin,
    only if it is later than the last one (two requests with one code cannot both pass); False
    if the token is not live (nothing changed) or the step is not later (the token is spent)."""
    row = accounts.use_token(conn, token, "admin_mfa")
    name = admins.name_of(row["address"]) if row is not None else None
    if name is None:
        return False
    return conn.execute("UPDATE admin_users SET totp_last_step=? WHERE name=? AND totp_last_step<?",
                        (step, name, step)).rowcount == 1


def enrol_admin(conn: sqlite3.Connection, token: str, password_hash: str, totp_secret: str) -> bool:
    """Use up admin enrolment link ``token``, set its admin's password and TOTP secret and revoke
    its sessions; False (nothing changed) if the link is not live."""
    row = accounts.use_token(conn, token, "admin_enrol")
    name = admins.name_of(row["address"]) if row is not None else None
    if name is None:
        return False
    admins.update_admin(conn, name, password_hash=password_hash, totp_secret=totp_secret,
                        totp_last_step=0, password_changed_at=time.time())
    accounts.revoke_all_sessions(conn, admins.session_address(name))
    return True


def admin_enrol_link(conn: sqlite3.Connection, name: str, *, reset: bool, ttl: float,
                     by: Actor) -> str | None:
    """An admin enrolment link token valid ``ttl`` s, audited (admin_added / admin_totp_reset).
    ``reset=False``: creates admin ``name`` if missing; returns "" (nothing written) if it is
    enrolled already. ``reset=True``: clears its password and TOTP, revokes its sessions and
    tokens; returns None (nothing written) if there is no such admin."""
    existing = admins.get_admin(conn, name)
    if reset and existing is None:
        return None
    if not reset and existing is not None and existing["password_hash"]:
        return ""
    admins.ensure_admin(conn, name)
    address = admins.session_address(name)
    if reset:
        admins.update_admin(conn, name, totp_secret="", totp_last_step=0, password_hash="")
        accounts.revoke_all_sessions(conn, address)
        accounts.revoke_tokens(conn, address)
    token = accounts.issue_token(conn, address, "admin_enrol", ttl=ttl)
    _audit(conn, by, "admin_totp_reset" if reset else "admin_added", address,
           f"enrolment link ttl={ttl:.0f}")
    return token


def set_admin_disabled(conn: sqlite3.Connection, name: str, disabled: bool,
                       by: Actor) -> int | None:
    """Disable (revoking sessions and tokens) or enable admin ``name``, audited; the sessions
    revoked, or None if there is no such admin."""
    if not admins.update_admin(conn, name, disabled=int(disabled)):
        return None
    address = admins.session_address(name)
    revoked = 0
    if disabled:
        revoked = accounts.revoke_all_sessions(conn, address)
        accounts.revoke_tokens(conn, address)
    _audit(conn, by, "admin_disabled" if disabled else "admin_enabled", address,
           f"sessions_revoked={revoked}" if disabled else "")
    return revoked


def set_admin_password(conn: sqlite3.Connection, name: str, password_hash: str,
                       by: Actor) -> int | None:
    """Set admin ``name``'s password and revoke its sessions, audited as admin_password_set;
    the sessions revoked, or None if there is no such admin."""
    if not admins.update_admin(conn, name, password_hash=password_hash,
                               password_changed_at=time.time()):
        return None
    revoked = accounts.revoke_all_sessions(conn, admins.session_address(name))
    _audit(conn, by, "admin_password_set", admins.session_address(name),
           f"sessions_revoked={revoked}")
    return revoked


__all__ = ["Actor", "open_session", "enrol_user", "accept_totp_login", "change_password",
           "set_user_disabled", "set_user_password", "issue_user_link", "reset_user_totp",
           "set_contacts", "accept_admin_totp", "enrol_admin", "admin_enrol_link",
           "set_admin_disabled", "set_admin_password"]
