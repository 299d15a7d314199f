"""Leader leases with a strictly increasing epoch (the fencing token), on PostgreSQL's clock.

``acquire`` is the one-statement takeover of CLUSTER-NOTES.md: the holder renews its own lease
(same epoch) while it has not expired; anyone takes an expired lease (epoch + 1); otherwise no
row comes back and the caller is not the leader. A failed statement aborts its transaction
(25P02), which is why it is one ``INSERT ... ON CONFLICT ... DO UPDATE ... WHERE``.
``check`` is the guard of every fenced write: the lease row, locked ``FOR SHARE`` in the writing
transaction, so a concurrent takeover waits for the fenced write (a plain EXISTS under READ
COMMITTED could race it). Reads and writes ``leases``.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

from spool.states import LeaseLost


@dataclass(frozen=True)
class Lease:
    name: str
    holder: str
    epoch: int
    expires_at: float     # unix seconds, database clock
    expired: bool


async def acquire(conn: AsyncConnection, name: str, holder: str, ttl: float) -> int | None:
    """Take or renew lease ``name`` for ``holder`` for ``ttl`` seconds; return its epoch, or None
    if another holder's lease has not expired."""
    cur = await conn.execute(
        "INSERT INTO leases AS l (name, holder, epoch, expires_at)"
        " VALUES (%s, %s, 1, clock_timestamp() + %s * interval '1 second')"
        " ON CONFLICT (name) DO UPDATE"
        "    SET holder = excluded.holder,"
        "        epoch  = l.epoch + CASE WHEN l.holder = excluded.holder"
        "                 AND l.expires_at > clock_timestamp() THEN 0 ELSE 1 END,"
        "        expires_at = excluded.expires_at"
        "  WHERE l.holder = excluded.holder OR l.expires_at <= clock_timestamp()"
        " RETURNING epoch", (name, holder, ttl))
    row = await cur.fetchone()
    return None if row is None else row[0]


async def release(conn: AsyncConnection, name: str, holder: str, epoch: int) -> bool:
    """End ``holder``'s lease at ``epoch`` now (a clean shutdown: the next node need not wait
    for the expiry). Returns False if it was not held."""
    cur = await conn.execute("UPDATE leases SET expires_at = clock_timestamp() WHERE name=%s"
                             " AND holder=%s AND epoch=%s AND expires_at > clock_timestamp()",
                             (name, holder, epoch))
    return cur.rowcount == 1


async def check(conn: AsyncConnection, name: str, holder: str, epoch: int) -> None:
    """Inside the writing transaction: lock lease ``name`` FOR SHARE if ``holder`` holds it at
    ``epoch`` and it has not expired; else raise LeaseLost."""
    cur = await conn.execute("SELECT 1 FROM leases WHERE name=%s AND holder=%s AND epoch=%s"
                             " AND expires_at > clock_timestamp() FOR SHARE", (name, holder, epoch))
    if await cur.fetchone() is None:
        raise LeaseLost(name, holder, epoch)


async def current(conn: AsyncConnection, name: str) -> Lease | None:
    """Lease ``name`` as stored (expired or not), or None if nobody ever took it."""
    cur = await conn.execute("SELECT holder, epoch, extract(epoch FROM expires_at)::float8,"
                             " expires_at <= clock_timestamp() FROM leases WHERE name=%s", (name,))
    row = await cur.fetchone()
    return None if row is None else Lease(name, row[0], row[1], row[2], row[3])
