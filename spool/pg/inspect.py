"""Read-only views of the PostgreSQL queue for the operator (``mailgate queue list|show``): the
shapes of spool.query (StoredMessage, counts per state) on a psycopg AsyncConnection.

``list_messages`` reads the messages and all their recipients in two statements (not one per
message), oldest first, without bytes; ``get_message`` and ``count_by_state`` are the queue's
own (spool.pg.queue). Times are unix seconds on the database's clock. Reads ``messages``,
``recipients``, ``bodies``; writes nothing.
"""
from __future__ import annotations

from collections import defaultdict

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from spool.pg.queue import count_by_state, get_message
from spool.query import Recipient, StoredMessage
from spool.states import QueueState, RcptState

LIVE = (QueueState.INCOMING, QueueState.ACTIVE, QueueState.DEFERRED, QueueState.HOLD,
        QueueState.CORRUPT)


async def list_messages(conn: AsyncConnection, states: tuple[QueueState, ...] | None = None,
                        limit: int = 1000) -> list[StoredMessage]:
    """Messages in ``states`` (default: every non-terminal state), in arrival order (``seq``),
    at most ``limit``, without bytes (``data`` is None): spool.query.list_messages's shape."""
    states = states or LIVE
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT *, extract(epoch FROM arrived_at)::float8 AS arrived_at,"
            " extract(epoch FROM next_attempt_at)::float8 AS next_attempt_at FROM messages"
            " WHERE state = ANY(%s) ORDER BY seq LIMIT %s", ([s.value for s in states], limit))
        rows = await cur.fetchall()
        await cur.execute("SELECT * FROM recipients WHERE queue_id = ANY(%s) ORDER BY queue_id, idx",
                          ([r["queue_id"] for r in rows],))
        rcpts: dict[str, list[Recipient]] = defaultdict(list)
        for r in await cur.fetchall():
            rcpts[r["queue_id"]].append(Recipient(r["idx"], r["address"], RcptState(r["state"]),
                                                  r["attempts"], r["reply_code"], r["reply_text"],
                                                  r["remote_host"]))
    return [StoredMessage(
        queue_id=m["queue_id"], state=QueueState(m["state"]), mail_from=m["mail_from"],
        recipients=tuple(rcpts[m["queue_id"]]), size=m["size"], smtputf8=m["smtputf8"],
        body_8bit=m["body_8bit"], is_dsn=m["is_dsn"], arrived_at=m["arrived_at"],
        next_attempt_at=m["next_attempt_at"], attempts=m["attempts"], last_error=m["last_error"],
        client_addr=m["client_addr"], client_helo=m["client_helo"], hold_reason=m["hold_reason"],
        held_seconds=m["held_seconds"]) for m in rows]


__all__ = ["count_by_state", "get_message", "list_messages"]
