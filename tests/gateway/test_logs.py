"""One structured log (gateway/logs.py): control characters escaped as \\xNN in every field of
every line, structlog's and stdlib's; stdlib records (our modules' loggers, aiosmtpd's mail.log,
asyncio) in the same format at the configured level. End to end: a real gateway process fed
escape sequences, BEL and a bare CR inside an unknown command over a raw socket, then its log
file read back; stdlib info and warning lines of policies/directory.py and delivery/mx.py appear
there in structured form. Issue 6 item 12."""
from __future__ import annotations

import io
import json
import logging
import smtplib
import socket

import pytest

from gateway.logs import escape, make_logger, route_stdlib
from tests.conftest import config_toml
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for

NASTY = "red\x1b[31m bell\x07 cr\r nl\n nul\x00 del\x7f csi\x9b nel\x85 end"
RAW = ("\x1b", "\x07", "\r", "\x00", "\x7f", "\x9b", "\x85")
ESCAPED = ("\\x1b[31m", "\\x07", "\\x0d", "\\x0a", "\\x00", "\\x7f", "\\x9b", "\\x85")


def test_escape_is_visible_and_reversible_in_shape():
    assert escape(NASTY) == ("red\\x1b[31m bell\\x07 cr\\x0d nl\\x0a nul\\x00 del\\x7f csi\\x9b "
                             "nel\\x85 end")
    assert escape("tab\there ü €") == "tab\\x09here ü €"       # printable non-ASCII is kept


@pytest.mark.parametrize("fmt", ["kv", "json"])
def test_every_field_of_a_structlog_line_is_escaped(fmt):
    out = io.StringIO()
    log = make_logger("info", fmt, stream=out)
    log.warning(NASTY, client=NASTY, rcpts=[NASTY, "ok@example.com"], extra={"k": NASTY}, n=3)
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("\n")       # one event, one line
    body = text[:-1]
    for raw in RAW:
        assert raw not in body, repr(raw)
    if fmt == "json":
        line = json.loads(body)
        assert line["event"] == escape(NASTY) and line["client"] == escape(NASTY)
        assert line["rcpts"] == [escape(NASTY), "ok@example.com"]
        assert line["extra"] == {"k": escape(NASTY)} and line["n"] == 3
    else:
        for esc in ESCAPED:
            assert esc in body, esc
        assert body.startswith("ts='") and " level='warning' event='red\\x1b[31m bell" in body
        assert " n=3" in body and "'ok@example.com'" in body


def test_stdlib_records_join_the_structured_log():
    out = io.StringIO()
    log = make_logger("info", "kv", stream=out)
    root_level = logging.getLogger().level
    handler = route_stdlib(log, "info")
    try:
        logging.getLogger("mailgate.test").info("thing_done", extra={"path": "/x", "n": 2})
        logging.getLogger("mail.log").warning("%r unrecognised: %s", ("127.0.0.1", 5), NASTY)
        try:
            raise ValueError("boom\x1b")
        except ValueError:
            logging.getLogger("asyncio").exception("Task exception was never retrieved")
    finally:
        route_stdlib(None)
        logging.getLogger().setLevel(root_level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3, lines
    assert "level='info' event='thing_done' logger='mailgate.test' path='/x' n=2" in lines[0]
    assert "level='warning' event='(\\'127.0.0.1\\', 5) unrecognised: red\\x1b[31m" in lines[1]
    assert "logger='mail.log'" in lines[1]
    assert "logger='asyncio'" in lines[2] and "exception='Traceback" in lines[2]
    assert "ValueError: boom\\x1b" in lines[2]
    for raw in RAW:
        assert raw not in out.getvalue().replace("\n", ""), repr(raw)
    assert handler not in logging.getLogger().handlers


SMARTHOST = "relay.smarthost.test"


def test_gateway_log_escapes_client_bytes_and_carries_stdlib_lines(peers, tmp_path):
    """The gateway as a process: an unknown command with ESC, BEL and a bare CR over a raw
    socket; a message relayed through a smarthost name whose best MX target has no address
    (delivery/mx.py warns) with a recipient directory (policies/directory.py informs)."""
    sink = peers.sink("127.0.0.21", None, "mx")
    directory = tmp_path / "directory.json"
    directory.write_text(json.dumps({"mailboxes": ["bob@example.com"]}))
    with DnsServer(mx={SMARTHOST: [(10, "ghost.smarthost.test"), (20, "mx1.smarthost.test")]},
                   a={"mx1.smarthost.test": "127.0.0.21"}) as dns:
        port = free_port()
        gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost=SMARTHOST,
                                       smarthost_port=sink.port, dns_port=dns.port,
                                       directory=directory), port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            f = s.makefile("rb")
            assert f.readline().startswith(b"220 ")
            s.sendall(b"X\x1b[31mEVIL\x07BELL\rCR\r\n")
            assert f.readline().startswith(b"500 ")             # unrecognised: the client's reply
            s.sendall(b"QUIT\r\n")
            assert f.readline().startswith(b"221 ")
        with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
            c.sendmail("alice@remote.test", ["bob@example.com"], b"Subject: hi\r\n\r\nhello\r\n")
        wait_for(lambda: sink.count() == 1, 20, what="the message at the smarthost")
        log = wait_for(lambda: (lambda t: t if "mx_target_skipped" in t and "unrecognised" in t
                                else None)(gw.log_text()), 10, what="the log lines")
    raw = gw.log.read_bytes()
    assert b"\x1b" not in raw and b"\x07" not in raw and b"\r" not in raw
    unknown = [line for line in log.splitlines() if "unrecognised" in line]
    assert len(unknown) == 1 and "X\\x1b[31MEVIL\\x07BELL\\x0dCR" in unknown[0], unknown
    assert "level='warning'" in unknown[0] and "logger='mail.log'" in unknown[0]
    assert unknown[0].startswith("ts='")
    skipped = [line for line in log.splitlines() if "event='mx_target_skipped'" in line]
    assert skipped and "logger='mailgate.delivery.mx'" in skipped[0], skipped
    assert f"domain='{SMARTHOST}' target='ghost.smarthost.test' preference=10" in skipped[0]
    loaded = [line for line in log.splitlines() if "logger='mailgate.policies.directory'" in line]
    assert loaded and "level='info' event='directory_loaded'" in loaded[0], loaded
    assert "recipients=1" in loaded[0]


# --- batched lines (gateway.logbatch, `mailgate serve`) -------------------------------------

def test_batched_lines_in_one_loop_iteration_are_one_write():
    import asyncio as _asyncio

    class CountingStream(io.StringIO):
        writes = 0

        def write(self, s):
            CountingStream.writes += 1
            return super().write(s)

    out = CountingStream()
    log = make_logger("info", stream=out, batched=True)

    async def main():
        for i in range(5):
            log.info("queued", queue_id=f"Q{i}")
        assert out.getvalue() == ""             # still pending in this iteration
        await _asyncio.sleep(0)
        await _asyncio.sleep(0)
        return out.getvalue()

    text = _asyncio.run(main())
    lines = text.splitlines()
    assert [ln.split("queue_id=")[1] for ln in lines] == [f"'Q{i}'" for i in range(5)]
    assert CountingStream.writes == 1


def test_batched_lines_outside_a_loop_and_from_threads_are_written_at_once():
    import asyncio as _asyncio
    import threading as _threading

    from gateway.logs import flush_logs
    out = io.StringIO()
    log = make_logger("info", stream=out, batched=True)
    log.info("no_loop")
    assert "event='no_loop'" in out.getvalue()

    async def main():
        log.info("in_loop")
        t = _threading.Thread(target=lambda: log.info("from_thread"))
        t.start()
        t.join()
        # the thread's line wrote the pending loop line first: order kept
        return out.getvalue()

    text = _asyncio.run(main())
    assert text.index("in_loop") < text.index("from_thread")
    log2 = make_logger("info", stream=out, batched=True)

    async def pending():
        log2.info("at_shutdown")

    _asyncio.run(pending())
    flush_logs(log2)
    assert "at_shutdown" in out.getvalue()
