"""`mailgate drill`: a continuity drill that harms no production mail (docs/continuity.md, Drill).

    mailgate drill [--rcpt ADDRESS]... [--timeout S] [--hold S] [--wait S] [--smtp HOST:PORT] [--json]
    mailgate drill status
    mailgate drill stop [--wait S]

For the drill recipients only (``--rcpt``, else ``[continuity] drill_recipients``), the running
gateway holds mail as in a continuity event, files it into their continuity mailboxes and replays
it when the drill ends; everyone else's mail flows as usual (gateway/continuity/drill.py). The
CLI talks to the gateway as `mailgate continuity start` does (commands queued in the spool's
``continuity_commands``, applied within one engine tick), sends one test message per drill
recipient through the gateway's own SMTP listener, and waits for each phase in the spool:

- held: the message is on hold with ``hold_reason='drill'``;
- visible in webmail: its row is in the recipient's inbox (spool.mailbox.get_message, what the
  webmail reads) with its bytes;
- replayed: after the drill's end, the recipient is ``delivered`` after one attempt (once).

Then it ends the drill (always, also after a failure or Ctrl-C) and prints the report: detection
(skipped: a drill starts the hold itself), hold and visible (seconds from the gateway's 250 to
the hold and the mailbox row), replay (seconds from the release to the downstream's 250). Each
phase is audited in ``webmail_audit`` (``drill_held``, ``drill_visible``, ``drill_replayed``,
``drill_report``, actor ``cli``); the gateway audits ``drill_start`` and ``drill_end``.
Both backends: the CLI goes through the spool's console, continuity and mailbox verbs on one
connection of its own (gateway.cli_backend.on_console; on PostgreSQL a plain connection, not a
node). There the continuity leader applies the commands (any gateway's listener takes the test
mail, any node's queue manager may claim it); the other nodes hold the drill's recipients from
their next tick on, so the CLI waits one ``continuity.tick`` (and a margin) before it sends.
Exit status: 0 every phase passed within ``--timeout``; 1 a phase failed or timed out, the drill
was refused (a continuity event is on, another drill runs) or superseded by a real event, or the
PostgreSQL spool cannot be reached; 2 usage or configuration error.
"""
from __future__ import annotations

import asyncio
import json
import re
import smtplib
import sys
import time
import uuid
from email.utils import format_datetime, localtime

from gateway import cli_backend
from gateway import config_checks as checks
from spool import drill as drills

ACTOR = "cli"
POLL = 0.1          # seconds between looks at the spool
#: Seconds added to continuity.tick before the test mail goes out on a shared spool: every node's
#: queue manager holds the drill's recipients after its next re-read of the running drill.
FOLLOW_MARGIN = 0.5


def add_parser(sub) -> None:
    """Register ``drill`` on the top-level subparsers of gateway.cli."""
    d = sub.add_parser("drill", help="continuity drill for test recipients only")
    d.add_argument("action", nargs="?", choices=["run", "status", "stop"], default="run")
    d.add_argument("--rcpt", action="append", default=[], help="drill recipient (repeatable)")
    d.add_argument("--timeout", type=float, default=120.0, help="seconds every phase must pass within")
    d.add_argument("--hold", type=float, default=0.0,
                   help="seconds to keep holding once the test mail is visible (look in the webmail)")
    d.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the gateway to apply a command")
    d.add_argument("--smtp", default="", help="HOST:PORT of the gateway's SMTP listener (default: smtp.listen[0])")
    d.add_argument("--json", action="store_true", help="print the report as JSON")


def run(cfg, args) -> int:
    """`mailgate drill [run|status|stop]` on either backend; the exit status."""
    target = None
    if args.action == "run":
        if cfg.continuity.mode == "off":
            return _usage("the continuity engine is off (continuity.mode = \"off\"): nothing runs a drill")
        addresses = args.rcpt or cfg.continuity.drill_recipients
        if not addresses:
            return _usage("no drill recipient: give --rcpt ADDRESS or set [continuity] drill_recipients")
        try:
            keys = list(dict.fromkeys(checks.drill_recipient(a) for a in addresses))
            host, port = _smtp_target(cfg, args.smtp)
        except ValueError as e:
            return _usage(str(e))
        outside = checks.drill_domains(cfg, keys)
        if outside:
            return _usage(f"{', '.join(outside)}: not in relay.accepted_domains (a drill holds only mail for Exchange)")
        target = (keys, host, port)
    try:
        return cli_backend.on_console(cfg, _run, cfg, args, target,
                                      read_only=args.action == "status")
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1


async def _run(sp, cfg, args, target) -> int:
    if args.action == "status":
        return await _status(sp)
    if args.action == "stop":
        d = await sp.running_drill()
        if d is None:
            print("no drill is running")
            return 1
        result = await _command(sp, "drill-end", d["id"], args.wait)
        print(result)
        return 0 if result.startswith("ok") else 1
    return await _drill(sp, cfg, args, *target)


async def _status(sp) -> int:
    from gateway.cli import fmt_time
    d = await sp.running_drill()
    print(f"drill:     {d['id']} for {', '.join(d['recipients'])}, since {fmt_time(d['started_at'])}"
          if d else "drill:     none running")
    print(f"held:      {await sp.count_drill_held()} message(s) on drill hold")
    for r in await sp.recent_drills(5):
        print(f"  {fmt_time(r['requested_at'])}  {r['id']}  {r['state']:<9} {r['end_reason'][:100]}")
    return 0


def _usage(msg: str) -> int:
    print(f"mailgate drill: {msg}", file=sys.stderr)
    return 2


async def _drill(sp, cfg, args, keys: list[str], host: str, port: int) -> int:
    import getpass
    drill_id = drills.new_drill_id()
    report = {"drill": drill_id, "recipients": keys, "detection": "skipped", "phases": {},
              "result": "FAIL", "why": ""}
    t0 = time.monotonic()
    deadline = t0 + args.timeout
    await sp.request_drill(drill_id, keys, getpass.getuser())
    result = await _command(sp, "drill-start", drill_id, args.wait)
    report["start"] = result
    if not result.startswith("ok"):
        # the gateway may still pick the command up later: it then finds the drill refused
        await sp.cancel_drill(drill_id, f"not started: {result}")
        report["why"] = result
        return _print(report, args.json)
    sent: dict[str, str] = {}                    # mailbox key -> queue ID
    try:
        if cli_backend.is_postgresql(cfg):       # the other nodes follow within one tick
            await asyncio.sleep(cfg.continuity.tick + FOLLOW_MARGIN)
        sent = await asyncio.to_thread(_send, cfg, host, port, drill_id, keys, report)
        if sent:
            await _wait_phases(sp, drill_id, sent, ("held", "visible"), deadline, report)
            if _passed(report, sent, ("held", "visible")) and args.hold > 0:
                await _sleep_while_running(sp, drill_id, args.hold)
    except (KeyboardInterrupt, asyncio.CancelledError):   # Ctrl-C: asyncio.run cancels us
        report["why"] = "interrupted"
    finally:
        end = await _command(sp, "drill-end", drill_id, args.wait)
        report["end"] = end
    row = await sp.get_drill(drill_id)
    if row["end_reason"].startswith("superseded"):
        report["why"] = (f"{row['end_reason']}: the drill ended, its held mail is replayed with the "
                         "event's")
    elif sent and row["state"] == "ended" and not report["why"]:
        if not end.startswith("ok"):              # the gateway ended it: drill_max_duration
            report["note"] = row["end_reason"]
        await _wait_phases(sp, drill_id, sent, ("replayed",), deadline, report)
    ok = (bool(sent) and len(sent) == len(keys) and not report["why"]
          and _passed(report, sent, ("held", "visible", "replayed")))
    report["result"] = "PASS" if ok else "FAIL"
    if not ok and not report["why"]:
        report["why"] = f"a phase did not pass within --timeout {args.timeout:g} s"
    report["total_seconds"] = round(time.monotonic() - t0, 3)
    await sp.drill_audit(
        "drill_report", drill_id, actor=ACTOR, result="ok" if ok else "failed",
        detail=json.dumps({k: report[k] for k in ("phases", "result", "why", "total_seconds")})[:1800])
    return _print(report, args.json)


def _smtp_target(cfg, spec: str) -> tuple[str, int]:
    from gateway.config import parse_listen
    host, port = parse_listen(spec or cfg.smtp.listen[0])
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host), port


async def _command(sp, command: str, drill_id: str, wait: float) -> str:
    """Queue a drill command for the running gateway (its leader); its result, or why there is
    none."""
    cid = await sp.queue_command(command, drill_id, ACTOR)
    end = time.monotonic() + wait
    while time.monotonic() < end:
        row = await sp.get_command(cid)
        if row["done_at"] is not None:
            return row["result"]
        await asyncio.sleep(POLL)
    return f"not applied: the gateway did not answer within {wait:g} s (is it running?)"


def _send(cfg, host: str, port: int, drill_id: str, keys: list[str], report: dict) -> dict[str, str]:
    """One test message per drill recipient through the gateway's SMTP listener; {key: queue ID}
    of the ones it accepted (a refusal is in the report's phases as ``sent``)."""
    out = {}
    hostname = cfg.server.hostname
    try:
        with smtplib.SMTP(host, port, local_hostname=hostname, timeout=30) as c:
            c.ehlo()
            for i, key in enumerate(keys):
                phases = report["phases"].setdefault(key, {})
                msgid = f"<{drill_id}.{i}.{uuid.uuid4().hex[:8]}@{hostname}>"
                data = (f"From: mailgate drill <drill@{hostname}>\r\nTo: <{key}>\r\n"
                        f"Subject: [mailgate drill {drill_id}] continuity drill test message\r\n"
                        f"Date: {format_datetime(localtime())}\r\nMessage-ID: {msgid}\r\n"
                        f"X-Mailgate-Drill: {drill_id}\r\nMIME-Version: 1.0\r\n"
                        "Content-Type: text/plain; charset=utf-8\r\n\r\n"
                        f"This is a continuity drill ({drill_id}) of the mail gateway {hostname}.\r\n"
                        "It was held, shown in the continuity webmail, then delivered. No action needed.\r\n")
                code, reply = c.mail(f"drill@{hostname}")
                if code == 250:
                    code, reply = c.rcpt(key)
                if code in (250, 251):
                    code, reply = c.data(data.encode())
                text = reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
                m = re.search(r"queued as (\S+)", text)
                if code == 250 and m:
                    out[key] = m.group(1)
                    phases["sent"] = {"ok": True, "queue_id": m.group(1)}
                else:
                    phases["sent"] = {"ok": False, "detail": f"{code} {text}"[:300]}
                    c.rset()
    except (OSError, smtplib.SMTPException) as e:
        report["why"] = f"cannot send the test message to {host}:{port}: {e}"
    return out


async def _phase(sp, drill_id: str, key: str, qid: str, name: str) -> dict | None:
    """The phase ``name`` of the test message ``qid`` for ``key`` if it has passed: {"ok": True,
    "seconds": ...} (held / visible: from the 250 to the hold and the mailbox row; replayed:
    from the release to the downstream's 250), or a failure dict, or None (not yet). Read
    through the spool's verbs (drill_message; the mailbox row as the webmail reads it)."""
    m = await sp.drill_message(qid, key)
    if m is None:
        return {"ok": False, "detail": "the message is gone from the queue"}
    if name == "held":
        if m["state"] == "hold" and m["hold_reason"] == drills.DRILL_HOLD:
            return {"ok": True, "seconds": round(m["held_at"] - m["arrived_at"], 3)}
        if m["state"] in ("delivered", "bounced") or m["released_at"] is not None:
            return {"ok": False, "detail": f"not held by the drill: {m['state']}"}
        return None
    if name == "visible":
        row = m["inbox"]
        if row is None:
            return None
        shown = await sp.get_mailbox_message(key, row["id"], with_data=True, folder="inbox",
                                             include_deleted=False)
        if shown is None or not shown.get("data"):
            return None
        return {"ok": True, "seconds": round(row["filed_at"] - m["arrived_at"], 3), "mailbox_id": row["id"]}
    r = m["rcpt"]
    if r["state"] == "delivered" and m["released_at"] is not None:
        once = r["attempts"] == 1 and m["replay_id"] == drill_id
        return {"ok": once, "seconds": round(r["updated_at"] - m["released_at"], 3),
                "attempts": r["attempts"], "relay": r["remote_host"]}
    if r["state"] == "bounced":
        return {"ok": False, "detail": "bounced"}
    return None


async def _wait_phases(sp, drill_id: str, sent: dict[str, str], names: tuple, deadline: float,
                       report: dict) -> None:
    """Poll the spool until every ``names`` phase of every sent message passed or failed, or
    ``deadline`` (monotonic); each outcome is audited once (actor cli)."""
    todo = {(k, n) for k in sent for n in names}
    while todo:
        for key, name in sorted(todo):
            got = await _phase(sp, drill_id, key, sent[key], name)
            if got is None:
                continue
            todo.discard((key, name))
            report["phases"][key][name] = got
            await _audit_phase(sp, drill_id, key, name, got)
        if not todo or time.monotonic() >= deadline:
            break
        if (await sp.get_drill(drill_id))["state"] != "running" and "replayed" not in names:
            break                                   # superseded by an event, ended by the gateway
        await asyncio.sleep(POLL)
    for key, name in sorted(todo):
        got = {"ok": False, "detail": "timed out"}
        report["phases"][key][name] = got
        await _audit_phase(sp, drill_id, key, name, got)


async def _audit_phase(sp, drill_id, key, name, got) -> None:
    detail = " ".join(f"{k}={v}" for k, v in got.items() if k != "ok")
    await sp.drill_audit(f"drill_{name}", drill_id, actor=ACTOR, address=key,
                         result="ok" if got["ok"] else "failed", detail=detail)


def _passed(report, sent, names) -> bool:
    return all(report["phases"][k].get(n, {}).get("ok") for k in sent for n in names)


async def _sleep_while_running(sp, drill_id: str, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end and (await sp.get_drill(drill_id))["state"] == "running":
        await asyncio.sleep(min(POLL * 5, max(end - time.monotonic(), 0)))


def _print(report: dict, as_json: bool) -> int:
    ok = report["result"] == "PASS"
    if as_json:
        print(json.dumps(report, indent=1))
        return 0 if ok else 1
    print(f"drill {report['drill']} for {', '.join(report['recipients'])}")
    print("  detection            skipped (a drill starts the hold itself)")
    for key, ph in report["phases"].items():
        qid = ph.get("sent", {}).get("queue_id", "-")
        print(f"  {key} (queue ID {qid})")
        for name, label in (("sent", "sent"), ("held", "hold"), ("visible", "visible in webmail"),
                            ("replayed", "replay")):
            p = ph.get(name)
            if p is None or (name == "sent" and p["ok"]):
                continue
            shown = f"{p['seconds']:.3f} s" if "seconds" in p else ""
            what = "ok  " if p["ok"] else "FAIL"
            extra = p.get("detail", "") or (f"delivered once by {p['relay']}" if name == "replayed" and p["ok"]
                                            else "")
            print(f"    {label:<19}{what} {shown:>10}  {extra}".rstrip())
    if "total_seconds" in report:
        print(f"  total                {report['total_seconds']:.3f} s")
    if report.get("note"):
        print(f"  note: {report['note']}")
    print(f"result: {report['result']}" + (f" ({report['why']})" if report["why"] else ""))
    return 0 if ok else 1
