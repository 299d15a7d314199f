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
"""
from __future__ import annotations

import asyncio

from gateway.config import Config
from gateway.config_spool import node_name
from spool import Spool, SpoolError

RETRY_FIRST, RETRY_MAX = 1.0, 30.0     # seconds between attempts to reach PostgreSQL at start-up


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


def describe(cfg: Config) -> dict:
    """The spool for the ``spool_open`` log line: its path, or its host/port/dbname and node
    (never the DSN's password)."""
    if cfg.spool.backend == "sqlite":
        return {"backend": "sqlite", "path": str(cfg.spool_path)}
    from spool.pg.db import where
    return {"backend": "postgresql", "database": where(cfg.spool.dsn), "node": node_name(cfg)}


__all__ = ["open_spool", "describe"]
