"""The global DATA slot limit (smtp.max_concurrent_data, gateway.intake.limits.DataSlots) on the
real intake in-process: IntakeServer + IntakeHandler over a real Spool in tmp_path, driven by raw
SMTP clients over TCP (asyncio streams, the server in the same loop). A session over the limit
waits for a slot after its DATA command (no 354, no refusal), and once a slot frees it gets its
354 and its message is accepted and spooled. Assertions are on the replies and the spool rows.
tests/e2e/test_intake_limits.py covers the per-client limit on a real gateway process."""
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
from spool import Spool
from tests.support.rawsmtp import RawSMTP

START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9B-Z]{14})\r\n$")
SLOTS = 2               # smtp.max_concurrent_data; the per-client limit (8) is not the one reached


class Conn(RawSMTP):
    """A raw SMTP client on one TCP connection."""

    @classmethod
    async def open(cls, port: int) -> Conn:
        c = await cls.connect(port)
        assert (await c.reply()).startswith(b"220 ")
        return c

    async def envelope(self, sender: str) -> None:
        for line in (b"EHLO client.remote.test", f"MAIL FROM:<{sender}>".encode(),
                     b"RCPT TO:<bob@example.com>"):
            assert (await self.cmd(line)).startswith(b"250"), line


def body(name: str) -> bytes:
    return f"From: {name}@remote.test\r\nTo: bob@example.com\r\nSubject: {name}\r\n\r\n".encode() \
        + b"x" * 2000 + b"\r\n"


@pytest.fixture
async def intake(tmp_path):
    cfg = config_mod.parse({
        "server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
        "smtp": {"listen": ["127.0.0.1:0"], "max_concurrent_data": SLOTS,
                 "max_concurrent_data_per_client": 8},
        "relay": {"accepted_domains": ["example.com"]}}, "test")
    spool = await Spool.open(cfg.spool_path)
    log = make_logger("info", "kv", stream=io.StringIO())
    handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, DirectoryWatcher(None)),
                            lambda qid: None, log)
    server = IntakeServer(cfg, handler)
    (_, port), = await server.start()
    yield server, spool, port
    await server.stop()
    await spool.close()


async def test_a_session_over_the_global_limit_waits_for_a_slot_and_its_message_is_spooled(intake):
    _server, spool, port = intake
    holders = [await Conn.open(port) for _ in range(SLOTS)]
    for i, c in enumerate(holders):
        await c.envelope(f"holder{i}@remote.test")
        assert await c.cmd(b"DATA") == START_DATA
        c.w.write(body(f"holder{i}")[:100])          # mid-upload: the slot stays held
    waiter = await Conn.open(port)
    await waiter.envelope("waiter@remote.test")
    waiter.w.write(b"DATA\r\n")
    answer = asyncio.create_task(waiter.reply(timeout=30))
    await asyncio.sleep(1.0)
    assert not answer.done(), answer.result()         # neither 354 nor a refusal: it waits
    assert not any((await spool.counts()).values())

    holders[0].w.write(body("holder0")[100:] + b".\r\n")     # one slot frees
    first = QUEUED.match(await holders[0].reply())
    assert first, "the first holder's message was not queued"
    assert await answer == START_DATA                 # the waiting session has the slot now
    waiter.w.write(body("waiter") + b".\r\n")
    waited = QUEUED.match(await waiter.reply())
    assert waited, "the waiting session's message was not queued"
    holders[1].w.write(body("holder1")[100:] + b".\r\n")
    second = QUEUED.match(await holders[1].reply())
    assert second
    for c in [*holders, waiter]:
        assert (await c.cmd(b"QUIT")).startswith(b"221")
        await c.close()

    for m, name in ((first, "holder0"), (waited, "waiter"), (second, "holder1")):
        row = await spool.get(m.group(1).decode(), with_data=True)
        assert row.state.value == "incoming" and row.mail_from == f"{name}@remote.test"
        assert [r.address for r in row.recipients] == ["bob@example.com"]
        assert row.data.startswith(b"Received: from client.remote.test ([127.0.0.1])\r\n")
        assert row.data.endswith(body(name))
    assert (await spool.counts()).get("incoming") == 3
