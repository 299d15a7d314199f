"""The operator's changes to the PostgreSQL queue (``mailgate queue hold|release|delete|flush``):
the SQLite semantics of spool.continuity.operator_hold / operator_release and
spool.transitions.delete_message / flush, on a plain psycopg AsyncConnection in autocommit mode.

Each function is one short transaction of its own (it opens and commits it; do not call it
inside another). The message's row is locked (``SELECT ... FOR UPDATE``) before it is checked,
then changed by an UPDATE guarded by the state read, so a node claiming it at the same moment
either sees the change or has already made it ``active``; an ``active`` message (a node holds its
claim) is never moved or deleted: the caller gets InvalidTransition and nothing changes. A row
lock held longer than LOCK_TIMEOUT seconds by another session fails the call with
psycopg.errors.LockNotAvailable (an OperationalError), nothing changed. Times are the database's
clock (``clock_timestamp()``, one reading per statement). Reads and writes ``messages``; delete
removes ``recipients`` and ``bodies`` with it (ON DELETE CASCADE). Never registers a node.
"""
from __future__ import annotations

from psycopg import AsyncConnection

from spool.states import InvalidTransition, QueueState

#: Seconds a call waits for a row another session has locked before it gives up.
LOCK_TIMEOUT = 10.0

#: Holds that an operator's hold takes over (the hold goes on, its start is kept): a
#: continuity event's and a drill's, so that no replay releases the message.
TAKEN_OVER = ("continuity", "drill")


async def _bounded(conn: AsyncConnection) -> None:
    """Wait at most LOCK_TIMEOUT for a row lock in the current transaction."""
    await conn.execute(f"SET LOCAL lock_timeout = '{int(LOCK_TIMEOUT * 1000)}ms'")


async def _lock(conn: AsyncConnection, queue_id: str) -> tuple[str, str] | None:
    """(state, hold_reason) of ``queue_id``, its row locked for this transaction; None if absent."""
    await _bounded(conn)
    cur = await conn.execute("SELECT state, hold_reason FROM messages WHERE queue_id=%s FOR UPDATE",
                             (queue_id,))
    return await cur.fetchone()


async def hold(conn: AsyncConnection, queue_id: str) -> str:
    """Put an ``incoming`` or ``deferred`` message on operator hold (``state='hold'``,
    ``hold_reason='operator'``, ``held_at`` now), or turn a continuity or drill hold into an
    operator hold (``held_at`` kept). Returns the state it left ('incoming', 'deferred', or
    'hold' for a hold taken over). Raises InvalidTransition: ``actual`` None if there is no
    such message, else the state it is in (active, already on operator hold, terminal, corrupt)."""
    async with conn.transaction():
        row = await _lock(conn, queue_id)
        if row is None:
            raise InvalidTransition(queue_id, QueueState.INCOMING, QueueState.HOLD, None)
        state, reason = row
        if state == QueueState.HOLD.value and reason in TAKEN_OVER:
            await conn.execute("UPDATE messages SET hold_reason='operator', updated_at=clock_timestamp()"
                               " WHERE queue_id=%s AND state='hold'", (queue_id,))
            return state
        if state not in (QueueState.INCOMING.value, QueueState.DEFERRED.value):
            raise InvalidTransition(queue_id, QueueState.INCOMING, QueueState.HOLD, state)
        await conn.execute(
            "UPDATE messages m SET state='hold', hold_reason='operator', held_at=c.t, updated_at=c.t"
            " FROM (SELECT clock_timestamp() AS t) c WHERE m.queue_id=%s AND m.state=%s",
            (queue_id, state))
        return state


async def release(conn: AsyncConnection, queue_id: str) -> None:
    """A held message (any hold reason) back to ``incoming``, due now, ``hold_reason`` cleared,
    its time on hold (now - ``held_at``, seconds) added to ``held_seconds`` and ``held_at``
    cleared. Raises InvalidTransition (``actual`` None: no such message; else its state) if it is
    not on hold."""
    async with conn.transaction():
        row = await _lock(conn, queue_id)
        if row is None or row[0] != QueueState.HOLD.value:
            raise InvalidTransition(queue_id, QueueState.HOLD, QueueState.INCOMING,
                                    None if row is None else row[0])
        await conn.execute(
            "UPDATE messages m SET state='incoming', hold_reason='', next_attempt_at=c.t,"
            " updated_at=c.t, held_seconds = m.held_seconds"
            "   + greatest(0, extract(epoch FROM c.t - coalesce(m.held_at, c.t)))::float8,"
            " held_at=NULL FROM (SELECT clock_timestamp() AS t) c"
            " WHERE m.queue_id=%s AND m.state='hold'", (queue_id,))


async def delete(conn: AsyncConnection, queue_id: str) -> bool:
    """Remove a message in any state but ``active`` with its recipients and bytes (postsuper -d).
    Returns False if there was no such message; raises InvalidTransition (``actual`` 'active')
    for an active one (a node is delivering it)."""
    async with conn.transaction():
        row = await _lock(conn, queue_id)
        if row is None:
            return False
        if row[0] == QueueState.ACTIVE.value:
            raise InvalidTransition(queue_id, QueueState.ACTIVE, QueueState.ACTIVE, "active")
        await conn.execute("DELETE FROM messages WHERE queue_id=%s AND state=%s", (queue_id, row[0]))
        return True


async def flush(conn: AsyncConnection, queue_id: str | None = None) -> int:
    """Make mail due now (postqueue -f / -i): every ``deferred`` message, or with ``queue_id``
    that one if it is ``deferred`` or ``incoming`` (an active, held or finished one is left
    alone). Returns how many messages were touched (0 or 1 with ``queue_id``)."""
    async with conn.transaction():
        await _bounded(conn)
        due = ("UPDATE messages m SET next_attempt_at=c.t, updated_at=c.t"
               " FROM (SELECT clock_timestamp() AS t) c WHERE ")
        if queue_id is None:
            cur = await conn.execute(due + "m.state='deferred'")
        else:
            cur = await conn.execute(due + "m.queue_id=%s AND m.state IN ('deferred','incoming')",
                                     (queue_id,))
        return cur.rowcount


__all__ = ["LOCK_TIMEOUT", "TAKEN_OVER", "delete", "flush", "hold", "release"]
