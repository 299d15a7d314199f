"""The queue core both spool backends offer: the SQLite spool (spool.store.Spool, one node) and
the PostgreSQL spool (spool.pg.PgSpool, several nodes on one database).

``QueueSpool`` is a typing.Protocol: the gateway's delivery and intake code can be written
against it and run on either backend. Opening is backend-specific (``await Spool.open(path)``,
``await PgSpool.open(dsn, node=...)``); everything after that is these verbs.

Common rules:

- Times are unix seconds (float). Times handed *in* (``next_attempt_at``) are read as "that many
  seconds from now" on the caller's clock; the PostgreSQL backend re-anchors them on the
  database's clock, so nodes with skewed clocks schedule alike. Times handed *out* are on the
  storage's clock (PostgreSQL's, or the local one).
- A write is durable when its coroutine returns (the SQLite writer's ``synchronous=FULL``
  commit; PostgreSQL's COMMIT with ``synchronous_commit`` on). Concurrent callers' writes are
  group-committed: one transaction, each operation in its own savepoint.
- ``SpoolError`` (spool.store.SpoolError) means the storage failed: nothing of that write is
  durable; the caller answers 4xx (intake: 451 4.3.0, or 452 4.3.1 when ``full``) and may retry.
  Both backends recover by themselves when the storage is back.
- ``InvalidTransition`` means the message was not where the caller thought; ``StaleClaim`` (an
  InvalidTransition) means a write under a claim token that is no longer current was refused:
  nothing changed, the backend counted it in ``stale_claims``, and it must not be retried.
"""
from __future__ import annotations

from typing import Protocol, runtime_checkable

from spool.commit import NewMessage
from spool.query import StoredMessage
from spool.states import Claim, QueueState
from spool.transitions import RcptOutcome


@runtime_checkable
class QueueSpool(Protocol):
    """The queue verbs of a spool backend (see the module docstring for times and errors)."""

    #: This node's name (the owner written on its claims).
    node: str
    #: Writes refused so far because their claim token was stale.
    stale_claims: int
    #: True when several nodes share the storage (PostgreSQL): any node's queue manager returns
    #: expired claims to the queue (requeue_expired). False for the SQLite spool, whose one
    #: process requeues its interrupted deliveries when it opens the file.
    shared: bool

    async def close(self) -> None:
        """Finish the writes already queued, then release connections and threads."""

    def new_queue_id(self) -> str:
        """A queue ID for a message about to be committed, unique across every node sharing the
        storage (uppercase letters without vowels and digits; sorts by arrival time)."""

    async def commit(self, msg: NewMessage) -> str:
        """Store ``msg`` durably in ``msg.state`` (incoming); return its queue ID. Raises
        SpoolError (nothing stored), ValueError without recipients, or the backend's integrity
        error if the queue ID exists."""

    async def claim_due(self, limit: int, ttl: float = 60.0) -> list[Claim]:
        """Claim up to ``limit`` due messages (incoming, or deferred whose next attempt time has
        come on the storage's clock), oldest first, moving them to ``active`` for ``ttl``
        seconds. The claims are committed before this returns; two callers (or nodes) never get
        the same message. Each Claim is its queue ID carrying a token that only grows."""

    async def renew(self, claims: list[Claim], ttl: float = 60.0) -> list[Claim]:
        """Extend each claim still current to ``ttl`` seconds from now; return those renewed
        (with their new ``expires_at``). A claim missing from the result is lost: stop working
        on that message (its outcome would be refused)."""

    async def requeue_expired(self) -> int:
        """Return every ``active`` message whose claim has expired to ``incoming``, due now (any
        node may run this); return how many. Their old tokens are stale from then on."""

    async def record_attempt(self, queue_id: str, outcomes: list[RcptOutcome],
                             next_attempt_at: float, dsn: NewMessage | None = None,
                             hold: bool = False, *, token: int | None = None) -> QueueState:
        """Record one attempt of the ``active`` message ``queue_id``: each recipient in
        ``outcomes`` gets its state, then the message goes to delivered, bounced, deferred
        (until ``next_attempt_at``) or, with ``hold``, hold; the bounce ``dsn`` is enqueued in
        the same transaction. Returns the new state. With ``token`` nothing is written unless
        that claim is still current (StaleClaim); InvalidTransition if the message is not
        active."""

    async def move(self, queue_id: str, src: QueueState | tuple[QueueState, ...],
                   dst: QueueState, *, next_attempt_at: float | None = None,
                   error: str | None = None, token: int | None = None) -> QueueState:
        """Move ``queue_id`` from ``src`` to ``dst`` (spool.states.TRANSITIONS); return the
        state it left. InvalidTransition if not allowed or elsewhere; StaleClaim if ``token``
        is given and is no longer the current claim."""

    async def record_delivered(self, queue_id: str, outcomes: list[RcptOutcome], journal=None,
                               *, token: int | None = None) -> int:
        """Write the DELIVERED outcomes among ``outcomes`` of an attempt still in progress at once
        (a kill before the attempt's record does not send them again); the message stays
        active. ``journal`` (spool.journal.JournalEntry, on both backends)
        is filed in the same transaction. Returns how many recipients changed. StaleClaim if
        ``token`` is no longer the current claim."""

    async def purge_finished(self, before: float, limit: int = 5000) -> int:
        """Delete up to ``limit`` delivered and bounced messages last changed before ``before``
        (unix seconds), oldest first; return how many (call again while it returns ``limit``:
        each call is one short write, so commits of new mail interleave)."""

    async def get(self, queue_id: str, with_data: bool = False) -> StoredMessage | None:
        """The message with its recipients (and bytes with ``with_data``), or None."""

    async def message_size(self, queue_id: str) -> int | None:
        """The size in bytes of the message as committed (its row, not its bytes), or None."""

    async def counts(self) -> dict[str, int]:
        """{state: number of messages} for every QueueState value (zeros included)."""

    async def next_due_at(self) -> float | None:
        """The earliest next-attempt time (unix seconds, storage clock) among incoming and
        deferred messages, or None if there is none."""


__all__ = ["QueueSpool", "Claim"]
