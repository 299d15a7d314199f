"""`mailgate users ...`: webmail accounts, through the spool's account verbs on one connection of
the CLI's own (as `mailgate queue` does): the SQLite spool file (WAL lets it share the file with
a running gateway) or the PostgreSQL spool (gateway.cli_backend.on_postgresql; never as a node).

    mailgate users list
    mailgate users set-password ADDRESS        (password from stdin, or prompted twice on a tty)
    mailgate users login-link ADDRESS [--enrol] (prints a one-time URL valid login_link_ttl)
    mailgate users disable ADDRESS | enable ADDRESS | reset-totp ADDRESS
    mailgate users import-contacts FILE        (CSV: address,alt_email,phone)
    mailgate users audit [ADDRESS] [--limit N]

A user is a mailbox of the recipient directory; with no directory, any address in an accepted
domain (webmail.auth.resolve_user). Every change is one transaction with its audit row (actor
"cli"). Exit status: 0 ok, 1 refused (not a user, bad input, the database unreachable), 2 usage.
"""
from __future__ import annotations

import asyncio
import csv
import getpass
import io
import sys

from gateway import cli_backend
from spool import db
from spool.account_ops import Actor
from spool.accounts_verbs import ConnectionAccounts
from webmail import auth

CLI = Actor("cli", "cli")


def add_parser(sub) -> None:
    """The `users` subcommand and its actions on ``sub`` (argparse subparsers)."""
    u = sub.add_parser("users", help="webmail accounts").add_subparsers(dest="ucmd", required=True)
    u.add_parser("list")
    for name in ("set-password", "disable", "enable", "reset-totp"):
        u.add_parser(name).add_argument("address")
    ll = u.add_parser("login-link")
    ll.add_argument("address")
    ll.add_argument("--enrol", action="store_true",
                    help="a link where the user sets their password (instead of a login link)")
    u.add_parser("import-contacts").add_argument("file")
    a = u.add_parser("audit")
    a.add_argument("address", nargs="?")
    a.add_argument("--limit", type=int, default=100)


def run(cfg, args) -> int:
    from policies.directory import Directory, DirectoryError
    try:
        directory = Directory.load(cfg.directory.file) if cfg.directory.file else Directory.empty()
    except DirectoryError as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1
    if not cli_backend.is_postgresql(cfg):
        db.connect(cfg.spool_path).close()     # created and migrated up front, as always
    try:
        return _COMMANDS[args.ucmd](cfg, directory, args)
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1


def on_spool(cfg, fn, *args, read_only: bool = False):
    """``await fn(verbs, *args)`` with ``verbs`` the spool's account verbs on one connection of
    the CLI's own (spool.accounts_verbs.ConnectionAccounts on the SQLite file,
    spool.pg.accounts.PgConnectionAccounts on PostgreSQL); its result. Raises
    cli_backend.PgUnavailable when the PostgreSQL spool cannot be reached."""
    if cli_backend.is_postgresql(cfg):
        from spool.pg.accounts import PgConnectionAccounts
        return cli_backend.on_postgresql(cfg, lambda conn: fn(PgConnectionAccounts(conn), *args),
                                         read_only=read_only)
    conn = db.connect(cfg.spool_path)
    try:
        return asyncio.run(fn(ConnectionAccounts(conn), *args))
    finally:
        conn.close()


def _who(cfg, directory, raw: str) -> tuple[str, object] | None:
    found = auth.resolve_user(cfg, directory, cfg.directory.file is not None, auth.clean_address(raw))
    if found is None:
        where = "a mailbox of the directory" if cfg.directory.file else \
            f"an address in an accepted domain ({', '.join(cfg.relay.accepted_domains)})"
        print(f"mailgate: {raw}: not a webmail user (must be {where})", file=sys.stderr)
    return found


def _list(cfg, directory, args) -> int:
    rows = {r["address"]: r for r in on_spool(cfg, lambda sp: sp.list_users(), read_only=True)}
    names = set(rows)
    if cfg.directory.file:
        names |= {e.address for e in _mailboxes(directory)}
    entries = {e.address: e for e in _mailboxes(directory)}
    print(f"{'address':<36}{'password':<10}{'totp':<6}{'state':<10}{'alternate address':<32}phone")
    for name in sorted(names):
        row = rows.get(name) or {}
        alt, phone = auth.contacts(row, entries.get(name))
        print(f"{name:<36}{'yes' if row.get('password_hash') else 'no':<10}"
              f"{'yes' if row.get('totp_secret') else 'no':<6}"
              f"{'disabled' if row.get('disabled') else 'enabled':<10}{alt or '-':<32}{phone or '-'}")
    return 0


def _mailboxes(directory):
    return directory.mailboxes()


def _read_password() -> str | None:
    if sys.stdin.isatty():
        first = getpass.getpass("New password: ")
        if getpass.getpass("Again: ") != first:
            print("mailgate: the two passwords differ", file=sys.stderr)
            return None
        return first
    return sys.stdin.readline().rstrip("\r\n")


def read_new_password_hash() -> str | None:
    """Read a new password (twice on a terminal, one line from a pipe: never argv), check it
    (webmail.auth.password_problem) and return its argon2id hash; None after printing why."""
    password = _read_password()
    if password is None:
        return None
    problem = auth.password_problem(password)
    if problem:
        print(f"mailgate: {problem}", file=sys.stderr)
        return None
    return auth.hash_password(password)


def _set_password(cfg, directory, args) -> int:
    found = _who(cfg, directory, args.address)
    if found is None:
        return 1
    hashed = read_new_password_hash()
    if hashed is None:
        return 1
    revoked = on_spool(cfg, lambda sp: sp.set_user_password(found[0], hashed, by=CLI))
    print(f"password set for {found[0]}" + (f"; {revoked} session(s) logged out" if revoked else ""))
    return 0


def _login_link(cfg, directory, args) -> int:
    found = _who(cfg, directory, args.address)
    if found is None:
        return 1
    kind = "enrol" if args.enrol else "link"
    ttl = cfg.webmail.login_link_ttl
    token = on_spool(cfg, lambda sp: sp.issue_user_link(found[0], kind, ttl=ttl, by=CLI))
    if token is None:
        print(f"mailgate: {found[0]} is disabled (mailgate users enable {found[0]})", file=sys.stderr)
        return 1
    path = "enrol" if args.enrol else "login/link"
    print(f"{auth.base_url(cfg)}/{path}/{token}")
    hours = ttl / 3600
    print(f"(for {found[0]}; works once, within {hours:g} h)", file=sys.stderr)
    return 0


def _disable(cfg, directory, args, disabled: bool = True) -> int:
    found = _who(cfg, directory, args.address)
    if found is None:
        return 1
    revoked = on_spool(cfg, lambda sp: sp.set_user_disabled(found[0], disabled, by=CLI))
    print(f"{found[0]} {'disabled' if disabled else 'enabled'}"
          + (f"; {revoked} session(s) logged out" if revoked else ""))
    return 0


def _enable(cfg, directory, args) -> int:
    return _disable(cfg, directory, args, disabled=False)


def _reset_totp(cfg, directory, args) -> int:
    found = _who(cfg, directory, args.address)
    if found is None:
        return 1
    on_spool(cfg, lambda sp: sp.reset_user_totp(found[0], by=CLI))
    print(f"two-step login turned off for {found[0]}")
    return 0


def _import_contacts(cfg, directory, args) -> int:
    """CSV rows address,alt_email,phone (a header line naming the columns is optional; empty
    fields clear nothing: they leave the value as it is). All rows are checked first; any error
    and nothing is written."""
    try:
        text = open(args.file, encoding="utf-8-sig").read()
    except (OSError, UnicodeDecodeError) as e:
        print(f"mailgate: {args.file}: cannot read: {e}", file=sys.stderr)
        return 1
    changes, errors = [], []
    for line, row in enumerate(csv.reader(io.StringIO(text)), 1):
        cells = [c.strip() for c in row]
        if not any(cells) or (line == 1 and cells and cells[0].lower() == "address"):
            continue
        cells += [""] * (3 - len(cells))
        raw, alt, phone = cells[:3]
        found = auth.resolve_user(cfg, directory, cfg.directory.file is not None, auth.clean_address(raw))
        if found is None:
            errors.append(f"line {line}: {raw!r} is not a webmail user")
            continue
        fields = {}
        if alt:
            if not auth.is_outside(cfg, directory, alt):
                errors.append(f"line {line}: alternate address {alt!r} must be a valid address outside "
                              "the organisation's domains")
                continue
            fields["alt_email"] = alt
        if phone:
            number = auth.normalize_phone(phone)
            if number is None:
                errors.append(f"line {line}: phone {phone!r} must be + and 6 to 15 digits")
                continue
            fields["phone"] = number
        if fields:
            changes.append((found[0], fields))
    if errors:
        print("\n".join(f"mailgate: {args.file}: {e}" for e in errors), file=sys.stderr)
        print(f"mailgate: nothing imported ({len(errors)} error(s))", file=sys.stderr)
        return 1
    on_spool(cfg, lambda sp: sp.set_contacts(changes, by=CLI))
    print(f"contacts imported for {len(changes)} user(s)")
    return 0


def _audit_cmd(cfg, directory, args) -> int:
    from gateway.cli import fmt_time
    address = None
    if args.address:
        address = auth.clean_address(args.address) or args.address
        found = auth.resolve_user(cfg, directory, cfg.directory.file is not None, address)
        address = found[0] if found else address
    trail = on_spool(cfg, lambda sp: sp.list_audit(address, limit=args.limit), read_only=True)
    for r in reversed(trail):
        print(f"{fmt_time(r['at'])}  {r['action']:<20}{r['result']:<13}{r['address'] or '-':<32}"
              f"actor={r['actor'] or '-'} client={r['client'] or '-'} {r['detail']}"
              + (f" ua={r['user_agent'][:60]!r}" if r["user_agent"] else ""))
    return 0


_COMMANDS = {"list": _list, "set-password": _set_password, "login-link": _login_link,
             "disable": _disable, "enable": _enable, "reset-totp": _reset_totp,
             "import-contacts": _import_contacts, "audit": _audit_cmd}
