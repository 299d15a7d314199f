"""The ``[spool]`` section: which storage holds the queue (issue 9; docs/cluster.md).

``backend = "sqlite"`` (the default) keeps the spool in ``server.data_dir/spool.db`` on this
machine: zero configuration, one gateway. ``backend = "postgresql"`` puts the queue in a
PostgreSQL database shared by several gateways (``dsn``, libpq's conninfo string or URI; a
password is better kept in ``~/.pgpass`` or ``PGPASSWORD`` than in the file); each gateway is a
node with its own ``node`` name (default: ``server.hostname``), written on its claims, in its
queue IDs and in its log lines.

What runs on PostgreSQL today is the relay path: intake (250 after the database's COMMIT, 451
4.3.0 while it is unreachable), the queue with claims and fencing tokens, delivery, retries and
bounces, the admin API's health and counts; and continuity (``continuity.mode`` "automatic" or
"alert-only"): hold and replay decided by one leader, fenced by its lease epoch, every node
holding and delivering as the shared state says; held mail is filed into the continuity
mailboxes and the journal runs on the shared spool too; the continuity webmail and its admin
console run on every node (accounts, sessions, login codes, mailboxes, Sent copies and the
console's reads and changes are the spool's verbs, so a session opened on one node is valid on
all), and the CLI's ``continuity``, ``probes``, ``queue``, ``users``, ``admins`` and ``drill``
commands work on it (drills: the leader applies them, every node holds).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    from gateway.config import Config


class SpoolConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    backend: Literal["sqlite", "postgresql"] = "sqlite"
    dsn: str = ""                   # postgresql: "host=db1 dbname=mailgate user=mailgate" or a URI
    node: str = Field("", max_length=63)   # this gateway's node name; "": server.hostname
    pool_size: int = Field(10, ge=2, le=200)            # postgresql: connections per gateway
    #   (its supervisor: queue manager, continuity, admin API, webmail)
    worker_pool_size: int = Field(2, ge=1, le=50)       # postgresql: connections per intake
    #   worker at most (it keeps 1 open; intake's group commit writes through one): a gateway
    #   uses up to pool_size + server.workers x worker_pool_size
    connect_timeout: float = Field(5.0, gt=0, le=120)   # postgresql: seconds to get a connection
    #   (after that an SMTP client gets 451 4.3.0; the pool keeps trying in the background)
    operation_timeout: float = Field(30.0, gt=0, le=600)   # postgresql: seconds one operation
    #   (a group commit, a claim, a read) may take; beyond it the database counts as cut off
    #   (a partition without a TCP reset): 451 4.3.0, the connection is dropped and replaced


def redacted_dsn(dsn: str, secret: str = "***") -> str:
    """``dsn`` with its password (``password=`` or a URI's ``user:password@``) replaced by
    ``secret``, for `mailgate check-config`; an unparsable DSN is shown as ``secret``."""
    if not dsn:
        return ""
    from psycopg import conninfo
    try:
        d = conninfo.conninfo_to_dict(dsn)
    except Exception:
        return secret
    if "password" in d:
        d["password"] = secret
    return conninfo.make_conninfo("", **d)


def node_name(cfg: "Config") -> str:
    """This gateway's node name: ``spool.node``, else ``server.hostname``."""
    return cfg.spool.node or cfg.server.hostname


def across_keys(cfg: "Config") -> list[tuple[str, str]]:
    """(key, message) for each rule of the [spool] section that ``cfg`` breaks."""
    s = cfg.spool
    if s.backend != "postgresql":
        if s.dsn:
            return [("spool.dsn", 'is only used with spool.backend = "postgresql"')]
        return []
    errors = []
    if not s.dsn.strip():
        errors.append(("spool.dsn", 'required with spool.backend = "postgresql" (e.g. '
                                    '"host=db1 dbname=mailgate user=mailgate")'))
    else:
        try:
            from psycopg import conninfo
            conninfo.conninfo_to_dict(s.dsn)
        except Exception as e:     # the message names the part that is wrong, not the password
            errors.append(("spool.dsn", f"not a libpq connection string: {type(e).__name__}"))
    return errors


__all__ = ["SpoolConfig", "node_name", "across_keys", "redacted_dsn"]
