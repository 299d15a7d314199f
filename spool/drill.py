"""Spool side of continuity drills (`mailgate drill`, migration 0011).

A drill holds the mail of a few drill recipients (mailbox keys, spool.mailbox / policies.rcpt_address)
as a continuity event would: the queue manager leaves those recipients pending and puts the message
on hold with ``hold_reason='drill'`` (filed into the recipients' continuity mailboxes in the same
transaction); every other recipient is delivered as usual. When the drill ends its held messages
are released to ``incoming`` with ``replay_id`` = the drill's id; when a real continuity event
starts during a drill they become continuity holds (``hold_reason='continuity'``) and are replayed
with the event's mail. A ``drills`` row records each drill; its start, end and phases are audited
in ``webmail_audit`` (actions ``drill_*``, actor ``cli`` or ``drill``).

Functions take a connection; the ones that write run inside the caller's write transaction.
Times are unix seconds (wall clock).
"""
from __future__ import annotations

import json
import secrets
import sqlite3
import time

from spool import accounts

#: hold_reason of a message held by a drill.
DRILL_HOLD = "drill"


def new_drill_id(now: float | None = None) -> str:
    """A fresh drill id, "DR-YYYYmmdd-HHMMSS-xxxx" (UTC; four random hex digits)."""
    now = time.time() if now is None else now
    return "DR-" + time.strftime("%Y%m%d-%H%M%S", time.gmtime(now)) + "-" + secrets.token_hex(2)


def request(conn: sqlite3.Connection, drill_id: str, recipients: list[str], actor: str,
            now: float | None = None) -> None:
    """Record a drill asked for by ``actor`` for ``recipients`` (mailbox keys), state
    ``requested``; the gateway starts it when it applies the drill-start command."""
    now = time.time() if now is None else now
    conn.execute("INSERT INTO drills (id, recipients, actor, state, requested_at) VALUES (?,?,?,?,?)",
                 (drill_id, json.dumps(recipients), actor, "requested", now))


def get(conn: sqlite3.Connection, drill_id: str) -> dict | None:
    """The drills row as a dict (``recipients`` decoded to a list), or None."""
    row = conn.execute("SELECT * FROM drills WHERE id=?", (drill_id,)).fetchone()
    return _decode(row)


def running(conn: sqlite3.Connection) -> dict | None:
    """The drill that is holding mail now (at most one), or None."""
    return _decode(conn.execute("SELECT * FROM drills WHERE state='running'").fetchone())


def _decode(row) -> dict | None:
    if row is None:
        return None
    d = dict(row)
    d["recipients"] = json.loads(d["recipients"])
    return d


def start(conn: sqlite3.Connection, drill_id: str, now: float | None = None) -> None:
    """``requested`` → ``running``. Raises ValueError if the drill is not requested, or
    sqlite3.IntegrityError if another drill is running (drills_one_running)."""
    now = time.time() if now is None else now
    if conn.execute("UPDATE drills SET state='running', started_at=? WHERE id=? AND state='requested'",
                    (now, drill_id)).rowcount != 1:
        raise ValueError(f"drill {drill_id} is not waiting to start")


def refuse(conn: sqlite3.Connection, drill_id: str, why: str, now: float | None = None) -> None:
    """A requested drill the gateway would not start (``end_reason`` says why)."""
    now = time.time() if now is None else now
    conn.execute("UPDATE drills SET state='refused', ended_at=?, end_reason=? WHERE id=? AND state='requested'",
                 (now, why, drill_id))


def end(conn: sqlite3.Connection, drill_id: str, why: str, *, to_continuity: bool = False,
        now: float | None = None) -> int:
    """End a running drill: its held messages are released to ``incoming`` (due now, stamped
    ``replay_id`` = ``drill_id`` and ``released_at``, time on hold added to ``held_seconds``),
    or, with ``to_continuity`` (a real event began), turned into continuity holds for the event's
    replay. Returns how many messages; 0 and nothing done if the drill is not running."""
    now = time.time() if now is None else now
    if conn.execute("UPDATE drills SET state='ended', ended_at=?, end_reason=? WHERE id=? AND state='running'",
                    (now, why, drill_id)).rowcount != 1:
        return 0
    n = release_held(conn, drill_id, to_continuity=to_continuity, now=now)
    conn.execute("UPDATE drills SET released=? WHERE id=?", (n, drill_id))
    return n


def release_held(conn: sqlite3.Connection, replay_id: str, *, to_continuity: bool = False,
                 now: float | None = None) -> int:
    """Every message on drill hold: released (see ``end``) or, with ``to_continuity``, turned
    into a continuity hold (its hold goes on, its start is kept). Also used for drill holds left
    behind (a gateway stopped during a drill, an attempt recorded after its drill ended)."""
    now = time.time() if now is None else now
    if to_continuity:
        return conn.execute("UPDATE messages SET hold_reason='continuity', updated_at=? WHERE state='hold'"
                            " AND hold_reason=?", (now, DRILL_HOLD)).rowcount
    return conn.execute(
        "UPDATE messages SET state='incoming', hold_reason='', next_attempt_at=?, updated_at=?,"
        " held_seconds=held_seconds + max(0, ? - coalesce(held_at, ?)), held_at=NULL,"
        " replay_id=?, released_at=? WHERE state='hold' AND hold_reason=?",
        (now, now, now, now, replay_id, now, DRILL_HOLD)).rowcount


def count_held(conn: sqlite3.Connection) -> int:
    """Messages on drill hold now."""
    return conn.execute("SELECT count(*) FROM messages WHERE state='hold' AND hold_reason=?",
                        (DRILL_HOLD,)).fetchone()[0]


def audit(conn: sqlite3.Connection, action: str, drill_id: str, *, actor: str, address: str = "",
          result: str = "ok", detail: str = "", now: float | None = None) -> int:
    """One webmail_audit row for a drill (``action`` drill_start, drill_held, drill_visible,
    drill_replayed, drill_end, ...; ``detail`` starts with the drill's id). Returns its id."""
    return accounts.audit(conn, action, address=address, actor=actor, result=result,
                          detail=f"{drill_id} {detail}".strip(), now=now)


def recent(conn: sqlite3.Connection, limit: int = 5) -> list[dict]:
    """The newest ``limit`` drills rows (by requested_at), ``recipients`` decoded."""
    return [_decode(r) for r in conn.execute(
        "SELECT * FROM drills ORDER BY requested_at DESC, id DESC LIMIT ?", (limit,))]


def message_facts(conn: sqlite3.Connection, queue_id: str, mailbox: str) -> dict | None:
    """What `mailgate drill` watches of its test message ``queue_id`` for ``mailbox``: the
    message's state, hold_reason, replay_id, arrived_at, held_at, released_at (unix seconds or
    None), ``rcpt`` (its first recipient: state, attempts, updated_at, remote_host) and
    ``inbox`` ({id, filed_at} of its row in the mailbox's inbox, or None). None if the message
    is gone."""
    m = conn.execute("SELECT state, hold_reason, replay_id, arrived_at, held_at, released_at"
                     " FROM messages WHERE queue_id=?", (queue_id,)).fetchone()
    if m is None:
        return None
    out = dict(m)
    r = conn.execute("SELECT state, attempts, updated_at, remote_host FROM recipients"
                     " WHERE queue_id=? ORDER BY idx LIMIT 1", (queue_id,)).fetchone()
    out["rcpt"] = dict(r) if r else None
    row = conn.execute("SELECT id, filed_at FROM mailbox_messages WHERE mailbox=? AND queue_id=?"
                       " AND folder='inbox'", (mailbox, queue_id)).fetchone()
    out["inbox"] = dict(row) if row else None
    return out


def audit_rows(conn: sqlite3.Connection, drill_id: str) -> list[dict]:
    """The audit rows of one drill, oldest first."""
    return [dict(r) for r in conn.execute(
        "SELECT * FROM webmail_audit WHERE action LIKE 'drill%' AND (detail = ? OR detail LIKE ?)"
        " ORDER BY id", (drill_id, drill_id + " %"))]
