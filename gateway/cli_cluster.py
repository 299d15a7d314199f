"""`mailgate cluster status [--json]`: the gateways sharing one PostgreSQL spool (issue 9 item 6).

On a PostgreSQL spool it lists every node registered in the database (spool.pg.nodes.list_nodes)
with the age of its last heartbeat (database clock), its version, whether it holds the
continuity lease (and at which epoch), the claims it holds and the mail it accepted that is
still queued. It reads through one plain read-only connection (gateway.cli_backend), never a
PgSpool: asking does not make the CLI a node. On the SQLite spool it says there is one node.

Exit status: 0 listed, 1 the database cannot be reached (one line naming host:port/dbname, never
the password), 2 usage or configuration error.
"""
from __future__ import annotations

import dataclasses
import json
import sys

from gateway import cli_backend

__all__ = ["add_parser", "format_table", "run"]

HEADERS = ("node", "last heartbeat", "version", "leader (epoch)", "claims held", "queued")


def add_parser(sub) -> None:
    """Register ``cluster`` on the top-level subparsers of gateway.cli."""
    c = sub.add_parser("cluster", help="the gateways sharing a PostgreSQL spool")
    s = c.add_subparsers(dest="clcmd", required=True).add_parser("status", help="list the nodes")
    s.add_argument("--json", action="store_true")


def run(cfg, args) -> int:
    if not cli_backend.is_postgresql(cfg):
        if args.json:
            print(json.dumps({"backend": "sqlite", "spool": str(cfg.spool_path), "nodes": None}))
        else:
            print(f"single node: the spool is SQLite ({cfg.spool_path}), not shared with other "
                  'gateways (spool.backend = "sqlite"; docs/cluster.md)')
        return 0
    from spool.pg.nodes import list_nodes
    try:
        nodes = cli_backend.on_postgresql(cfg, list_nodes)
    except cli_backend.PgUnavailable as e:
        print(f"mailgate: {e}", file=sys.stderr)
        return 1
    at = cli_backend.where(cfg.spool.dsn)
    if args.json:
        print(json.dumps({"backend": "postgresql", "database": at,
                          "nodes": [dataclasses.asdict(n) for n in nodes]}, indent=1))
        return 0
    print(format_table(nodes))
    leader = next((n for n in nodes if n.leader), None)
    print(f"-- {len(nodes)} node(s) on {at}; continuity leader: "
          + (f"{leader.name} (epoch {leader.lease_epoch})" if leader else "none"))
    return 0


def _leader(n) -> str:
    if n.lease_epoch is None:
        return "-"
    return f"{'yes' if n.leader else 'expired'} ({n.lease_epoch})"


def format_table(nodes) -> str:
    """The nodes (spool.pg.nodes.NodeStatus) as an aligned text table with HEADERS."""
    rows = [HEADERS] + [(n.name, f"{n.seconds_since_seen:.0f} s ago", n.version or "-",
                         _leader(n), str(n.claims_held), str(n.queued)) for n in nodes]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
