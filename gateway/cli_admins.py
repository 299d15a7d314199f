"""`mailgate admins ...`: admin console accounts (spool.admins), worked on the spool database
directly (WAL lets it share the file with a running gateway).

    mailgate admins add NAME          create the admin and print a one-time enrolment link (valid
                                      24 h) where they set a password and get their TOTP secret
    mailgate admins list
    mailgate admins disable NAME | enable NAME
    mailgate admins reset-totp NAME   a new enrolment link (the old password and TOTP stop working)
    mailgate admins set-password NAME (password from stdin, or prompted twice on a tty)

Both a password (argon2id) and a TOTP secret are required to log in; an admin gets them at the
enrolment link. Every change is one transaction with its audit row (webmail_audit, actor "cli",
address "admin:NAME"). The name "token" is reserved (sessions opened with the [admin] token).
Exit status: 0 ok, 1 refused (no such admin, bad input).
"""
from __future__ import annotations

import sys
import time

from gateway.cli_backend import refuse_unless_sqlite
from spool import accounts, admins, db
from webmail import auth

RESERVED = frozenset({"token"})
ENROL_TTL = 86400.0       # seconds an enrolment link is valid


def add_parser(sub) -> None:
    """The `admins` subcommand and its actions on ``sub`` (argparse subparsers)."""
    a = sub.add_parser("admins", help="admin console accounts").add_subparsers(dest="acmd", required=True)
    a.add_parser("list")
    for name in ("add", "disable", "enable", "reset-totp", "set-password"):
        a.add_parser(name).add_argument("name")


def run(cfg, args) -> int:
    if (refused := refuse_unless_sqlite(cfg, "mailgate admins")) is not None:
        return refused
    conn = db.connect(cfg.spool_path)
    try:
        return _COMMANDS[args.acmd](cfg, conn, args)
    finally:
        conn.close()


def _name(raw: str) -> str | None:
    from webmail.admin.login import clean_name
    name = clean_name(raw)
    if name is None:
        print(f"mailgate: {raw!r}: not a usable admin name (1-64 printable ASCII characters, no"
              " spaces or colons)", file=sys.stderr)
    return name


def _audit(conn, action: str, name: str, detail: str = "") -> None:
    accounts.audit(conn, action, address=admins.session_address(name), actor="cli", client="cli",
                   detail=detail)


def _enrol_link(cfg, conn, name: str) -> str:
    token = accounts.issue_token(conn, admins.session_address(name), "admin_enrol", ttl=ENROL_TTL)
    return f"{auth.base_url(cfg)}/admin/enrol/{token}"


def _add(cfg, conn, args, reset: bool = False) -> int:
    name = _name(args.name)
    if name is None:
        return 1
    if name in RESERVED:
        print(f"mailgate: {name!r} is reserved (sessions opened with the admin token)", file=sys.stderr)
        return 1

    def tx():
        existing = admins.get_admin(conn, name)
        if reset and existing is None:
            return None
        if not reset and existing is not None and existing["password_hash"]:
            return "enrolled"
        admins.ensure_admin(conn, name)
        if reset:
            admins.update_admin(conn, name, totp_secret="", totp_last_step=0, password_hash="")
            accounts.revoke_all_sessions(conn, admins.session_address(name))
            accounts.revoke_tokens(conn, admins.session_address(name))
        link = _enrol_link(cfg, conn, name)
        _audit(conn, "admin_totp_reset" if reset else "admin_added", name, f"enrolment link ttl={ENROL_TTL:.0f}")
        return link
    link = db.transaction(conn, tx)
    if link is None:
        print(f"mailgate: no admin {name!r} (mailgate admins add {name})", file=sys.stderr)
        return 1
    if link == "enrolled":
        print(f"mailgate: admin {name!r} exists and is enrolled (reset-totp issues a new link)",
              file=sys.stderr)
        return 1
    print(link)
    print(f"(admin {name}: opens once, within {ENROL_TTL / 3600:g} h; sets the password and shows"
          " the TOTP secret)", file=sys.stderr)
    return 0


def _reset_totp(cfg, conn, args) -> int:
    return _add(cfg, conn, args, reset=True)


def _list(cfg, conn, args) -> int:
    print(f"{'name':<24}{'password':<10}{'totp':<6}{'state':<10}created")
    for r in admins.list_admins(conn):
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"]))
        print(f"{r['name']:<24}{'yes' if r['password_hash'] else 'no':<10}"
              f"{'yes' if r['totp_secret'] else 'no':<6}"
              f"{'disabled' if r['disabled'] else 'enabled':<10}{created} UTC")
    return 0


def _disable(cfg, conn, args, disabled: bool = True) -> int:
    name = _name(args.name)
    if name is None:
        return 1

    def tx():
        if not admins.update_admin(conn, name, disabled=int(disabled)):
            return None
        revoked = 0
        if disabled:
            revoked = accounts.revoke_all_sessions(conn, admins.session_address(name))
            accounts.revoke_tokens(conn, admins.session_address(name))
        _audit(conn, "admin_disabled" if disabled else "admin_enabled", name,
               f"sessions_revoked={revoked}" if disabled else "")
        return revoked
    revoked = db.transaction(conn, tx)
    if revoked is None:
        print(f"mailgate: no admin {name!r}", file=sys.stderr)
        return 1
    print(f"admin {name} {'disabled' if disabled else 'enabled'}"
          + (f"; {revoked} session(s) logged out" if revoked else ""))
    return 0


def _enable(cfg, conn, args) -> int:
    return _disable(cfg, conn, args, disabled=False)


def _set_password(cfg, conn, args) -> int:
    from gateway.cli_users import read_new_password_hash
    name = _name(args.name)
    if name is None:
        return 1
    if admins.get_admin(conn, name) is None:
        print(f"mailgate: no admin {name!r}", file=sys.stderr)
        return 1
    hashed = read_new_password_hash()
    if hashed is None:
        return 1

    def tx():
        admins.update_admin(conn, name, password_hash=hashed, password_changed_at=time.time())
        revoked = accounts.revoke_all_sessions(conn, admins.session_address(name))
        _audit(conn, "admin_password_set", name, f"sessions_revoked={revoked}")
        return revoked
    revoked = db.transaction(conn, tx)
    print(f"password set for admin {name}" + (f"; {revoked} session(s) logged out" if revoked else ""))
    return 0


_COMMANDS = {"add": _add, "list": _list, "disable": _disable, "enable": _enable,
             "reset-totp": _reset_totp, "set-password": _set_password}
