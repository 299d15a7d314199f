"""`mailgate doctor` and `mailgate alerts test`: the operations commands.

    mailgate doctor [--json]                 preflight (gateway/doctor.py); exit 0 OK, 1 WARN, 2 FAIL
    mailgate alerts test [--wait SECONDS]    a test alert on every configured channel

``alerts test`` needs no running gateway for the apprise URLs (sent from this process, one at a
time, so each channel's outcome is printed on its own). Alert mail goes the way the gateway's own
alerts go (gateway/continuity/alerts.py): committed into the spool as a new message, which the
running gateway's queue manager picks up within a second and delivers by the MX of the alternate
domain. The command then watches that message for ``--wait`` seconds and prints what happened
(delivered, refused, deferred with the last error, or still queued: is the gateway running?).
On a PostgreSQL spool the message is committed into the shared queue on the CLI's one connection
(gateway.cli_backend.on_postgresql; not a node) and any gateway of the cluster delivers it.
Exit status: 0 every channel delivered, 1 one did not (or none is configured), 2 usage error.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time

from gateway import cli_backend

__all__ = ["add_parsers", "run"]


def add_parsers(sub) -> None:
    """Register ``doctor`` and ``alerts`` on the top-level subparsers of gateway.cli."""
    sub.add_parser("doctor", help="preflight: what will break").add_argument("--json", action="store_true")
    a = sub.add_parser("alerts", help="alert channels").add_subparsers(dest="acmd", required=True)
    t = a.add_parser("test", help="send a test alert on every configured channel")
    t.add_argument("--wait", type=float, default=30.0, help="seconds to watch alert mail")


def run(cfg, args) -> int:
    if args.cmd == "doctor":
        return doctor(cfg, args.json)
    return asyncio.run(alerts_test(cfg, args.wait))


def doctor(cfg, as_json: bool) -> int:
    from gateway import doctor as d
    started = time.monotonic()
    checks = asyncio.run(d.run_checks(cfg))
    seconds = time.monotonic() - started
    if as_json:
        print(json.dumps(d.as_json(checks, seconds), indent=1))
    else:
        width = max((len(c.check) for c in checks), default=0)
        for c in checks:
            print(d.format_line(c, width))
        print(f"-- {d.worst(checks)} ({len(checks)} checks in {seconds:.1f}s)")
    return d.LEVELS.index(d.worst(checks))


class _Capture(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def _notify(url: str, title: str, body: str) -> tuple[bool, str]:
    import apprise
    a = apprise.Apprise()
    if not a.add(url):
        return False, "apprise cannot use this URL"
    cap = _Capture()
    logger = logging.getLogger("apprise")
    logger.addHandler(cap)
    try:
        ok = a.notify(title=title, body=body)
    finally:
        logger.removeHandler(cap)
    return bool(ok), "; ".join(cap.messages[-3:])


async def alerts_test(cfg, wait: float) -> int:
    c = cfg.continuity
    title = f"test alert from mailgate on {cfg.server.hostname}"
    body = (f"This is a test of the alert channels of mailgate on {cfg.server.hostname}, sent by "
            f"`mailgate alerts test` at {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}. "
            "No action is needed.")
    if not c.alert_urls and not c.alert_mail_to:
        print("FAIL  no alert channel configured (continuity.alert_urls, continuity.alert_mail_to)")
        return 1
    failed = 0
    for i, url in enumerate(c.alert_urls):
        shown = f"continuity.alert_urls[{i}] {url.partition('://')[0]}://***"
        try:
            ok, why = await asyncio.wait_for(asyncio.to_thread(_notify, url, title, body), 30)
        except asyncio.TimeoutError:
            ok, why = False, "no answer within 30 s"
        failed += not ok
        print(f"{'OK' if ok else 'FAIL':<4}  {shown}  " +
              ("sent" if ok else f"not sent: {why or 'apprise reported a failure'}"))
    if c.alert_mail_to:
        failed += not await _mail(cfg, title, body, wait)
    return 1 if failed else 0


async def _mail(cfg, title: str, body: str, wait: float) -> bool:
    from gateway.continuity.alerts import Alerter
    to = ", ".join(cfg.continuity.alert_mail_to)
    name = "continuity.alert_mail_to"
    msg = Alerter(urls=[], mail_to=cfg.continuity.alert_mail_to, spool=None,
                  hostname=cfg.server.hostname, log=None)._mail(title, body)   # an alert's very message
    if cli_backend.is_postgresql(cfg):
        try:        # on_postgresql runs its own event loop: in a thread of its own
            m = await asyncio.to_thread(cli_backend.on_postgresql, cfg, _pg_commit_and_watch, msg,
                                        wait, f"{name} {to}", read_only=False)
        except cli_backend.PgUnavailable as e:
            print(f"FAIL  {name} {to}  {e}")
            return False
    else:
        m = await _sqlite_commit_and_watch(cfg, msg, wait, f"{name} {to}")
        if m is False:
            return False
    return _report(m, msg.queue_id, name, to, wait)


async def _sqlite_commit_and_watch(cfg, msg, wait: float, shown: str):
    """Commit ``msg`` into the SQLite spool beside the running gateway and watch it for ``wait``
    seconds; the message as last read (None: gone), or False (no spool yet)."""
    from spool import Spool, db, query
    if not cfg.spool_path.exists():
        print(f"FAIL  {shown}  no spool at {cfg.spool_path}: start the gateway first")
        return False
    spool = await Spool.open(cfg.spool_path, recover=False)   # beside a running gateway: no recovery
    try:
        qid = await spool.commit(msg)
    finally:
        await spool.close()
    print(f"....  {shown}  queued as {qid}; watching it for {wait:.0f}s", flush=True)
    end = time.monotonic() + wait
    conn = db.connect(cfg.spool_path)
    try:
        while True:
            m = query.get_message(conn, qid)
            if m is None or not m.pending or time.monotonic() >= end:
                return m
            await asyncio.sleep(0.2)
    finally:
        conn.close()


async def _pg_commit_and_watch(conn, msg, wait: float, shown: str):
    """The same on the PostgreSQL spool, on the CLI's one connection (gateway.cli_backend): the
    message committed in one transaction (node "cli", its 14-character queue ID never equal to a
    node's 16-character ones), then claimed and delivered by any gateway of the cluster."""
    from spool.pg import queue as pgq
    async with conn.transaction():
        qid = await pgq.insert_message(conn, msg, node="cli")
    print(f"....  {shown}  queued as {qid}; watching it for {wait:.0f}s", flush=True)
    end = time.monotonic() + wait
    while True:
        m = await pgq.get_message(conn, qid)
        if m is None or not m.pending or time.monotonic() >= end:
            return m
        await asyncio.sleep(0.2)


def _report(m, qid: str, name: str, to: str, wait: float) -> bool:
    """One line per recipient of the alert mail ``m`` (None: gone); True if all delivered."""
    from spool import RcptState
    if m is None:
        print(f"WARN  {name} {to}  {qid} is gone from the queue (deleted?)")
        return False
    lines, ok = [], True
    for r in m.recipients:
        if r.state is RcptState.DELIVERED:
            lines.append(f"OK    {name} {r.address}  delivered ({r.reply_code} {r.reply_text} "
                         f"from {r.remote_host})")
        elif r.state is RcptState.BOUNCED:
            ok = False
            lines.append(f"FAIL  {name} {r.address}  refused: {r.reply_code} {r.reply_text}")
        else:
            ok = False
            why = (f"deferred: {m.last_error}" if m.attempts else
                   "not attempted yet: is the gateway running? (mailgate queue show " + qid + ")")
            lines.append(f"WARN  {name} {r.address}  not delivered within {wait:.0f}s, {why}")
    print("\n".join(lines))
    return ok
