"""Queue states of a message and of each of its recipients, with the table of allowed moves.

Modelled on Postfix's queues (incoming, active, deferred, hold, corrupt) plus two terminal
states kept for the record (delivered, bounced) so that `mailgate queue show` can still explain
what happened to a message until it is purged.

Message states::

    incoming --> active --> delivered            (every recipient done)
                   |  \\--> bounced              (every recipient failed permanently / expired)
                   |   \\-> deferred --> active  (some recipient failed temporarily)
                   \\----> incoming             (crash recovery: active at start-up)
    incoming|deferred|active <--> hold          (operator or continuity event)
    any non-terminal --> corrupt                (unreadable; moved aside, never deleted)
"""
from __future__ import annotations

import enum


class QueueState(str, enum.Enum):
    INCOMING = "incoming"
    ACTIVE = "active"
    DEFERRED = "deferred"
    HOLD = "hold"
    DELIVERED = "delivered"
    BOUNCED = "bounced"
    CORRUPT = "corrupt"

    @property
    def terminal(self) -> bool:
        return self in (QueueState.DELIVERED, QueueState.BOUNCED)


class RcptState(str, enum.Enum):
    """Per-recipient outcome. A 5xx for one recipient never touches the others."""

    PENDING = "pending"      # not yet attempted, or to be retried
    DELIVERED = "delivered"  # the next hop answered 250 for it
    BOUNCED = "bounced"      # permanent failure (5xx, null MX, NXDOMAIN, expired); DSN sent


Q = QueueState
#: Allowed message-state transitions: {from: {to, ...}}.
TRANSITIONS: dict[QueueState, frozenset[QueueState]] = {
    Q.INCOMING: frozenset({Q.ACTIVE, Q.HOLD, Q.CORRUPT}),
    Q.ACTIVE: frozenset({Q.DELIVERED, Q.BOUNCED, Q.DEFERRED, Q.INCOMING, Q.HOLD, Q.CORRUPT}),
    Q.DEFERRED: frozenset({Q.ACTIVE, Q.HOLD, Q.INCOMING, Q.CORRUPT}),
    Q.HOLD: frozenset({Q.INCOMING, Q.CORRUPT}),
    Q.DELIVERED: frozenset(),
    Q.BOUNCED: frozenset(),
    Q.CORRUPT: frozenset({Q.HOLD}),
}


class InvalidTransition(Exception):
    """Raised when a move is not in TRANSITIONS, or the message was not in the expected state
    (another worker or an operator moved it first)."""

    def __init__(self, queue_id: str, src: QueueState | None, dst: QueueState, actual: str | None = None):
        self.queue_id, self.src, self.dst, self.actual = queue_id, src, dst, actual
        where = f"state {actual}" if actual else "no such message"
        super().__init__(f"{queue_id}: cannot move {src.value if src else '?'} -> {dst.value} ({where})")


def check_transition(src: QueueState, dst: QueueState) -> None:
    """Raise ValueError if src -> dst is not an allowed move."""
    if dst not in TRANSITIONS[src]:
        raise ValueError(f"transition {src.value} -> {dst.value} is not allowed")


class Claim(str):
    """A claimed message: the queue ID (a ``str``, so a list of claims reads as a list of queue
    IDs) carrying the claim's fencing ``token`` (an integer that only grows: a PostgreSQL
    sequence, or the SQLite spool's counter) and its ``expires_at`` (unix seconds on the
    storage's clock: PostgreSQL's, or the local one for SQLite). An outcome is written only
    while ``token`` is the message's current claim (see StaleClaim). ``size`` is the message's
    size in bytes when the claim read it (both spools' claims read it in the statement that
    selects the message, so the queue manager needs no read of its own before its memory
    budget), else None. ``message``: the claimed message itself with its bytes (a
    spool.query.StoredMessage), when the claim read it too (PostgreSQL, for a message of at most
    spool.pg.queue.CLAIM_INLINE_BYTES), else None; the queue manager takes it (and sets it back
    to None) when the delivery starts."""

    token: int
    expires_at: float
    size: int | None
    message: object | None

    def __new__(cls, queue_id: str, token: int, expires_at: float,
                size: int | None = None, message: object | None = None) -> "Claim":
        self = super().__new__(cls, queue_id)
        self.token, self.expires_at = int(token), float(expires_at)
        self.size = None if size is None else int(size)
        self.message = message
        return self

    @property
    def queue_id(self) -> str:
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Claim({self.queue_id!r}, token={self.token}, expires_at={self.expires_at:.3f})"


class StaleClaim(InvalidTransition):
    """A write under claim ``token`` of ``queue_id`` was refused because that claim is no longer
    the message's current one (it expired and was requeued, was taken by another node, or an
    operator moved the message). Nothing was written; the caller must not retry it."""

    def __init__(self, queue_id: str, token: int):
        Exception.__init__(self, f"{queue_id}: claim token {token} is no longer current")
        self.queue_id, self.token = queue_id, token
        self.src, self.dst, self.actual = QueueState.ACTIVE, QueueState.ACTIVE, None


class LeaseLost(Exception):
    """A fenced write was refused: ``holder`` no longer holds lease ``name`` at ``epoch`` (it
    expired, or another node took it with a higher epoch). Nothing was written."""

    def __init__(self, name: str, holder: str, epoch: int):
        super().__init__(f"lease {name!r} is not held by {holder!r} at epoch {epoch}")
        self.name, self.holder, self.epoch = name, holder, epoch
