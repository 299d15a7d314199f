"""The queue manager on a PostgreSQL spool (issue 9), in this process, with a real PostgreSQL 15
and a real sink process: one message with a recipient the sink takes, one it refuses for good
(550) and one it defers (451). Checks the rows: delivered and pending recipients, the message
deferred with its error, and the bounce (RFC 3464 DSN) queued in the same transaction under a
queue ID carrying this node's tag, then delivered to the sender."""
from __future__ import annotations

import asyncio
import time

from gateway.app import build_resolver
from gateway.delivery.qmgr import QueueManager
from gateway.delivery.transport import SmtpTransport
from gateway.logs import make_logger
from gateway.router import Router
from spool import NewMessage, QueueState, RcptState
from tests.gateway.delivery.test_claims import pg_cfg


async def test_deliver_defer_and_bounce_on_postgresql(peers, tmp_path, pg_dsn):
    from spool.pg import PgSpool
    sink = peers.sink("127.0.0.1", None, "exchange", "--rcpt-reply", "gone@example.com=550",
                      "--rcpt-reply", "busy@example.com=451")
    cfg = pg_cfg(tmp_path, sink.port, pg_dsn, "n1")
    spool = await PgSpool.open(pg_dsn, node="n1")
    transport = SmtpTransport("n1.test", connect_timeout=2.0, command_timeout=10.0,
                              data_timeout=10.0, idle_timeout=0.0)
    qmgr = QueueManager(cfg, spool, Router(cfg), build_resolver(cfg), transport,
                        make_logger("error"))
    m = NewMessage(queue_id=spool.new_queue_id(), mail_from="alice@example.com",
                   rcpt_tos=("bob@example.com", "gone@example.com", "busy@example.com"),
                   data=b"From: alice@example.com\r\nSubject: three\r\n\r\nbody\r\n")
    await spool.commit(m)
    task = asyncio.create_task(qmgr.run())
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end:
            got = await spool.get(m.queue_id)
            if got.state is QueueState.DEFERRED and sink.count() >= 2:
                break
            await asyncio.sleep(0.1)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await qmgr.drain(5)
        await transport.close()
    try:
        got = await spool.get(m.queue_id)
        assert got.state is QueueState.DEFERRED and got.attempts == 1
        assert [r.state for r in got.recipients] == [RcptState.DELIVERED, RcptState.BOUNCED,
                                                     RcptState.PENDING]
        assert got.last_error.startswith("550") or got.last_error.startswith("451")
        counts = await spool.counts()
        assert counts["delivered"] == 1 and counts["deferred"] == 1, counts   # the DSN, sent
        envs = [env for env, _data in sink.messages()]
        dsn_env = next(e for e in envs if e["mail_from"] in ("", "<>"))
        assert dsn_env["rcpt_tos"] == ["alice@example.com"]
        dsn_data = next(d for e, d in sink.messages() if e is not None and e["mail_from"] in ("", "<>"))
        assert b"multipart/report" in dsn_data and b"gone@example.com" in dsn_data
        assert b"busy@example.com" not in dsn_data.split(b"message/delivery-status")[1][:2000]
        ids = [r for r in await spool.read(_ids)]
        dsn_id = next(q for q, is_dsn in ids if is_dsn)
        assert len(dsn_id) == 16 and dsn_id[10:12] == spool.node_tag, (dsn_id, spool.node_tag)
        assert qmgr.stats["dsn"] == 1 and qmgr.stats["delivered"] == 2   # bob, then the DSN
    finally:
        await spool.close()


async def _ids(conn):
    cur = await conn.execute("SELECT queue_id, is_dsn FROM messages")
    return await cur.fetchall()
