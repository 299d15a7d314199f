"""Intake limits against abusive clients, seen by real sockets (issue 6 item 9): DATA slots per
client address, the per-read timeout and the minimum data rate during DATA (421 4.4.2, then the
connection is closed), the error limit and the junk-command limit (421 4.7.0, then closed).

Slow clients come from loopback aliases 127.0.0.2.. and the legitimate sender from 127.0.0.1;
the tests assert on the replies the clients receive, on the connection being closed, and on what
the sink received. Socket timeouts are generous upper bounds, not measurements of speed.
"""
from __future__ import annotations

import select
import socket
import threading
import time

import pytest

from tests.conftest import Peers, config_toml
from tests.support.peers import free_port, wait_for

TOO_MANY_ERRORS = b"421 4.7.0 Error: too many errors, closing connection\r\n"
DATA_TIMEOUT = b"421 4.4.2 Timeout exceeded while reading the message data, closing connection\r\n"
TOO_SLOW = b"421 4.4.2 Message data arrives too slowly (minimum data rate), closing connection\r\n"
RELAY_DENIED = b"550 5.7.1 Relay access denied\r\n"
NOOP_OK = b"250 2.0.0 OK\r\n"
START_DATA = b"354 End data with <CR><LF>.<CR><LF>\r\n"
GLOBAL_SLOTS, TRICKLERS = 4, ("127.0.0.2", "127.0.0.3", "127.0.0.4")


def with_smtp_keys(toml: str, **keys) -> str:
    return toml.replace("[smtp]\n", "[smtp]\n" + "".join(f"{k} = {v!r}\n" for k, v in keys.items()), 1)


def start(peers: Peers, name: str, workers: int | None = None, **smtp):
    sink = peers.sink("127.0.0.51", None, f"exchange-{name}")
    port = free_port()
    toml = config_toml(port=port, data_dir=peers.base / f"data-{name}",
                       smarthost=f"[127.0.0.51]:{sink.port}", workers=workers)
    return peers.gateway(with_smtp_keys(toml, **smtp), port, name=name), sink


@pytest.fixture(scope="module")
def slots_gw(tmp_path_factory):
    """Four DATA slots in all, one per client address; the rate limit out of the way. One
    process: these tests count one IntakeServer's slots exactly (with workers each gets its
    share: tests/e2e/test_workers_limits.py)."""
    peers = Peers(tmp_path_factory.mktemp("intake-slots"))
    yield start(peers, "slots", workers=1, max_concurrent_data=GLOBAL_SLOTS, max_concurrent_data_per_client=1,
                min_data_rate_grace=600.0)
    peers.close()


@pytest.fixture(scope="module")
def slow_gw(tmp_path_factory):
    """One DATA slot; 500 bytes/s after a 1 s grace; 2 s without a byte is a timeout."""
    peers = Peers(tmp_path_factory.mktemp("intake-slow"))
    yield start(peers, "slow", workers=1, max_concurrent_data=1, max_concurrent_data_per_client=1,
                min_data_rate=500.0, min_data_rate_grace=1.0, data_read_timeout=2.0)
    peers.close()


class Client:
    """A raw SMTP client on one socket: ``cmd()`` sends a line and returns the final reply line."""

    def __init__(self, port: int, source: str = "127.0.0.1", timeout: float = 30.0):
        self.s = socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                          source_address=(source, 0))
        self.f = self.s.makefile("rb")
        assert self.f.readline().startswith(b"220 ")

    def cmd(self, line: bytes) -> bytes:
        self.s.sendall(line + b"\r\n")
        return self.reply()

    def reply(self) -> bytes:
        while (r := self.f.readline())[3:4] == b"-":
            pass
        return r

    def closed(self) -> bool:
        """True if the server closed the connection (EOF with nothing more to read)."""
        return self.f.read() == b""

    def envelope(self, sender: str, rcpt: str = "bob@example.com") -> None:
        assert self.cmd(b"EHLO client.test").startswith(b"250 ")
        assert self.cmd(f"MAIL FROM:<{sender}>".encode()).startswith(b"250 ")
        assert self.cmd(f"RCPT TO:<{rcpt}>".encode()).startswith(b"250 ")

    def close(self) -> None:
        self.s.close()


def trickle(port: int, source: str, started: list, stop: threading.Event) -> None:
    """DATA, then one byte every 0.5 s until ``stop``; appends its reply to DATA to ``started``."""
    c = Client(port, source, timeout=120)
    try:
        c.envelope(f"slow-{source}@remote.test")
        c.s.sendall(b"DATA\r\n")
        started.append(c.reply())
        while not stop.wait(0.5):
            c.s.sendall(b"x")
    except OSError:
        pass
    finally:
        c.close()


def test_trickling_clients_do_not_hold_the_slots_of_other_addresses(slots_gw):
    gateway, sink = slots_gw
    started: list[bytes] = []
    stop = threading.Event()
    threads = [threading.Thread(target=trickle, args=(gateway.port, ip, started, stop), daemon=True)
               for ip in TRICKLERS for _ in range(3)]             # 9 sessions, 3 addresses
    for t in threads:
        t.start()
    try:
        wait_for(lambda: len(started) >= len(TRICKLERS), 30, what="the trickling clients in DATA")
        time.sleep(1.0)     # let the other six DATA commands reach the server before ours
        c = Client(gateway.port, "127.0.0.1", timeout=30)
        c.envelope("legit@remote.test")
        assert c.cmd(b"DATA") == START_DATA
        assert c.cmd(b"Subject: legit\r\n\r\nbody\r\n.").startswith(b"250 2.0.0 Ok: queued as ")
        c.close()
        # one slot per address: three trickling sessions got 354, six wait for their address
        assert started == [START_DATA] * len(TRICKLERS)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
    env, data = wait_for(lambda: next(((e, d) for e, d in sink.messages()
                                       if e["mail_from"] == "legit@remote.test"), None),
                         20, what="the legitimate message at the sink")
    assert env["rcpt_tos"] == ["bob@example.com"] and data.endswith(b"\r\n\r\nbody\r\n")


def test_a_client_below_the_minimum_data_rate_gets_421_and_its_slot_goes_to_the_next(slow_gw):
    gateway, sink = slow_gw
    slow = Client(gateway.port, "127.0.0.2")
    slow.envelope("trickler@remote.test")
    assert slow.cmd(b"DATA") == START_DATA
    for _ in range(200):                  # a byte every 0.2 s: under 500 bytes/s after 1 s
        slow.s.sendall(b"x")
        if select.select([slow.s], [], [], 0.2)[0]:
            break
    assert slow.f.readline() == TOO_SLOW
    assert slow.closed()
    slow.close()
    c = Client(gateway.port, "127.0.0.1")        # the one slot is free again
    c.envelope("after-trickler@remote.test")
    assert c.cmd(b"DATA") == START_DATA
    assert c.cmd(b"Subject: next\r\n\r\n" + b"y" * 4000 + b"\r\n.").startswith(b"250 2.0.0 ")
    c.close()
    wait_for(lambda: any(e["mail_from"] == "after-trickler@remote.test" for e, _ in sink.messages()),
             20, what="the next message at the sink")
    assert not any(e["mail_from"] == "trickler@remote.test" for e, _ in sink.messages())


def test_a_client_that_stops_sending_in_data_gets_421_after_the_read_timeout(slow_gw):
    gateway, sink = slow_gw
    c = Client(gateway.port, "127.0.0.3")
    c.envelope("stalled@remote.test")
    assert c.cmd(b"DATA") == START_DATA
    c.s.sendall(b"Subject: stalled\r\n\r\n" + b"z" * 20000 + b"\r\n")   # rate credit: 40 s
    assert c.reply() == DATA_TIMEOUT
    assert c.closed()
    c.close()
    assert not any(e["mail_from"] == "stalled@remote.test" for e, _ in sink.messages())


def test_twenty_refused_recipients_then_421_and_the_connection_is_closed(slots_gw):
    c = Client(slots_gw[0].port, "127.0.0.7")
    assert c.cmd(b"EHLO harvester.test").startswith(b"250 ")
    assert c.cmd(b"MAIL FROM:<harvest@remote.test>").startswith(b"250 ")
    replies = [c.cmd(f"RCPT TO:<user{i}@foreign.test>".encode()) for i in range(20)]
    assert replies == [RELAY_DENIED] * 20
    assert c.reply() == TOO_MANY_ERRORS           # sent after the 20th error, unasked
    assert c.closed()
    c.close()


def test_pipelined_commands_after_the_error_limit_get_no_reply(slots_gw):
    c = Client(slots_gw[0].port, "127.0.0.7")
    c.s.sendall(b"EHLO pipeline.test\r\nMAIL FROM:<p@remote.test>\r\n"
                + b"".join(f"RCPT TO:<u{i}@foreign.test>\r\n".encode() for i in range(30)))
    c.reply(), c.reply()
    assert [c.reply() for _ in range(20)] == [RELAY_DENIED] * 20
    assert c.reply() == TOO_MANY_ERRORS
    assert c.closed()
    c.close()


def test_a_delivered_message_resets_the_error_count(slots_gw):
    gateway, sink = slots_gw
    c = Client(gateway.port, "127.0.0.8")
    assert c.cmd(b"EHLO mixed.test").startswith(b"250 ")
    assert c.cmd(b"MAIL FROM:<mixed@remote.test>").startswith(b"250 ")
    for i in range(19):
        assert c.cmd(f"RCPT TO:<m{i}@foreign.test>".encode()) == RELAY_DENIED
    assert c.cmd(b"RCPT TO:<bob@example.com>").startswith(b"250 ")
    assert c.cmd(b"DATA") == START_DATA
    assert c.cmd(b"Subject: mixed\r\n\r\nok\r\n.").startswith(b"250 2.0.0 Ok: queued as ")
    assert c.cmd(b"MAIL FROM:<mixed@remote.test>").startswith(b"250 ")
    for i in range(19):
        assert c.cmd(f"RCPT TO:<n{i}@foreign.test>".encode()) == RELAY_DENIED
    assert c.cmd(b"QUIT").startswith(b"221 ")
    c.close()


@pytest.mark.parametrize("junk", [b"NOOP", b"RSET", b"VRFY bob", b"HELP"])
def test_120_junk_commands_then_421_and_the_connection_is_closed(slots_gw, junk):
    c = Client(slots_gw[0].port, "127.0.0.9")
    assert c.cmd(b"EHLO junk.test").startswith(b"250 ")
    first = c.cmd(junk)
    assert first[:1] == b"2", first
    replies = [c.cmd(junk) for _ in range(119)]       # 100 free, then 20 counted as errors
    assert replies == [first] * 119
    assert c.reply() == TOO_MANY_ERRORS
    assert c.closed()
    c.close()


def test_a_message_pipelined_after_the_421_is_not_queued(slots_gw):
    gateway, sink = slots_gw
    c = Client(gateway.port, "127.0.0.10")
    c.s.sendall(b"EHLO pipeline.test\r\nMAIL FROM:<late@remote.test>\r\n"
                + b"".join(f"RCPT TO:<v{i}@foreign.test>\r\n".encode() for i in range(20))
                + b"RCPT TO:<bob@example.com>\r\nDATA\r\nSubject: late\r\n\r\nlate\r\n.\r\n")
    c.reply(), c.reply()
    assert [c.reply() for _ in range(20)] == [RELAY_DENIED] * 20
    assert c.reply() == TOO_MANY_ERRORS
    assert c.closed()
    c.close()
    queued = gateway.cli("queue", "list", "--all", "--json").stdout
    assert "late@remote.test" not in queued
