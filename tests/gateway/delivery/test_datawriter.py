"""Our DATA writer (gateway/delivery/datawriter.py, issue 10 item 2): the wire form of the body
(one dot-stuffing pass, CRLF line ends), the final-dot check (fencing), the final-reply timeout,
and the aiosmtplib internals it relies on. Wire bytes are checked against a recording SMTP
server in this process and against real sink processes (tests/support/sink.py) through the
real SmtpTransport."""
from __future__ import annotations

import asyncio
import re

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, SMTPProtocol, normalize_message_line_endings

from gateway.delivery import datawriter
from gateway.delivery.datawriter import stuffed_chunks, wire_body
from gateway.delivery.transport import SmtpTransport, TlsPolicy
from tests.conftest import corpus_files

NO_TLS = TlsPolicy("none")
CRLF = re.compile(rb"\r\n|\n|\r")


def reference(data: bytes) -> bytes:
    """What aiosmtplib's data() put on the wire before the final dot (the old behaviour)."""
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(data))


def ours(data: bytes, chunk: int = datawriter.CHUNK) -> bytes:
    return b"".join(stuffed_chunks(wire_body(data), chunk))


CASES = [
    b"", b".", b"x", b"\n", b"\r", b"\r\n", b"..", b".\r\n", b"a\r\n.\r\n", b"a\r\n.b\r\n..c\r\n",
    b".starts with a dot\r\nand\r\n.another\r\n", b"no final line end", b"ends in cr\r",
    b"bare\nlf\n.dot after lf\n", b"bare\rcr\r.dot after cr", b"mixed\r\n\n\r\r\n.\n.\r.",
    b"\r\n.\r\n.\r\n", b"x" * 70 + b"\r\n." * 40, b"\x00\xff.\r\n\x80\r\n.",
]


@pytest.mark.parametrize("data", CASES)
@pytest.mark.parametrize("chunk", [1, 2, 3, 7, datawriter.CHUNK])
def test_wire_form_matches_aiosmtplib(data, chunk):
    """Lines starting with '.', a body without a final CRLF, 1-byte bodies, bare CR and LF, and
    every split of a CRLF '.' across two write slices give aiosmtplib's bytes."""
    assert ours(data, chunk) == reference(data)


def test_every_corpus_file_gets_aiosmtplib_wire_form():
    files = corpus_files()
    assert len(files) >= 250, "the corpus went missing"
    bad = [f.name for f in files for data in [f.read_bytes()]
           if ours(data) != reference(data) or ours(data, 4096) != reference(data)]
    assert not bad


def test_crlf_data_is_not_copied_for_normalising():
    data = b"Subject: x\r\n\r\nbody\r\n"
    assert wire_body(data) is data
    buf = bytearray(data)
    assert wire_body(buf) is buf


def test_aiosmtplib_internals_we_use_are_there():
    """datawriter drives aiosmtplib's protocol object: these names must exist (aiosmtplib 5.1.x)."""
    for name in ("execute_command", "write", "read_response", "_drain_helper"):
        assert callable(getattr(SMTPProtocol, name)), name
    loop = asyncio.new_event_loop()
    try:
        proto = SMTPProtocol(loop=loop)
        assert proto._response_pending is False and proto._paused is False
    finally:
        loop.close()


class Recorder:
    """A minimal SMTP server in this process that records every byte after DATA's 354:
    ``final`` is the reply to the final dot (None: never answer), ``bodies`` what arrived up to
    and including CRLF.CRLF, ``closed_without_dot`` counts DATA phases ended by a close."""

    def __init__(self, final: bytes | None = b"250 2.0.0 Ok\r\n"):
        self.final, self.bodies, self.closed_without_dot = final, [], 0
        self.server = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._session, "127.0.0.1", 0, limit=64 << 20)
        return self.server.sockets[0].getsockname()[1]

    async def _session(self, reader, writer):
        writer.write(b"220 rec.test ESMTP\r\n")
        try:
            while True:
                line = await reader.readline()
                if not line:
                    return
                cmd = line[:4].upper()
                if cmd == b"EHLO":
                    writer.write(b"250-rec.test\r\n250 8BITMIME\r\n")
                elif cmd == b"DATA":
                    writer.write(b"354 go\r\n")
                    try:
                        body = await reader.readuntil(b"\r\n.\r\n")
                    except asyncio.IncompleteReadError:
                        self.closed_without_dot += 1
                        return
                    self.bodies.append(body)
                    if self.final is None:
                        await asyncio.sleep(30)
                    writer.write(self.final)
                elif cmd == b"QUIT":
                    writer.write(b"221 bye\r\n")
                    return
                else:
                    writer.write(b"250 ok\r\n")
                await writer.drain()
        finally:
            writer.close()

    async def stop(self):
        self.server.close()


async def _send(port, data, **kw):
    t = SmtpTransport("gw.test", connect_timeout=2.0, command_timeout=5.0,
                      data_timeout=kw.pop("data_timeout", 5.0), idle_timeout=0.0)
    try:
        return await t.send("127.0.0.1", port, "rec.test", NO_TLS, "a@remote.test",
                            ["b@example.com", "c@example.com"], data, **kw)
    finally:
        await t.close()


async def test_wire_bytes_and_per_recipient_replies():
    rec = Recorder()
    port = await rec.start()
    data = b"Subject: x\r\n\r\n.leading\r\nmid\r\n..two\r\n.\r\nlast line no crlf"
    res = await _send(port, data)
    await rec.stop()
    assert res.connected and not res.fenced and not res.unknown_outcome
    assert res.rcpt == {"b@example.com": (250, "2.0.0 Ok"), "c@example.com": (250, "2.0.0 Ok")}
    assert rec.bodies == [reference(data) + b".\r\n"]


async def test_large_body_in_several_writes():
    rec = Recorder()
    port = await rec.start()
    line = b"." + b"y" * 76 + b"\r\n"
    data = b"Subject: big\r\n\r\n" + line * 40000          # ~3 MiB: 12 writes of 256 KiB
    res = await _send(port, data)
    await rec.stop()
    assert res.rcpt["b@example.com"][0] == 250
    assert rec.bodies == [reference(data) + b".\r\n"]


@pytest.mark.parametrize("check", ["false", "async_false", "raises"])
async def test_final_dot_withheld_when_the_check_says_no(check):
    async def async_false():
        return False

    def raises():
        raise RuntimeError("spool unreachable")

    fn = {"false": lambda: False, "async_false": async_false, "raises": raises}[check]
    rec = Recorder()
    port = await rec.start()
    res = await _send(port, b"Subject: x\r\n\r\nbody\r\n", before_final_dot=fn)
    for _ in range(100):
        if rec.closed_without_dot:
            break
        await asyncio.sleep(0.02)
    await rec.stop()
    assert rec.bodies == [] and rec.closed_without_dot == 1   # the server saw no final dot
    assert res.connected and res.fenced and not res.unknown_outcome
    for r in ("b@example.com", "c@example.com"):
        code, text = res.rcpt[r]
        assert code == 451 and text.startswith("4.3.0 final dot not sent")
    if check == "raises":
        assert "spool unreachable" in res.error


async def test_final_dot_sent_when_the_check_says_yes():
    calls = []

    async def ok():
        calls.append(len(rec.bodies))     # asked before the server has the dot
        return True

    rec = Recorder()
    port = await rec.start()
    res = await _send(port, b"Subject: x\r\n\r\nbody\r\n", before_final_dot=ok)
    await rec.stop()
    assert calls == [0] and len(rec.bodies) == 1 and res.rcpt["b@example.com"][0] == 250


async def test_no_final_reply_is_an_unknown_outcome():
    rec = Recorder(final=None)
    port = await rec.start()
    res = await _send(port, b"Subject: x\r\n\r\nbody\r\n", data_timeout=0.5)
    await rec.stop()
    assert len(rec.bodies) == 1                  # the dot went out, no reply came
    assert res.unknown_outcome and not res.fenced
    assert res.rcpt["b@example.com"][0] == 451 and "FinalReplyTimeout" in res.error


async def test_final_reply_5xx_is_per_transaction():
    rec = Recorder(final=b"554 5.7.1 content rejected\r\n")
    port = await rec.start()
    res = await _send(port, b"Subject: x\r\n\r\nbody\r\n")
    await rec.stop()
    assert res.rcpt == {"b@example.com": (554, "5.7.1 content rejected"),
                        "c@example.com": (554, "5.7.1 content rejected")}


def _normalize_crlf(b: bytes) -> bytes:
    b = CRLF.sub(b"\r\n", b)
    return b if b.endswith(b"\r\n") else b + b"\r\n"


async def test_corpus_through_a_real_sink(peers):
    """The stored bytes of corpus messages (bare CR, bare LF, dot lines, binary) through the
    real transport and a real aiosmtpd sink: the sink holds normalize_crlf(bytes), unstuffed."""
    sink = peers.sink("127.0.0.1", None, "exch")
    files = [f for f in corpus_files() if f.stat().st_size < 2_000_000]
    t = SmtpTransport("gw.test", connect_timeout=2.0, command_timeout=10.0, data_timeout=10.0,
                      idle_timeout=5.0)
    sent = []
    try:
        for f in files:
            data = f.read_bytes()
            res = await t.send(sink.host, sink.port, "exch.sink.test", NO_TLS, "a@remote.test",
                               ["b@example.com"], data)
            assert res.rcpt["b@example.com"][0] == 250, (f.name, res)
            sent.append((f.name, data))
    finally:
        await t.close()
    got = sink.messages()
    assert len(got) == len(sent)
    bad = [name for (name, data), (_env, body) in zip(sent, got) if body != _normalize_crlf(data)]
    assert not bad


async def test_withheld_dot_leaves_nothing_at_a_real_sink(peers):
    sink = peers.sink("127.0.0.1", None, "exch")
    t = SmtpTransport("gw.test", connect_timeout=2.0, command_timeout=10.0, data_timeout=10.0)
    try:
        res = await t.send(sink.host, sink.port, "exch.sink.test", NO_TLS, "a@remote.test",
                           ["b@example.com"], b"Subject: fenced\r\n\r\nbody\r\n",
                           before_final_dot=lambda: False)
        ok = await t.send(sink.host, sink.port, "exch.sink.test", NO_TLS, "a@remote.test",
                          ["b@example.com"], b"Subject: after\r\n\r\nbody\r\n")
    finally:
        await t.close()
    assert res.fenced and res.rcpt["b@example.com"][0] == 451
    assert ok.rcpt["b@example.com"][0] == 250
    subjects = [body.split(b"\r\n")[0] for _env, body in sink.messages()]
    assert subjects == [b"Subject: after"]


async def test_datawriter_refuses_a_closed_connection():
    smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=1)
    with pytest.raises(aiosmtplib.SMTPServerDisconnected):
        await datawriter.send_data(smtp, b"x\r\n")
