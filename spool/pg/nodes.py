"""Node identity on the PostgreSQL spool: heartbeats and the cluster's node list.

Every gateway on one database is a row of ``nodes`` (registered by PgSpool.open, which gives it
the id behind its queue-ID tag). ``heartbeat`` stamps ``last_seen`` from the database's clock
(so the age of a heartbeat never depends on the clocks of the nodes, nor of the machine that
asks) and records the node's mailgate version. ``list_nodes`` is what ``mailgate cluster
status`` prints: per node its heartbeat, version, whether it holds the continuity lease, the
claims it holds and the mail it accepted that is still queued. Reads ``nodes``, ``leases``,
``messages``; writes ``nodes`` (heartbeat only). Each function runs on a psycopg
AsyncConnection (autocommit or inside the caller's transaction).
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import AsyncConnection

#: The lease whose holder is the cluster's continuity leader (spool.pg.lease).
LEADER_LEASE = "continuity"


@dataclass(frozen=True)
class NodeStatus:
    """One node as the database sees it. Times are unix seconds on the database's clock."""

    name: str
    started_at: float           # when it last registered (PgSpool.open)
    last_seen: float            # its last heartbeat (or its registration)
    seconds_since_seen: float   # database clock now - last_seen, >= 0
    version: str                # mailgate version of its last heartbeat; '' before the first
    leader: bool                # holds the LEADER_LEASE and it has not expired
    lease_epoch: int | None     # epoch of the LEADER_LEASE row when this node is its holder
    #                             (held now, or held last and expired since); else None
    claims_held: int            # messages in state 'active' claimed by it (claim_owner)
    queued: int                 # messages it accepted (messages.node) not delivered or bounced


async def heartbeat(conn: AsyncConnection, node: str, version: str) -> bool:
    """Stamp ``node``'s ``last_seen`` with the database's clock and record ``version``. Returns
    False (and writes nothing) if ``node`` is not registered: it must open a PgSpool first, which
    gives it its id; a heartbeat never creates a node (an upsert would spend an id each time)."""
    cur = await conn.execute("UPDATE nodes SET last_seen = clock_timestamp(), version = %s"
                             " WHERE name = %s", (version, node))
    return cur.rowcount == 1


async def list_nodes(conn: AsyncConnection, lease: str = LEADER_LEASE) -> list[NodeStatus]:
    """Every registered node, by name, with its lease and queue figures (NodeStatus). One
    statement, so every figure is from one snapshot; the counts use the partial indexes of
    migration 0003."""
    cur = await conn.execute(
        "SELECT n.name, extract(epoch FROM n.started_at)::float8,"
        "  extract(epoch FROM n.last_seen)::float8,"
        "  greatest(0, extract(epoch FROM clock_timestamp() - n.last_seen))::float8, n.version,"
        "  coalesce(l.expires_at > clock_timestamp(), false), l.epoch,"
        "  (SELECT count(*) FROM messages m WHERE m.state = 'active' AND m.claim_owner = n.name),"
        "  (SELECT count(*) FROM messages m WHERE m.node = n.name"
        "     AND m.state NOT IN ('delivered','bounced'))"
        " FROM nodes n LEFT JOIN leases l ON l.name = %s AND l.holder = n.name"
        " ORDER BY n.name", (lease,))
    return [NodeStatus(name, started, seen, age, version, bool(leader), epoch, claims, queued)
            for name, started, seen, age, version, leader, epoch, claims, queued
            in await cur.fetchall()]


__all__ = ["LEADER_LEASE", "NodeStatus", "heartbeat", "list_nodes"]
