"""gateway.spool_open.open_worker_spool on PostgreSQL (a real PostgreSQL 15): an intake worker's
pool is ``spool.worker_pool_size`` connections at most, it joins the supervisor's node under
the node's tag (no migration, no ``nodes`` row of its own) and its queue IDs carry the node's
tag then the worker's (spool.commit.node_tag)."""
from __future__ import annotations

import asyncio

import psycopg
import pytest

from gateway.config import parse
from gateway.spool_open import WORKER_POOL_SIZE, open_worker_spool
from spool import NewMessage
from spool.commit import node_tag


def pg_cfg(dsn: str, **spool):
    return parse({"spool": {"backend": "postgresql", "dsn": dsn, "node": "mx1", **spool},
                  "continuity": {"mode": "off"}, "webmail": {"enabled": False}}, "t.toml")


@pytest.mark.parametrize("size", [None, 1, 3])
def test_a_workers_pool_is_worker_pool_size_and_its_ids_carry_both_tags(pg_dsn, size):
    cfg = pg_cfg(pg_dsn, **({} if size is None else {"worker_pool_size": size}))

    async def go():
        spool = await open_worker_spool(cfg, 2, node_tag="7Q")
        try:
            qid = await spool.commit(NewMessage(mail_from="a@remote.test", rcpt_tos=("b@example.com",),
                                                data=b"Subject: x\r\n\r\ny\r\n",
                                                queue_id=spool.new_queue_id()))   # as intake does
            return spool.pool.max_size, qid
        finally:
            await spool.close()
    max_size, qid = asyncio.run(go())
    assert max_size == (WORKER_POOL_SIZE if size is None else size)
    assert qid[10:14] == "7Q" + node_tag(2), qid
    with psycopg.connect(pg_dsn) as conn:     # the committed row, and no node row of the worker
        assert conn.execute("SELECT count(*) FROM messages WHERE queue_id = %s", (qid,)).fetchone()[0] == 1
        assert conn.execute("SELECT count(*) FROM nodes").fetchone()[0] == 0
