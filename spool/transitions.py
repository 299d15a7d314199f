"""Moving messages between queue states, and recording delivery outcomes.

Each function runs inside a write transaction opened by the caller, and each move is one guarded
``UPDATE ... WHERE queue_id=? AND state=?`` so two actors (a delivery worker and an operator, or
two gateways on one spool) can never both move the same message. Reads and writes
``messages.state``, ``recipients.state``; deletes ``bodies`` rows of finished messages, except
the bytes a journal entry refers to (spool.journal: they go with its last entry, spool.mailbox.purge).
"""
from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass

from spool import claims as _claims
from spool.states import TRANSITIONS, Claim, InvalidTransition, QueueState, RcptState, check_transition


def move(conn: sqlite3.Connection, queue_id: str, src: QueueState | tuple[QueueState, ...],
         dst: QueueState, *, next_attempt_at: float | None = None, error: str | None = None,
         now: float | None = None, token: int | None = None) -> QueueState:
    """Move ``queue_id`` from ``src`` (one state or any of several) to ``dst``; return the state
    it left. Raises InvalidTransition if the move is not allowed or the message is elsewhere.
    With ``token`` (a claim's), the move is made only if the message is still ``active`` under
    that claim; else StaleClaim (an InvalidTransition) and nothing changes."""
    now = time.time() if now is None else now
    if token is not None:
        _claims.check_current(conn, queue_id, token)
    srcs = (src,) if isinstance(src, QueueState) else tuple(src)
    row = conn.execute("SELECT state FROM messages WHERE queue_id=?", (queue_id,)).fetchone()
    if row is None:
        raise InvalidTransition(queue_id, srcs[0], dst, None)
    actual = QueueState(row["state"])
    if actual not in srcs or dst not in TRANSITIONS[actual]:
        raise InvalidTransition(queue_id, actual if actual in srcs else srcs[0], dst, actual.value)
    sets, args = ["state=?", "updated_at=?"], [dst.value, now]
    if next_attempt_at is not None:
        sets.append("next_attempt_at=?")
        args.append(next_attempt_at)
    if error is not None:
        sets.append("last_error=?")
        args.append(error)
    cur = conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE queue_id=? AND state=?",
                       (*args, queue_id, actual.value))
    if cur.rowcount != 1:  # pragma: no cover - guarded by the write lock
        raise InvalidTransition(queue_id, actual, dst, None)
    return actual


def claim_due(conn: sqlite3.Connection, limit: int, now: float | None = None,
              ttl: float = _claims.CLAIM_TTL, owner: str = "") -> list[Claim]:
    """Move up to ``limit`` messages that are due (incoming, or deferred whose next attempt time
    has come) to ``active``, oldest first; return their claims (queue IDs carrying a fencing
    token: spool.claims.claim)."""
    return _claims.claim(conn, limit, ttl=ttl, owner=owner, now=now)


@dataclass(frozen=True)
class RcptOutcome:
    """The outcome of one attempt for one recipient (``idx`` is its envelope position)."""

    idx: int
    state: RcptState          # DELIVERED, BOUNCED, or PENDING for a temporary failure
    code: int | None = None   # SMTP reply code, None if no reply (connection failure)
    text: str = ""
    remote_host: str = ""


def record_attempt(conn: sqlite3.Connection, queue_id: str, outcomes: list[RcptOutcome],
                   next_attempt_at: float, now: float | None = None, hold: bool = False,
                   hold_reason: str = "continuity", token: int | None = None) -> QueueState:
    """Record one delivery attempt of an ``active`` message and move it on.

    Every recipient named in ``outcomes`` gets its state; the message then goes to ``delivered``
    if no recipient is pending or bounced, ``bounced`` if none is pending and some bounced, else
    ``deferred`` with ``next_attempt_at`` (unix seconds), or ``hold`` (reason 'continuity') if
    ``hold`` is set: a continuity event holds what is left for the downstream (``hold_reason``
    'continuity'; 'drill' for a drill's recipients: spool.drill). The body is deleted once the message is
    finished, unless a continuity-mailbox entry refers to it and no held copy of it exists
    (a journal entry: spool.journal). Returns the new state. Raises InvalidTransition if the message is not active.
    With ``token``, nothing is written unless the message is still active under that claim
    (StaleClaim otherwise).
    """
    now = time.time() if now is None else now
    if token is not None:
        _claims.check_current(conn, queue_id, token)
    conn.executemany(
        "UPDATE recipients SET state=?, attempts=attempts+1, reply_code=?, reply_text=?, remote_host=?,"
        " updated_at=? WHERE queue_id=? AND idx=? AND state='pending'",
        [(o.state.value, o.code, o.text[:1000], o.remote_host, now, queue_id, o.idx) for o in outcomes])
    counts = dict(conn.execute(
        "SELECT state, count(*) FROM recipients WHERE queue_id=? GROUP BY state", (queue_id,)).fetchall())
    if counts.get(RcptState.PENDING.value):
        dst = QueueState.HOLD if hold else QueueState.DEFERRED
    elif counts.get(RcptState.BOUNCED.value):
        dst = QueueState.BOUNCED
    else:
        dst = QueueState.DELIVERED
    errors = [f"{o.code or ''} {o.text}".strip() for o in outcomes if o.state is not RcptState.DELIVERED]
    move(conn, queue_id, QueueState.ACTIVE, dst, next_attempt_at=next_attempt_at,
         error=(errors[0][:500] if errors else ""), now=now)
    if dst is QueueState.HOLD:
        conn.execute("UPDATE messages SET hold_reason=?, held_at=? WHERE queue_id=?", (hold_reason, now, queue_id))
    if outcomes:    # some recipient was tried (a refused connection counts: the backoff doubles)
        conn.execute("UPDATE messages SET attempts=attempts+1 WHERE queue_id=?", (queue_id,))
    if dst.terminal:
        conn.execute("DELETE FROM bodies WHERE queue_id=? AND NOT (EXISTS (SELECT 1 FROM mailbox_messages"
                     " WHERE queue_id=?) AND NOT EXISTS (SELECT 1 FROM mailbox_bodies WHERE queue_id=?))",
                     (queue_id, queue_id, queue_id))
    return dst


def record_delivered(conn: sqlite3.Connection, queue_id: str, outcomes: list[RcptOutcome],
                     now: float | None = None, token: int | None = None) -> int:
    """Record the recipients of an attempt still in progress that were already delivered, as soon
    as their part of the attempt is over (a kill now does not send them again). Only DELIVERED
    outcomes of recipients still ``pending`` of an ``active`` message are written; the message
    does not move (``record_attempt`` ends the attempt). Returns how many recipients changed.
    With ``token``, nothing is written unless the message is still active under that claim
    (StaleClaim otherwise)."""
    now = time.time() if now is None else now
    if token is not None:
        _claims.check_current(conn, queue_id, token)
    rows = [(o.state.value, o.code, o.text[:1000], o.remote_host, now, queue_id, o.idx)
            for o in outcomes if o.state is RcptState.DELIVERED]
    if not rows:
        return 0
    cur = conn.executemany(
        "UPDATE recipients SET state=?, attempts=attempts+1, reply_code=?, reply_text=?, remote_host=?,"
        " updated_at=? WHERE queue_id=? AND idx=? AND state='pending' AND EXISTS (SELECT 1 FROM"
        " messages m WHERE m.queue_id=recipients.queue_id AND m.state='active')", rows)
    return cur.rowcount


def delete_message(conn: sqlite3.Connection, queue_id: str) -> bool:
    """Remove a message and its recipients and bytes (postsuper -d). Refuses an ``active`` one
    (a delivery is in flight: InvalidTransition). Returns False if there was no such message."""
    row = conn.execute("SELECT state FROM messages WHERE queue_id=?", (queue_id,)).fetchone()
    if row is None:
        return False
    if row["state"] == QueueState.ACTIVE.value:
        raise InvalidTransition(queue_id, QueueState.ACTIVE, QueueState.ACTIVE, "active")
    conn.execute("DELETE FROM messages WHERE queue_id=?", (queue_id,))
    return True


def flush(conn: sqlite3.Connection, queue_id: str | None = None, now: float | None = None) -> int:
    """Make deferred mail due now (postqueue -f / -i); return how many messages were touched."""
    now = time.time() if now is None else now
    if queue_id is None:
        cur = conn.execute("UPDATE messages SET next_attempt_at=?, updated_at=? WHERE state='deferred'",
                           (now, now))
    else:
        cur = conn.execute("UPDATE messages SET next_attempt_at=?, updated_at=? WHERE state IN "
                           "('deferred','incoming') AND queue_id=?", (now, now, queue_id))
    return cur.rowcount


PURGE_BATCH = 5000   # messages deleted per purge_finished call (one group commit each)


def purge_finished(conn: sqlite3.Connection, before: float, limit: int = PURGE_BATCH) -> int:
    """Delete up to ``limit`` delivered and bounced messages last changed before ``before``
    (unix seconds), oldest first, with their recipients; a message a continuity-mailbox entry
    still refers to is kept (with the bytes of a journal entry) until the mailbox purge has
    removed its entries. Returns how many were deleted: call again while it returns ``limit``
    (each call is one short write, so intake's commits interleave with a large purge). The
    candidates come from the partial index messages_finished (migration 0012)."""
    return conn.execute(
        "DELETE FROM messages WHERE seq IN (SELECT seq FROM messages INDEXED BY messages_finished"
        " WHERE state IN ('delivered','bounced') AND updated_at < ?"
        " AND NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.queue_id = messages.queue_id)"
        " ORDER BY updated_at LIMIT ?)", (before, limit)).rowcount


__all__ = ["move", "claim_due", "RcptOutcome", "record_attempt", "record_delivered",
           "delete_message", "flush",
           "purge_finished", "PURGE_BATCH", "check_transition"]
