"""The `mailgate` command.

    mailgate serve [--config FILE]
    mailgate check-config [--config FILE]      (secrets shown as ***)
    mailgate queue list [--all] | show ID | flush [ID] | hold ID | release ID | delete ID
    mailgate routes resolve DOMAIN
    mailgate continuity status | start --reason R | stop | confirm | maintenance start|stop
    mailgate probes [--history]
    mailgate mailbox list ADDRESS | search ADDRESS WORDS...
    mailgate drill [--rcpt A]... [--timeout S] [--hold S] | status | stop
    mailgate users list | set-password A | login-link A [--enrol] | disable A | enable A | ...
    mailgate admins add NAME | list | disable NAME | enable NAME | reset-totp NAME | set-password NAME
    mailgate dkim keygen DOMAIN SELECTOR [--algorithm rsa-sha256|ed25519-sha256] [--dir D]
    mailgate cluster status [--json]           (the nodes sharing a PostgreSQL spool)
    mailgate doctor [--json] | alerts test [--wait S]

``--config`` defaults to $MAILGATE_CONFIG, else the embedded defaults. The queue commands work on
the spool database directly (like postqueue/postsuper on the queue directory) and are safe against
a running gateway: every change is one guarded transaction, and the gateway's queue manager looks
at the queue every second. Exit status: 0 ok, 1 operation refused or not found, 2 usage or
configuration error.

With ``spool.backend = "postgresql"`` every command that reads or changes the spool (``queue``,
``cluster status``, ``continuity``, ``probes``, ``drill``, ``mailbox``, ``users``, ``admins``,
``alerts test``) talks to PostgreSQL through one plain connection of its own (read-only for
reads, never as a node: gateway.cli_backend) and never opens a SQLite file beside it.
"""
from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys

from gateway import config as config_mod
from gateway.logs import flush_logs, make_logger, route_stdlib


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="mailgate", description="mail-flow continuity gateway")
    p.add_argument("--config", default=os.environ.get("MAILGATE_CONFIG"), help="TOML file")
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("serve", help="run the gateway")
    sub.add_parser("check-config", help="validate the configuration and print it")
    q = sub.add_parser("queue", help="list and manage the queue").add_subparsers(dest="qcmd", required=True)
    ql = q.add_parser("list")
    ql.add_argument("--all", action="store_true", help="include delivered and bounced")
    ql.add_argument("--json", action="store_true")
    for name in ("show", "hold", "release", "delete"):
        q.add_parser(name).add_argument("queue_id")
    q.add_parser("flush").add_argument("queue_id", nargs="?")
    r = sub.add_parser("routes", help="routing").add_subparsers(dest="rcmd", required=True)
    r.add_parser("resolve").add_argument("domain")
    c = sub.add_parser("continuity", help="continuity events").add_subparsers(dest="ccmd", required=True)
    c.add_parser("status")
    for name in ("start", "stop", "confirm"):
        cp = c.add_parser(name)
        cp.add_argument("--reason", default="")
        cp.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the gateway")
    mp = c.add_parser("maintenance")
    mp.add_argument("action", choices=["start", "stop"])
    mp.add_argument("--reason", default="")
    mp.add_argument("--wait", type=float, default=15.0)
    sub.add_parser("probes", help="latest probe results").add_argument("--history", action="store_true")
    mb = sub.add_parser("mailbox", help="continuity mailboxes").add_subparsers(dest="mcmd", required=True)
    ml = mb.add_parser("list")
    ml.add_argument("address")
    ms = mb.add_parser("search")
    ms.add_argument("address")
    ms.add_argument("words", nargs="+")
    for x in (ml, ms):
        x.add_argument("--limit", type=int, default=50)
    from gateway import cli_users
    cli_users.add_parser(sub)
    from gateway import cli_admins
    cli_admins.add_parser(sub)
    from gateway import cli_ops           # doctor, alerts test (issue 8)
    cli_ops.add_parsers(sub)
    from gateway import cli_dkim
    cli_dkim.add_parser(sub)
    from gateway import cli_drill         # continuity drill (issue 8 item 3)
    cli_drill.add_parser(sub)
    from gateway import cli_cluster       # cluster status (issue 9 item 6)
    cli_cluster.add_parser(sub)
    args = p.parse_args(argv)
    try:
        cfg = config_mod.load(args.config, check_files=args.cmd in ("serve", "check-config"))
    except config_mod.ConfigError as e:
        print(f"mailgate: configuration error:\n{e}", file=sys.stderr)
        return 2
    if args.cmd == "serve":
        return _serve(cfg)
    if args.cmd == "check-config":
        print(json.dumps(redacted(cfg.model_dump(mode="json")), indent=2))
        return 0
    if args.cmd == "queue":
        from gateway import cli_queue
        return cli_queue.run(cfg, args)
    if args.cmd == "continuity":
        from gateway import cli_continuity
        return cli_continuity.run(cfg, args)
    if args.cmd == "mailbox":
        from gateway import cli_continuity
        return cli_continuity.mailbox(cfg, args)
    if args.cmd == "probes":
        from gateway import cli_continuity
        return cli_continuity.probes(cfg, args)
    if args.cmd == "users":
        from gateway import cli_users
        return cli_users.run(cfg, args)
    if args.cmd == "drill":
        return cli_drill.run(cfg, args)
    if args.cmd == "admins":
        from gateway import cli_admins
        return cli_admins.run(cfg, args)
    if args.cmd == "dkim":
        from gateway import cli_dkim
        return cli_dkim.run(cfg, args)
    if args.cmd == "routes":
        return asyncio.run(_resolve(cfg, args.domain))
    if args.cmd == "cluster":
        return cli_cluster.run(cfg, args)
    if args.cmd in ("doctor", "alerts"):
        return cli_ops.run(cfg, args)
    return 2


SECRET = "***"


def redacted(shown: dict) -> dict:
    """The dumped configuration with its secrets replaced by "***" (an unset one stays ""):
    admin.token, probes.roundtrip_password, everything after the scheme of continuity.alert_urls
    and webmail.sms_url (apprise URLs carry tokens in user, host and path), the user:password of
    probes.http URLs, the password in spool.dsn."""
    from gateway.config_spool import redacted_dsn
    shown["admin"]["token"] = SECRET if shown["admin"]["token"] else ""
    p = shown["probes"]
    p["roundtrip_password"] = SECRET if p["roundtrip_password"] else ""
    p["http"] = {name: re.sub(r"^([a-z][a-z0-9+.-]*://)[^/@]*@", rf"\1{SECRET}@", url, flags=re.I)
                 for name, url in p["http"].items()}
    shown["continuity"]["alert_urls"] = [u.partition("://")[0] + "://" + SECRET if "://" in u
                                         else SECRET for u in shown["continuity"]["alert_urls"]]
    w = shown["webmail"]
    w["sms_url"] = (w["sms_url"].partition("://")[0] + "://" + SECRET if "://" in w["sms_url"]
                    else SECRET) if w["sms_url"] else ""
    shown["spool"]["dsn"] = redacted_dsn(shown["spool"]["dsn"], SECRET)
    return shown


def _serve(cfg) -> int:
    from gateway import eventloop
    from gateway.app import serve
    log = make_logger(cfg.log.level, cfg.log.format, batched=True)   # gateway.logbatch
    route_stdlib(log, cfg.log.level)      # aiosmtpd, asyncio and our stdlib loggers: the same log
    from policies.directory import DirectoryError
    from spool import SpoolError
    try:
        eventloop.run(serve(cfg, log), cfg.server.event_loop, log)
    except (OSError, DirectoryError, SpoolError, eventloop.EventLoopError) as e:
        log.error("startup_failed", config=cfg.source, error=str(e))
        flush_logs(log)
        print(f"mailgate: cannot start: {e}", file=sys.stderr)
        return 1
    finally:
        flush_logs(log)
    return 0


async def _resolve(cfg, domain: str) -> int:
    from gateway.app import build_resolver
    from gateway.delivery.mx import ResolveError, format_routes
    from gateway.router import Router
    hop = Router(cfg).for_domain(domain)
    print(f"next hop for {domain}: {hop.spec} ({hop.kind}, port {hop.port}, tls {hop.tls.mode})")
    try:
        groups = await build_resolver(cfg).resolve(hop.spec, hop.port)
    except ResolveError as e:
        print(f"{'permanent' if e.permanent else 'temporary'} failure: {e.code} {e.status} {e}")
        return 1
    print(format_routes(groups))
    return 0


def fmt_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


if __name__ == "__main__":
    sys.exit(main())
