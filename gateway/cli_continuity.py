"""`mailgate continuity ...` and `mailgate probes`: admin control of continuity events.

Commands are queued in the spool database (continuity_commands) and applied by the running
gateway within one engine tick; the CLI waits for the result (up to ``--wait`` seconds) and
prints it: ``ok: MODE``, ``refused: WHY``, or ``expired: ...`` when the gateway picked it up more
than ``continuity.command_ttl`` seconds after it was queued (it is then not applied, so a command
typed while the gateway is down never fires days later). If the wait ends first, the CLI says
the command is queued and until when it stays valid. An admin override always wins over the
engine's own decisions.
"""
from __future__ import annotations

import asyncio
import getpass
import sys
import time

from gateway import cli_backend
from spool import continuity as store


def run(cfg, args) -> int:
    """`mailgate continuity ...` on either backend (gateway.cli_backend.on_console)."""
    try:
        return cli_backend.on_console(cfg, _run, cfg, args, read_only=args.ccmd == "status")
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1


async def _run(sp, cfg, args) -> int:
    from gateway.cli import fmt_time
    if args.ccmd == "status":
        st = await sp.continuity_state() or {"mode": "normal", "since": 0, "origin": "", "reason": "",
                                             "event_id": "", "awaiting_confirm": 0}
        print(f"mode:      {st['mode']}" + ("  (awaiting confirmation)" if st["awaiting_confirm"] else ""))
        if st["since"]:
            print(f"since:     {fmt_time(st['since'])}")
        print(f"event:     {st['event_id'] or '-'} {st['origin']}\nreason:    {st['reason'] or '-'}")
        print(f"held:      {await sp.count_held()} message(s) on continuity hold")
        if st["mode"] == "recovering":
            p = await sp.replay_progress(store.replay_id(st["event_id"], st["since"]), st["since"])
            eta = f"{p['eta_seconds']:.0f} s" if p["eta_seconds"] is not None else "unknown"
            print(f"replay:    {p['done']} done, {p['in_flight']} in flight, {p['deferred']} deferred,"
                  f" {p['remaining']} remaining, {p['rate']:.1f} msg/s, ETA {eta}")
        print(f"engine:    {cfg.continuity.mode}")
        ttl = cfg.continuity.command_ttl
        for c in await sp.pending_commands():
            age = c["age"] if "age" in c else time.time() - c["at"]   # PostgreSQL: its clock
            print(f"command:   {c['id']} {c['command']} by {c['actor']}, queued {fmt_time(c['at'])}, "
                  + ("expired: the gateway did not pick it up in time" if age > ttl
                     else f"pending, valid until {fmt_time(c['at'] + ttl)}"))
        for a in reversed(await sp.continuity_audit(10)):
            print(f"  {fmt_time(a['at'])}  {a['src']:>10} -> {a['dst']:<10} {a['actor']}: {a['reason'][:120]}")
        return 0
    command = {"start": "start", "stop": "stop", "confirm": "confirm"}.get(args.ccmd)
    if args.ccmd == "maintenance":
        command = f"maintenance-{args.action}"
    actor = getattr(args, "actor", None) or getpass.getuser()
    cid = await sp.queue_command(command, getattr(args, "reason", "") or "", actor, time.time())
    end = time.monotonic() + args.wait
    while time.monotonic() < end:
        row = await sp.get_command(cid)
        if row["done_at"] is not None:
            print(row["result"])
            return 0 if row["result"].startswith("ok") else 1
        await asyncio.sleep(0.2)
    ttl, row = cfg.continuity.command_ttl, await sp.get_command(cid)
    print(f"queued as command {cid}; the gateway has not applied it yet (is it running?). It stays"
          f" valid until {fmt_time(row['at'] + ttl)} (continuity.command_ttl {ttl:g} s), then"
          " expires without effect.")
    return 1


def probes(cfg, args) -> int:
    """`mailgate probes [--history]` on either backend (with the node on PostgreSQL)."""
    from gateway.cli import fmt_time
    try:
        rows = cli_backend.on_console(cfg, lambda sp: sp.probe_history(latest_only=not args.history))
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1
    if not rows:
        print("no probe results yet")
    for r in rows:
        node = f"  [{r['node']}]" if r.get("node") else ""
        print(f"{fmt_time(r['at'])}  {'ok  ' if r['ok'] else 'FAIL'}  {r['latency'] * 1000:7.1f} ms  "
              f"{r['probe']}{' (critical)' if r['critical'] else ''}{node}  {r['detail'][:150]}")
    return 0


def mailbox(cfg, args) -> int:
    """`mailgate mailbox list ADDRESS` / `mailgate mailbox search ADDRESS WORDS...`: what a user
    sees in their continuity mailbox (for the admin and for support), read through the spool's
    mailbox verbs on either backend (gateway.cli_backend.on_console)."""
    from gateway.cli import fmt_time
    from gateway.continuity.filing import mailbox_key
    args.address = mailbox_key(args.address)   # the key filing used (IDNA-normalised domain)

    async def rows_of(verbs):
        if args.mcmd == "list":
            return await verbs.list_mailbox(args.address, args.limit)
        return (await verbs.search_messages(args.address, " ".join(args.words), args.limit))["rows"]
    try:
        rows = cli_backend.on_console(cfg, rows_of)
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1
    for r in rows:
        print(f"{r['id']:>6}  {fmt_time(r['filed_at'])}  {r['queue_id']}  "
              f"{(r['from_header'] or '')[:40]:<40}  {(r['subject'] or '')[:60]}")
    print(f"-- {len(rows)} message(s) in {args.address.casefold()}")
    return 0
