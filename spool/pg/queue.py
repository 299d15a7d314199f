"""The queue on PostgreSQL: commit, claims with fencing tokens, outcomes, moves, reads.

Each write function runs inside a transaction opened by the caller (spool.pg.store's group
commit, or a claim's own short transaction) on a psycopg AsyncConnection. Times are set from the
database's clock: ``clock_timestamp()`` for claims and records, ``now()`` (the transaction's
start) where an index must serve the comparison. A time handed in as unix seconds on the caller's
clock is turned into a delay at the call (``delay``) and added to the database's clock. Reads and
writes ``messages``, ``recipients``, ``bodies``; ``claim_seq`` gives claim tokens.
"""
from __future__ import annotations

import time

from psycopg import AsyncConnection
from psycopg.rows import dict_row

from spool.commit import NewMessage
from spool.query import Recipient, StoredMessage
from spool.states import TRANSITIONS, Claim, InvalidTransition, QueueState, RcptState, StaleClaim
from spool.transitions import RcptOutcome

SECS = "* interval '1 second'"
_RCPT_COLUMNS = ("idx", "address", "state", "attempts", "reply_code", "reply_text", "remote_host")
#: The recipients of one message as arrays ordered by ``idx`` (get_message's and claim's LATERAL).
_RCPT_AGGS = ", ".join(f"array_agg(r.{c} ORDER BY r.idx) AS r_{c}" for c in _RCPT_COLUMNS)


def delay(at: float | None) -> float:
    """``at`` (unix seconds, this node's clock) as seconds from now (0 if past, None → 0)."""
    return 0.0 if at is None else max(0.0, at - time.time())


async def insert_message(conn: AsyncConnection, msg: NewMessage, node: str = "") -> str:
    """Insert ``msg`` (state ``msg.state``), its recipients and bytes; return its queue ID.
    Raises ValueError without recipients, psycopg.errors.UniqueViolation if the ID exists."""
    if not msg.rcpt_tos:
        raise ValueError("a message needs at least one recipient")
    await conn.execute(      # one statement, one round trip: the row, its recipients, its bytes
        "WITH m AS (INSERT INTO messages (queue_id, state, mail_from, client_addr, client_helo, size,"
        "  smtputf8, body_8bit, is_dsn, node, arrived_at, next_attempt_at, updated_at) VALUES"
        "  (%(q)s, %(state)s, %(from)s, %(addr)s, %(helo)s, %(size)s, %(utf8)s, %(b8)s, %(dsn)s,"
        "   %(node)s, clock_timestamp(), clock_timestamp(), clock_timestamp()) RETURNING queue_id),"
        " r AS (INSERT INTO recipients (queue_id, idx, address, state, updated_at)"
        "  SELECT m.queue_id, a.idx - 1, a.address, 'pending', clock_timestamp()"
        "  FROM m, unnest(%(rcpts)s::text[]) WITH ORDINALITY AS a(address, idx))"
        " INSERT INTO bodies (queue_id, data) SELECT queue_id, %(data)s FROM m",
        {"q": msg.queue_id, "state": msg.state.value, "from": msg.mail_from,
         "addr": msg.client_addr, "helo": msg.client_helo, "size": len(msg.data),
         "utf8": msg.smtputf8, "b8": msg.body_8bit, "dsn": msg.is_dsn, "node": node,
         "rcpts": list(msg.rcpt_tos), "data": bytes(msg.data)})
    return msg.queue_id


#: A claimed message of at most this many stored bytes comes with its row, recipients and bytes
#: in the claim's own statement (Claim.message), so its delivery reads nothing more; a larger one
#: is read by the queue manager once it fits in its byte budget. Bytes read this way are outside
#: the budget until their delivery starts: at most the claim's ``limit`` × this.
CLAIM_INLINE_BYTES = 64 * 1024


async def claim(conn: AsyncConnection, limit: int, owner: str, ttl: float,
                inline_bytes: int = CLAIM_INLINE_BYTES) -> list[Claim]:
    """Claim up to ``limit`` due messages for ``owner`` for ``ttl`` seconds: ``FOR UPDATE SKIP
    LOCKED`` (a row another session is claiming is skipped, never waited for), one token each
    from ``claim_seq``. Returns the claims (with each message's size), oldest first; a message
    of at most ``inline_bytes`` bytes also carries itself (``Claim.message``: a StoredMessage
    with its bytes, state ``active``), read in the same statement and snapshot, in the binary
    format. The caller commits at once."""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "WITH c AS (SELECT queue_id FROM messages WHERE state IN ('incoming','deferred')"
        "           AND next_attempt_at <= now() ORDER BY next_attempt_at, seq"
        "           LIMIT %(limit)s FOR UPDATE SKIP LOCKED),"
        " u AS (UPDATE messages m SET state='active', claim_owner=%(owner)s,"
        "  claim_token=nextval('claim_seq'),"
        f"  claim_expires=clock_timestamp() + %(ttl)s {SECS}, updated_at=clock_timestamp()"
        "  FROM c WHERE m.queue_id = c.queue_id RETURNING m.*)"
        " SELECT u.*, extract(epoch FROM u.arrived_at)::float8 AS arrived_at,"
        " extract(epoch FROM u.next_attempt_at)::float8 AS next_attempt_at,"
        " extract(epoch FROM u.claim_expires)::float8 AS claim_expires_at, rr.*,"
        " b.data AS body_data FROM u"
        " LEFT JOIN bodies b ON b.queue_id = u.queue_id AND u.size <= %(inline)s"
        f" LEFT JOIN LATERAL (SELECT {_RCPT_AGGS} FROM recipients r WHERE r.queue_id = u.queue_id"
        "  AND u.size <= %(inline)s) rr ON true",
        {"limit": limit, "owner": owner, "ttl": ttl, "inline": inline_bytes}, binary=True)
    rows = sorted(await cur.fetchall(), key=lambda r: r["seq"])
    return [Claim(r["queue_id"], r["claim_token"], r["claim_expires_at"], r["size"],
                  message=_stored(r) if r["body_data"] is not None else None) for r in rows]


async def renew(conn: AsyncConnection, claims: list[Claim], ttl: float) -> list[Claim]:
    """Extend the claims still current by ``ttl`` seconds; return those, with the new expiry."""
    if not claims:
        return []
    cur = await conn.execute(
        f"UPDATE messages m SET claim_expires = clock_timestamp() + %s {SECS}"
        " FROM unnest(%s::text[], %s::bigint[]) AS c(queue_id, token)"
        " WHERE m.queue_id = c.queue_id AND m.claim_token = c.token AND m.state = 'active'"
        " RETURNING m.queue_id, m.claim_token, extract(epoch FROM m.claim_expires)::float8",
        (ttl, [c.queue_id for c in claims], [c.token for c in claims]))
    got = {q: Claim(q, t, e) for q, t, e in await cur.fetchall()}
    return [got[c.queue_id] for c in claims if c.queue_id in got]


async def requeue_expired(conn: AsyncConnection) -> int:
    """Return every active message whose claim expired to ``incoming``, due now; return how many."""
    cur = await conn.execute(
        "UPDATE messages SET state='incoming', next_attempt_at=clock_timestamp(),"
        " updated_at=clock_timestamp(), last_error='claim of ' || coalesce(claim_owner, '?')"
        " || ' expired' WHERE state='active' AND claim_expires <= clock_timestamp()")
    return cur.rowcount


async def _current(conn: AsyncConnection, queue_id: str, token: int) -> None:
    """Lock ``queue_id``'s row if it is active under ``token``; else raise StaleClaim."""
    cur = await conn.execute("SELECT 1 FROM messages WHERE queue_id=%s AND state='active'"
                             " AND claim_token=%s FOR UPDATE", (queue_id, token))
    if await cur.fetchone() is None:
        raise StaleClaim(queue_id, token)


async def move(conn: AsyncConnection, queue_id: str, src, dst: QueueState, *,
               next_attempt_at: float | None = None, error: str | None = None,
               token: int | None = None) -> QueueState:
    """transitions.move on PostgreSQL (the row locked while checked); returns the state left."""
    if token is not None:
        await _current(conn, queue_id, token)
    srcs = (src,) if isinstance(src, QueueState) else tuple(src)
    cur = await conn.execute("SELECT state FROM messages WHERE queue_id=%s FOR UPDATE", (queue_id,))
    row = await cur.fetchone()
    if row is None:
        raise InvalidTransition(queue_id, srcs[0], dst, None)
    actual = QueueState(row[0])
    if actual not in srcs or dst not in TRANSITIONS[actual]:
        raise InvalidTransition(queue_id, actual if actual in srcs else srcs[0], dst, actual.value)
    sets, args = ["state=%s", "updated_at=clock_timestamp()"], [dst.value]
    if next_attempt_at is not None:
        sets.append(f"next_attempt_at=clock_timestamp() + %s {SECS}")
        args.append(delay(next_attempt_at))
    if error is not None:
        sets.append("last_error=%s")
        args.append(error)
    await conn.execute(f"UPDATE messages SET {', '.join(sets)} WHERE queue_id=%s AND state=%s",
                       (*args, queue_id, actual.value))
    return actual


class Sent:
    """The result of an operation whose statements are sent but not yet read: PgSpool's group
    commit sends every operation of a batch first and reads their results afterwards
    (``await sent.result()``), so a batch of k outcomes costs one pipeline sync, not k. What
    ``result()`` raises (StaleClaim) is the operation's error, as if raised when it ran."""

    __slots__ = ("_finish",)

    def __init__(self, finish):
        self._finish = finish

    async def result(self):
        return await self._finish()


async def _record_claimed(conn: AsyncConnection, queue_id: str, outcomes: list[RcptOutcome],
                          next_attempt_at: float, hold: bool, token: int,
                          dsn: NewMessage | None, node: str, hold_reason: str) -> Sent:
    """record_attempt under claim ``token`` in one statement (was six, then two with a fetch
    between), sent and not waited for: a Sent whose ``result()`` is the message's new state.
    The statement locks the row if the claim is current (``c``), updates the recipients the
    attempt reached (``u``), computes every recipient's state after it (``s``: u's RETURNING
    joined to the statement's snapshot) and from them the message's state (``f``: any pending →
    hold or deferred, else any bounced → bounced, else delivered, as transitions.record_attempt),
    moves the message there with its attempts, error and hold reason (``m``), and for a terminal
    state deletes the bytes no mailbox refers to (``d``); each data-modifying part is guarded
    by ``c``, so a stale claim writes nothing. ``result()`` raises StaleClaim if
    the claim was not current. The bounce ``dsn``, if any, is inserted after it in the same
    transaction (undone with it when the claim was stale: the group commit rolls back)."""
    errors = [f"{o.code or ''} {o.text}".strip() for o in outcomes if o.state is not RcptState.DELIVERED]
    cur = await conn.execute(
        "WITH c AS (SELECT queue_id FROM messages WHERE queue_id=%(q)s AND state='active'"
        "           AND claim_token=%(t)s FOR UPDATE),"
        " u AS (UPDATE recipients r SET state=o.state, attempts=r.attempts+1, reply_code=o.code,"
        "        reply_text=o.text, remote_host=o.host, updated_at=clock_timestamp()"
        "       FROM c, unnest(%(idx)s::int[], %(st)s::text[], %(code)s::int[], %(txt)s::text[],"
        "                      %(host)s::text[]) AS o(idx, state, code, text, host)"
        "       WHERE r.queue_id = c.queue_id AND r.idx = o.idx AND r.state = 'pending'"
        "       RETURNING r.idx, r.state),"
        " s AS (SELECT array_agg(coalesce(u.state, r.state)) AS states FROM recipients r"
        "       LEFT JOIN u ON u.idx = r.idx WHERE r.queue_id = %(q)s),"
        " f AS (SELECT CASE WHEN 'pending' = ANY(s.states)"
        "                   THEN CASE WHEN %(hold)s THEN 'hold' ELSE 'deferred' END"
        "              WHEN 'bounced' = ANY(s.states) THEN 'bounced' ELSE 'delivered' END AS dst"
        "       FROM s),"
        " m AS (UPDATE messages SET state=f.dst, updated_at=clock_timestamp(),"
        f"        next_attempt_at=clock_timestamp() + %(delay)s {SECS}, last_error=%(err)s,"
        "        attempts=attempts + %(tried)s,"
        "        hold_reason=CASE WHEN f.dst = 'hold' THEN %(reason)s ELSE hold_reason END,"
        "        held_at=CASE WHEN f.dst = 'hold' THEN clock_timestamp() ELSE held_at END"
        "       FROM f, c WHERE messages.queue_id = c.queue_id AND messages.state='active'),"
        # the bytes a journal entry refers to (no held copy) stay: spool.pg.journal
        " d AS (DELETE FROM bodies WHERE queue_id=%(q)s AND EXISTS (SELECT 1 FROM c)"
        "       AND EXISTS (SELECT 1 FROM f WHERE f.dst IN ('delivered', 'bounced'))"
        "       AND NOT (EXISTS (SELECT 1 FROM mailbox_messages WHERE queue_id=%(q)s)"
        "                AND NOT EXISTS (SELECT 1 FROM mailbox_bodies WHERE queue_id=%(q)s)))"
        " SELECT (SELECT count(*) FROM c), (SELECT dst FROM f)",
        {"q": queue_id, "t": token, "idx": [o.idx for o in outcomes],
         "st": [o.state.value for o in outcomes], "code": [o.code for o in outcomes],
         "txt": [o.text[:1000] for o in outcomes], "host": [o.remote_host for o in outcomes],
         "hold": hold, "delay": delay(next_attempt_at), "err": errors[0][:500] if errors else "",
         "tried": 1 if outcomes else 0, "reason": hold_reason})
    if dsn is not None:
        await insert_message(conn, dsn, node)

    async def finish() -> QueueState:
        current, dst = await cur.fetchone()
        if not current:
            raise StaleClaim(queue_id, token)
        return QueueState(dst)
    return Sent(finish)


async def record_attempt(conn: AsyncConnection, queue_id: str, outcomes: list[RcptOutcome],
                         next_attempt_at: float, hold: bool = False, token: int | None = None,
                         dsn: NewMessage | None = None, node: str = "",
                         hold_reason: str = "continuity",
                         sent: bool = False) -> QueueState | Sent:
    """transitions.record_attempt on PostgreSQL, with the bounce ``dsn`` in the same transaction;
    a held message gets ``hold_reason`` ('continuity', or 'drill' on main's drills). With
    ``token``, StaleClaim before anything is written unless that claim is current; with
    ``token`` and ``sent``, a Sent (its ``result()`` is the state, or raises StaleClaim) for
    PgSpool's group commit, which reads every operation's result after sending them all."""
    if token is not None:            # the queue manager's case: one statement
        later = await _record_claimed(conn, queue_id, outcomes, next_attempt_at, hold, token,
                                      dsn, node, hold_reason)
        return later if sent else await later.result()
    if outcomes:
        async with conn.cursor() as cur:
            await cur.executemany(
                "UPDATE recipients SET state=%s, attempts=attempts+1, reply_code=%s, reply_text=%s,"
                " remote_host=%s, updated_at=clock_timestamp() WHERE queue_id=%s AND idx=%s"
                " AND state='pending'",
                [(o.state.value, o.code, o.text[:1000], o.remote_host, queue_id, o.idx)
                 for o in outcomes])
    cur = await conn.execute("SELECT state, count(*) FROM recipients WHERE queue_id=%s"
                             " GROUP BY state", (queue_id,))
    counts = dict(await cur.fetchall())
    if counts.get(RcptState.PENDING.value):
        dst = QueueState.HOLD if hold else QueueState.DEFERRED
    elif counts.get(RcptState.BOUNCED.value):
        dst = QueueState.BOUNCED
    else:
        dst = QueueState.DELIVERED
    errors = [f"{o.code or ''} {o.text}".strip() for o in outcomes if o.state is not RcptState.DELIVERED]
    error = errors[0][:500] if errors else ""
    if token is not None:      # _current locked the row as active: no second look (a round trip)
        await conn.execute("UPDATE messages SET state=%s, updated_at=clock_timestamp(),"
                           f" next_attempt_at=clock_timestamp() + %s {SECS}, last_error=%s"
                           " WHERE queue_id=%s AND state='active'",
                           (dst.value, delay(next_attempt_at), error, queue_id))
    else:
        await move(conn, queue_id, QueueState.ACTIVE, dst, next_attempt_at=next_attempt_at,
                   error=error)
    if dst is QueueState.HOLD:
        await conn.execute("UPDATE messages SET hold_reason=%s, held_at=clock_timestamp()"
                           " WHERE queue_id=%s", (hold_reason, queue_id))
    if outcomes:
        await conn.execute("UPDATE messages SET attempts=attempts+1 WHERE queue_id=%s", (queue_id,))
    if dst.terminal:   # the bytes a journal entry refers to (no held copy) stay: spool.pg.journal
        await conn.execute("DELETE FROM bodies WHERE queue_id=%(q)s AND NOT (EXISTS (SELECT 1 FROM"
                           " mailbox_messages WHERE queue_id=%(q)s) AND NOT EXISTS (SELECT 1 FROM"
                           " mailbox_bodies WHERE queue_id=%(q)s))", {"q": queue_id})
    if dsn is not None:
        await insert_message(conn, dsn, node)
    return dst


async def get_message(conn: AsyncConnection, queue_id: str, with_data: bool = False) -> StoredMessage | None:
    """The message ``queue_id`` with its recipients (and bytes with ``with_data``), or None.
    One statement (one round trip, one snapshot): the row, its recipients as arrays ordered by
    ``idx`` (a LATERAL aggregate), its bytes by a join. With the bytes the result comes in
    PostgreSQL's binary format: a bytea in the text format is hex, twice its size on the wire,
    encoded by the server and decoded here (about 3.5 ms of CPU per MiB between the two)."""
    body = "b.data AS body_data" if with_data else "NULL::bytea AS body_data"
    join = " LEFT JOIN bodies b ON b.queue_id = m.queue_id" if with_data else ""
    cur = conn.cursor(row_factory=dict_row)
    await cur.execute(
        "SELECT m.*, extract(epoch FROM m.arrived_at)::float8 AS arrived_at,"
        " extract(epoch FROM m.next_attempt_at)::float8 AS next_attempt_at,"
        f" rr.*, {body} FROM messages m{join}"
        f" LEFT JOIN LATERAL (SELECT {_RCPT_AGGS} FROM recipients r WHERE r.queue_id = m.queue_id) rr ON true"
        " WHERE m.queue_id = %s", (queue_id,), binary=with_data)
    row = await cur.fetchone()
    return None if row is None else _stored(row)


def _stored(row: dict) -> StoredMessage:
    """A StoredMessage from a row of get_message's (or claim's) columns."""
    cols = [row[f"r_{c}"] or [] for c in _RCPT_COLUMNS]
    rcpts = tuple(Recipient(idx, address, RcptState(state), attempts, code, text, host)
                  for idx, address, state, attempts, code, text, host in zip(*cols))
    data = row["body_data"]
    if data is not None and not isinstance(data, bytes):
        data = bytes(data)
    return StoredMessage(
        queue_id=row["queue_id"], state=QueueState(row["state"]), mail_from=row["mail_from"],
        recipients=rcpts, size=row["size"], smtputf8=row["smtputf8"], body_8bit=row["body_8bit"],
        is_dsn=row["is_dsn"], arrived_at=row["arrived_at"], next_attempt_at=row["next_attempt_at"],
        attempts=row["attempts"], last_error=row["last_error"], client_addr=row["client_addr"],
        client_helo=row["client_helo"], data=data, hold_reason=row["hold_reason"],
        held_seconds=row["held_seconds"])


async def count_by_state(conn: AsyncConnection) -> dict[str, int]:
    """{state: number of messages} for every state (zeros included)."""
    counts = {s.value: 0 for s in QueueState}
    cur = await conn.execute("SELECT state, count(*) FROM messages GROUP BY state")
    counts.update(dict(await cur.fetchall()))
    return counts


async def next_due_at(conn: AsyncConnection) -> float | None:
    """Earliest next-attempt time (unix seconds, database clock) of incoming/deferred mail."""
    cur = await conn.execute("SELECT extract(epoch FROM min(next_attempt_at))::float8 FROM messages"
                             " WHERE state IN ('incoming','deferred')")
    return (await cur.fetchone())[0]


async def message_size(conn: AsyncConnection, queue_id: str) -> int | None:
    """The size in bytes of ``queue_id``'s data as committed (its row), or None."""
    cur = await conn.execute("SELECT size FROM messages WHERE queue_id=%s", (queue_id,))
    row = await cur.fetchone()
    return None if row is None else row[0]


async def record_delivered(conn: AsyncConnection, queue_id: str, outcomes: list[RcptOutcome],
                           token: int | None = None) -> int:
    """transitions.record_delivered on PostgreSQL: the DELIVERED outcomes of an attempt still in
    progress, written at once (a kill now does not send them again); the message stays active.
    Returns how many recipients changed; StaleClaim unless ``token`` is the current claim."""
    if token is not None:
        await _current(conn, queue_id, token)
    rows = [(o.code, o.text[:1000], o.remote_host, queue_id, o.idx)
            for o in outcomes if o.state is RcptState.DELIVERED]
    if not rows:
        return 0
    n = 0
    for row in rows:       # RETURNING, not rowcount: in pipeline mode rowcount is not known yet
        cur = await conn.execute(
            "WITH u AS (UPDATE recipients r SET state='delivered', attempts=attempts+1,"
            " reply_code=%s, reply_text=%s, remote_host=%s, updated_at=clock_timestamp()"
            " WHERE queue_id=%s AND idx=%s AND state='pending' AND EXISTS (SELECT 1 FROM"
            " messages m WHERE m.queue_id=r.queue_id AND m.state='active') RETURNING 1)"
            " SELECT count(*) FROM u", row)
        n += (await cur.fetchone())[0]
    return n


async def purge_finished(conn: AsyncConnection, before: float, limit: int) -> int:
    """Delete up to ``limit`` delivered and bounced messages last changed before ``before``
    (unix seconds on the caller's clock, turned into an age on the database's clock), oldest
    first, with their recipients and bytes; a message a continuity-mailbox row still refers to is
    kept until the mailbox purge has removed its rows (spool.pg.mailbox_rows.purge). Returns how
    many (call again while it is ``limit``)."""
    age = max(0.0, time.time() - before)
    cur = await conn.execute(     # counted by RETURNING: rowcount is unknown in pipeline mode
        "WITH d AS (DELETE FROM messages WHERE queue_id IN (SELECT queue_id FROM messages WHERE"
        f" state IN ('delivered','bounced') AND updated_at < clock_timestamp() - %s {SECS}"
        " AND NOT EXISTS (SELECT 1 FROM mailbox_messages mm WHERE mm.queue_id = messages.queue_id)"
        " ORDER BY updated_at LIMIT %s) RETURNING 1) SELECT count(*) FROM d", (age, limit))
    return (await cur.fetchone())[0]
