"""`mailgate admins ...`: admin console accounts, through the spool's account verbs on one
connection of the CLI's own (gateway.cli_users.on_spool: the SQLite spool file, shared with a
running gateway by WAL, or the PostgreSQL spool).

    mailgate admins add NAME          create the admin and print a one-time enrolment link (valid
                                      24 h) where they set a password and get their TOTP secret
    mailgate admins list
    mailgate admins disable NAME | enable NAME
    mailgate admins reset-totp NAME   a new enrolment link (the old password and TOTP stop working)
    mailgate admins set-password NAME (password from stdin, or prompted twice on a tty)

Both a password (argon2id) and a TOTP secret are required to log in; an admin gets them at the
enrolment link. Every change is one transaction with its audit row (webmail_audit, actor "cli",
address "admin:NAME"). The name "token" is reserved (sessions opened with the [admin] token).
Exit status: 0 ok, 1 refused (no such admin, bad input, the database unreachable).
"""
from __future__ import annotations

import sys
import time

from gateway import cli_backend
from gateway.cli_users import CLI, on_spool
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
    try:
        return _COMMANDS[args.acmd](cfg, args)
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1


def _name(raw: str) -> str | None:
    from webmail.admin.login import clean_name
    name = clean_name(raw)
    if name is None:
        print(f"mailgate: {raw!r}: not a usable admin name (1-64 printable ASCII characters, no"
              " spaces or colons)", file=sys.stderr)
    return name


def _add(cfg, args, reset: bool = False) -> int:
    name = _name(args.name)
    if name is None:
        return 1
    if name in RESERVED:
        print(f"mailgate: {name!r} is reserved (sessions opened with the admin token)", file=sys.stderr)
        return 1
    token = on_spool(cfg, lambda sp: sp.admin_enrol_link(name, reset=reset, ttl=ENROL_TTL, by=CLI))
    if token is None:
        print(f"mailgate: no admin {name!r} (mailgate admins add {name})", file=sys.stderr)
        return 1
    if token == "":
        print(f"mailgate: admin {name!r} exists and is enrolled (reset-totp issues a new link)",
              file=sys.stderr)
        return 1
    print(f"{auth.base_url(cfg)}/admin/enrol/{token}")
    print(f"(admin {name}: opens once, within {ENROL_TTL / 3600:g} h; sets the password and shows"
          " the TOTP secret)", file=sys.stderr)
    return 0


def _reset_totp(cfg, args) -> int:
    return _add(cfg, args, reset=True)


def _list(cfg, args) -> int:
    rows = on_spool(cfg, lambda sp: sp.list_admins(), read_only=True)
    print(f"{'name':<24}{'password':<10}{'totp':<6}{'state':<10}created")
    for r in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.gmtime(r["created_at"]))
        print(f"{r['name']:<24}{'yes' if r['password_hash'] else 'no':<10}"
              f"{'yes' if r['totp_secret'] else 'no':<6}"
              f"{'disabled' if r['disabled'] else 'enabled':<10}{created} UTC")
    return 0


def _disable(cfg, args, disabled: bool = True) -> int:
    name = _name(args.name)
    if name is None:
        return 1
    revoked = on_spool(cfg, lambda sp: sp.set_admin_disabled(name, disabled, by=CLI))
    if revoked is None:
        print(f"mailgate: no admin {name!r}", file=sys.stderr)
        return 1
    print(f"admin {name} {'disabled' if disabled else 'enabled'}"
          + (f"; {revoked} session(s) logged out" if revoked else ""))
    return 0


def _enable(cfg, args) -> int:
    return _disable(cfg, args, disabled=False)


def _set_password(cfg, args) -> int:
    from gateway.cli_users import read_new_password_hash
    name = _name(args.name)
    if name is None:
        return 1
    if on_spool(cfg, lambda sp: sp.get_admin(name), read_only=True) is None:
        print(f"mailgate: no admin {name!r}", file=sys.stderr)
        return 1
    hashed = read_new_password_hash()
    if hashed is None:
        return 1
    revoked = on_spool(cfg, lambda sp: sp.set_admin_password(name, hashed, by=CLI))
    if revoked is None:
        print(f"mailgate: no admin {name!r}", file=sys.stderr)
        return 1
    print(f"password set for admin {name}" + (f"; {revoked} session(s) logged out" if revoked else ""))
    return 0


_COMMANDS = {"add": _add, "list": _list, "disable": _disable, "enable": _enable,
             "reset-totp": _reset_totp, "set-password": _set_password}
