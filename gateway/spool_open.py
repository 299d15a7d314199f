"""Opening the spool the configuration names (``[spool]``, gateway/config_spool.py).

``open_spool(cfg)`` returns the SQLite ``spool.Spool`` at ``server.data_dir/spool.db`` (crash
recovery done) or, with ``spool.backend = "postgresql"``, a ``spool.pg.PgSpool`` registered as
node ``spool.node`` (default: ``server.hostname``). Both offer spool.api.QueueSpool; on
PostgreSQL ``spool.shared`` is True.

A PostgreSQL database that cannot be reached at start-up is waited for (``serve`` keeps trying,
backing off from 1 s to 30 s and logging each new error once) rather than ending the process: a
gateway started before its database, or during a database fail-over, comes up by itself.
Until then it has no SMTP listener, so clients get connection refused and retry, as with a
stopped Postfix. The SQLite spool failing to open is a local fault (permissions, a corrupt
file) and raises SpoolError at once.

``open_worker_spool(cfg, K, node_tag)`` is the spool of intake worker K (``server.workers`` >
1): the same storage, opened without recovery or registration (see its docstring).
"""
from __future__ import annotations

import asyncio

from gateway.config import Config
from gateway.config_spool import node_name
from spool import Spool, SpoolError

RETRY_FIRST, RETRY_MAX = 1.0, 30.0     # seconds between attempts to reach PostgreSQL at start-up
#: The default of spool.worker_pool_size: PostgreSQL connections an intake worker's pool may
#: hold (it keeps 1 open): a gateway with N workers uses up to spool.pool_size + N * this.
WORKER_POOL_SIZE = 2


async def open_spool(cfg: Config, log=None, stop: asyncio.Event | None = None):
    """The configured spool, open; None if ``stop`` was set while waiting for PostgreSQL (the
    gateway was told to stop before it started). Raises SpoolError (SQLite: at once;
    PostgreSQL: only without a ``log`` to report the wait on)."""
    s = cfg.spool
    if s.backend == "sqlite":
        return await Spool.open(cfg.spool_path)
    from spool.pg import PgSpool
    node, wait, last = node_name(cfg), RETRY_FIRST, ""
    while True:
        try:
            return await PgSpool.open(s.dsn, node=node, max_size=s.pool_size,
                                      timeout=s.connect_timeout, op_timeout=s.operation_timeout)
        except SpoolError as e:
            if log is None:
                raise
            if stop is not None and stop.is_set():
                return None
            if str(e) != last:
                log.error("spool_unavailable", node=node, error=str(e)[:300],
                          retry_in=wait, hint="the gateway starts once PostgreSQL answers")
                last = str(e)
        try:
            if stop is not None:
                await asyncio.wait_for(stop.wait(), wait)
                return None
            await asyncio.sleep(wait)
        except asyncio.TimeoutError:
            pass
        wait = min(wait * 2, RETRY_MAX)


async def open_worker_spool(cfg: Config, number: int, node_tag: str = ""):
    """The spool of intake worker ``number`` K (gateway.worker), open, its ``id_tag``
    spool.commit.node_tag(K) so no two workers of the gateway make the same queue ID.

    SQLite: ``spool.Spool`` at ``server.data_dir/spool.db`` with ``recover=False`` (recovery ran
    once, in the supervisor; a worker must never requeue another process's ``active`` messages)
    and the file's write lock (gateway.supervisor.write_lock_path). Raises SpoolError.

    PostgreSQL: a ``spool.pg.PgSpool`` of the supervisor's node (node_name) with the node tag
    ``node_tag`` the supervisor got when it registered the node (PgSpool.open with node_tag:
    no migration, the ``nodes`` row untouched, so ``mailgate cluster status`` keeps showing the
    supervisor's start). The open does not touch the database, so a worker started or restarted
    while PostgreSQL is down comes up and serves: each commit answers 451 4.3.0 (SpoolError)
    until the pool, reconnecting with backoff in the background, reaches the database again.
    Its pool holds at most ``spool.worker_pool_size`` connections (default WORKER_POOL_SIZE, 2;
    intake needs one: the group commit's writer); ``spool.pool_size`` is the supervisor's."""
    from spool.commit import node_tag as tag_of
    if cfg.spool.backend == "sqlite":
        from gateway.supervisor import write_lock_path
        spool = await Spool.open(cfg.spool_path, recover=False)
        spool.write_lock = write_lock_path(cfg)
    else:
        from spool.pg import PgSpool
        if not node_tag:
            raise ValueError("a worker on the PostgreSQL spool needs its node's tag")
        s = cfg.spool
        spool = await PgSpool.open(s.dsn, node=node_name(cfg), min_size=1,
                                   max_size=s.worker_pool_size, timeout=s.connect_timeout,
                                   op_timeout=s.operation_timeout, node_tag=node_tag)
    spool.id_tag = tag_of(number)
    return spool


def describe(cfg: Config) -> dict:
    """The spool for the ``spool_open`` log line: its path, or its host/port/dbname and node
    (never the DSN's password)."""
    if cfg.spool.backend == "sqlite":
        return {"backend": "sqlite", "path": str(cfg.spool_path)}
    from spool.pg.db import where
    return {"backend": "postgresql", "database": where(cfg.spool.dsn), "node": node_name(cfg)}


__all__ = ["open_spool", "open_worker_spool", "describe", "WORKER_POOL_SIZE"]
