"""The real intake (IntakeServer + IntakeHandler) over the PostgreSQL spool, driven by smtplib:
a 250 only once the message is in PostgreSQL; PostgreSQL stopped (pg_ctl stop -m immediate) →
451 4.3.0, never a 250 or a crash; PostgreSQL back → 250 again without a restart. This is the
handler handed a PgSpool directly: `mailgate serve` cannot be configured for PostgreSQL yet."""
from __future__ import annotations

import asyncio
import io
import re

import pytest

from gateway import config as config_mod
from gateway.app import RcptContextSource
from gateway.intake.handler import IntakeHandler
from gateway.intake.server import IntakeServer
from gateway.logs import make_logger
from policies.directory import DirectoryWatcher
from tests.gateway.intake.test_handler import RAW, SPOOL_ERROR, Intake
from tests.support import postgres as pg

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9B-Z]{14,16})$")

pytestmark = pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")


async def test_intake_on_postgresql_answers_451_while_it_is_down_and_250_after(tmp_path):
    from spool.pg import PgSpool
    cluster = await asyncio.to_thread(pg.started_cluster)
    server = spool = None
    try:
        await asyncio.to_thread(pg.make_template, cluster)
        _name, dsn = await asyncio.to_thread(pg.fresh_database, cluster)
        spool = await PgSpool.open(dsn, node="gw1", timeout=2.0)
        cfg = config_mod.parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                                "smtp": {"listen": ["127.0.0.1:0"]},
                                "relay": {"accepted_domains": ["example.com"]}}, "test")
        stream = io.StringIO()
        it = Intake(cfg, spool, None, None, 0, stream)
        it.handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, DirectoryWatcher(cfg.directory.file)),
                                   it.queued.append, make_logger("info", "kv", stream=stream))
        server = it.server = IntakeServer(cfg, it.handler)
        (_host, it.port), = await server.start()

        code, text = await it.send()
        assert code == 250, text
        first = QUEUED.match(text).group(1)
        assert (await spool.get(first, with_data=True)).data.endswith(RAW)

        await asyncio.to_thread(cluster.stop, "immediate")
        assert await it.send() == SPOOL_ERROR
        assert it.queued == [first]
        assert "spool_commit_failed" in stream.getvalue()

        await asyncio.to_thread(cluster.start)
        for _ in range(50):                          # the pool reconnects by itself
            code, text = await it.send()
            if code == 250:
                break
            assert (code, text) == SPOOL_ERROR
            await asyncio.sleep(0.2)
        assert code == 250, text
        second = QUEUED.match(text).group(1)
        assert it.queued == [first, second]
        counts = await spool.counts()
        assert counts["incoming"] == 2               # every 250 is in the database, nothing else
    finally:
        if server is not None:
            await server.stop()
        if spool is not None:
            await spool.close()
        await asyncio.to_thread(cluster.destroy)
