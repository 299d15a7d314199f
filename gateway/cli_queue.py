"""`mailgate queue ...`: the postqueue/postsuper of mailgate, working on the spool database.

Each change is one ``BEGIN IMMEDIATE`` transaction with a state-guarded UPDATE (spool.transitions),
so it is safe beside a running gateway: a message being delivered (``active``) is refused with a
clear message rather than changed under the queue manager's feet. ``hold`` is an operator hold
(``hold_reason='operator'``, never released by a continuity replay; a message on continuity hold
becomes an operator hold); ``release`` adds the time on hold to ``held_seconds`` (it does not count
against the queue lifetime): spool.continuity.operator_hold / operator_release.

On a PostgreSQL spool (``spool.backend``) ``list`` and ``show`` read the shared queue through one
read-only connection (spool.pg.inspect); the changes run with the same semantics, messages and
exit statuses, each one short transaction on one plain connection (spool.pg.admin_ops; an
``active`` message is refused: a node holds its claim). Neither registers the CLI as a node, and
neither needs a running gateway. Exit 1 if the database cannot be reached (gateway.cli_backend).
"""
from __future__ import annotations

import json
import sys
import time

from gateway import cli_backend
from spool import QueueState, db, query, transitions
from spool import continuity as hold_store
from spool.states import InvalidTransition


def run(cfg, args) -> int:
    if cli_backend.is_postgresql(cfg):
        try:
            if args.qcmd in _CHANGES:
                return _CHANGES[args.qcmd](_PgChanges(cfg), args)
            return _on_postgresql(cfg, args)
        except cli_backend.PgUnavailable as e:
            print(f"mailgate: {e}", file=sys.stderr)
            return 1
    conn = db.connect(cfg.spool_path)
    try:
        if args.qcmd in _CHANGES:
            return _CHANGES[args.qcmd](_SqliteChanges(conn), args)
        return _COMMANDS[args.qcmd](conn, args)
    finally:
        conn.close()


class _SqliteChanges:
    """The queue's changes on the SQLite spool, each one ``BEGIN IMMEDIATE`` transaction."""

    def __init__(self, conn):
        self.conn = conn

    def hold(self, queue_id: str) -> None:
        db.transaction(self.conn, lambda: hold_store.operator_hold(self.conn, queue_id, time.time()))

    def release(self, queue_id: str) -> None:
        db.transaction(self.conn, lambda: hold_store.operator_release(self.conn, queue_id, time.time()))

    def delete(self, queue_id: str) -> bool:
        return db.transaction(self.conn, lambda: transitions.delete_message(self.conn, queue_id))

    def flush(self, queue_id: str | None) -> int:
        return db.transaction(self.conn, lambda: transitions.flush(self.conn, queue_id))


class _PgChanges:
    """The same changes on a PostgreSQL spool (spool.pg.admin_ops), one connection each.
    Raises cli_backend.PgUnavailable."""

    def __init__(self, cfg):
        self.cfg = cfg

    def _run(self, verb: str, *args):
        from spool.pg import admin_ops  # psycopg only on a PostgreSQL spool
        return cli_backend.on_postgresql(self.cfg, getattr(admin_ops, verb), *args, read_only=False)

    def hold(self, queue_id: str) -> None:
        self._run("hold", queue_id)

    def release(self, queue_id: str) -> None:
        self._run("release", queue_id)

    def delete(self, queue_id: str) -> bool:
        return self._run("delete", queue_id)

    def flush(self, queue_id: str | None) -> int:
        return self._run("flush", queue_id)


def _on_postgresql(cfg, args) -> int:
    """``queue list`` / ``queue show`` on a PostgreSQL spool (spool.pg.inspect), read-only.
    Raises cli_backend.PgUnavailable."""
    from spool.pg import inspect

    async def read(conn):
        if args.qcmd == "show":
            return await inspect.get_message(conn, args.queue_id, True), None
        states = tuple(QueueState) if args.all else None
        return await inspect.list_messages(conn, states), await inspect.count_by_state(conn)
    got, counts = cli_backend.on_postgresql(cfg, read)
    if args.qcmd == "show":
        return _print_show(args.queue_id, got)
    return _print_list(got, counts, args.json)


def _list(conn, args) -> int:
    states = tuple(QueueState) if args.all else None
    msgs = query.list_messages(conn, states)
    return _print_list(msgs, None if args.json else query.count_by_state(conn), args.json)


def _print_list(msgs, counts, as_json: bool) -> int:
    """Print ``msgs`` (StoredMessage, either backend) as a listing or JSON; ``counts`` per state
    closes the listing."""
    from gateway.cli import fmt_time
    if as_json:
        print(json.dumps([{
            "queue_id": m.queue_id, "state": m.state.value, "mail_from": m.mail_from,
            "size": m.size, "arrived_at": m.arrived_at, "attempts": m.attempts,
            "last_error": m.last_error,
            "recipients": [{"address": r.address, "state": r.state.value} for r in m.recipients],
        } for m in msgs], indent=1))
        return 0
    # a space after the longest queue ID (14 characters, 16 on a cluster or with workers)
    w = max((len(m.queue_id) for m in msgs), default=14) + 1
    for m in msgs:
        print(f"{m.queue_id:<{w}}{m.state.value:<10}{m.size:>9} {fmt_time(m.arrived_at)}  "
              f"<{m.mail_from}>")
        if m.last_error:
            print(f"{'':{w + 10}}({m.last_error[:200]})")
        for r in m.recipients:
            print(f"{'':{w + 10}}{r.address}  [{r.state.value}]")
    print("-- " + ", ".join(f"{k}: {v}" for k, v in counts.items() if v or k in ("incoming", "deferred", "hold")))
    return 0


def _show(conn, args) -> int:
    return _print_show(args.queue_id, query.get_message(conn, args.queue_id, with_data=True))


def _print_show(queue_id: str, m) -> int:
    """Print message ``m`` (StoredMessage with its bytes, either backend); 1 if it is None."""
    from gateway.cli import fmt_time
    if m is None:
        print(f"mailgate: {queue_id}: no such message", file=sys.stderr)
        return 1
    print(f"queue_id:     {m.queue_id}\nstate:        {m.state.value}\nmail_from:    <{m.mail_from}>\n"
          f"size:         {m.size}\narrived:      {fmt_time(m.arrived_at)}\nattempts:     {m.attempts}\n"
          f"next_attempt: {fmt_time(m.next_attempt_at)}\nclient:       {m.client_addr} ({m.client_helo})\n"
          f"last_error:   {m.last_error}")
    for r in m.recipients:
        print(f"rcpt:         {r.address} [{r.state.value}] attempts={r.attempts} "
              f"{r.reply_code or ''} {r.reply_text} {r.remote_host}".rstrip())
    if m.data is not None:
        head = m.data.split(b"\r\n\r\n", 1)[0]
        print("\n" + head.decode("utf-8", "replace"))
    return 0


def _move(verb, done, dst):
    def cmd(spool, args) -> int:
        try:
            getattr(spool, verb)(args.queue_id)
        except InvalidTransition as e:
            print(f"mailgate: {args.queue_id}: " + ("no such message" if e.actual is None
                  else f"cannot {verb}: message is {e.actual}"), file=sys.stderr)
            return 1
        print(f"{args.queue_id}: {done} ({dst.value})")
        return 0
    return cmd


def _delete(spool, args) -> int:
    try:
        found = spool.delete(args.queue_id)
    except InvalidTransition:
        print(f"mailgate: {args.queue_id}: being delivered right now; try again in a moment",
              file=sys.stderr)
        return 1
    if not found:
        print(f"mailgate: {args.queue_id}: no such message", file=sys.stderr)
        return 1
    print(f"{args.queue_id}: deleted")
    return 0


def _flush(spool, args) -> int:
    n = spool.flush(args.queue_id)
    print(f"flushed {n} message(s)")
    return 0 if n or args.queue_id is None else 1


_COMMANDS = {"list": _list, "show": _show}
#: The changes, written once against either backend's _SqliteChanges / _PgChanges.
_CHANGES = {
    "delete": _delete, "flush": _flush,
    "hold": _move("hold", "held", QueueState.HOLD),
    "release": _move("release", "released", QueueState.INCOMING),
}
