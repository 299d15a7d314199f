"""PROXY protocol v1/v2 on the real intake in-process (aiosmtpd's parser, our trust check and
client address), no HAProxy: headers are written by hand over real TCP connections, and the
assertions are on the spool rows, the Received: header, the replies and the refusal counters.
tests/e2e/test_haproxy.py runs the same behind a real HAProxy."""
from __future__ import annotations

import asyncio
import io
import ipaddress
import re
import struct
import time

import pytest

from gateway import config as config_mod
from gateway.app import RcptContextSource
from gateway.intake.handler import IntakeHandler
from gateway.intake.server import IntakeServer
from gateway.logs import make_logger
from policies.directory import DirectoryWatcher
from spool import Spool
from tests.support.rawsmtp import RawSMTP

V2_SIG = b"\r\n\r\n\x00\r\nQUIT\n"
QUEUED = re.compile(rb"^250 2\.0\.0 Ok: queued as ([0-9B-Z]{14})")
RAW = b"From: a@remote.test\r\nTo: bob@example.com\r\nSubject: proxied\r\n\r\nbody\r\n"


def v1(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    fam = "TCP6" if ":" in src else "TCP4"
    return f"PROXY {fam} {src} {dst} {sport} {dport}\r\n".encode()


def v2(src: str, dst: str = "127.0.0.1", sport: int = 40000, dport: int = 25) -> bytes:
    """A v2 PROXY command over TCP (IPv4 or IPv6), spec §2.2."""
    s, d = ipaddress.ip_address(src), ipaddress.ip_address(dst)
    fam = 0x11 if s.version == 4 else 0x21
    body = s.packed + d.packed + struct.pack("!HH", sport, dport)
    return V2_SIG + bytes([0x21, fam]) + struct.pack("!H", len(body)) + body


V2_LOCAL = V2_SIG + bytes([0x20, 0x00]) + struct.pack("!H", 0)   # HAProxy's health checks


class Conn(RawSMTP):
    """A raw SMTP client over asyncio streams (the server runs in the same loop)."""

    @classmethod
    async def open(cls, port: int, header: bytes = b"") -> Conn:
        return await cls.connect(port, header)

    async def mail(self, rcpt: str = "bob@example.com") -> bytes:
        """EHLO, MAIL, RCPT, DATA: the last reply (the first failure's, if any)."""
        for line in ("EHLO client.remote.test", "MAIL FROM:<a@remote.test>", f"RCPT TO:<{rcpt}>"):
            rep = await self.cmd(line)
            if not rep.startswith(b"250"):
                return rep
        if not (await self.cmd("DATA")).startswith(b"354"):
            return b"no 354"
        self.w.write(RAW + b".\r\n")
        return await self.reply()


@pytest.fixture
async def intake(tmp_path):
    """Intake with a trusting PROXY listener (127.0.0.1 may send the header), a PROXY listener
    that trusts only 10.0.0.0/8 (so our 127.0.0.1 is untrusted), and relay allowed for the
    documentation network 198.51.100.0/24 only."""
    made = []

    async def make(**smtp):
        cfg = config_mod.parse({
            "server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
            "smtp": {"listen": [], **smtp, "listeners": [
                {"address": "127.0.0.1:0", "proxy_protocol": True, "proxy_trusted": ["127.0.0.1"],
                 "proxy_timeout": 3.0},
                {"address": "127.0.0.1:0", "proxy_protocol": True,
                 "proxy_trusted": ["10.0.0.0/8"]}]},
            "relay": {"accepted_domains": ["example.com"], "trusted_networks": ["198.51.100.0/24"]}},
            "test")
        spool = await Spool.open(cfg.spool_path)
        stream = io.StringIO()
        log = make_logger("info", "kv", stream=stream)
        handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, DirectoryWatcher(None)),
                                lambda qid: None, log)
        server = IntakeServer(cfg, handler)
        (_, trusting), (_, untrusting) = await server.start()
        made.append((server, spool))
        return server, spool, trusting, untrusting, stream

    yield make
    for server, spool in made:
        await server.stop()
        await spool.close()


@pytest.mark.parametrize("header", [v1, v2], ids=["v1", "v2"])
async def test_the_header_client_is_the_one_relay_control_received_and_the_spool_see(intake, header):
    server, spool, port, _, log = await intake()
    c = await Conn.open(port, header("198.51.100.7"))      # in trusted_networks
    assert (await c.reply()).startswith(b"220 gw.test")
    rep = await c.mail("someone@elsewhere.test")            # relaying: allowed for this client
    qid = QUEUED.match(rep).group(1).decode()
    await c.close()
    m = await spool.get(qid, with_data=True)
    assert m.client_addr == "198.51.100.7"
    assert m.data.startswith(b"Received: from client.remote.test ([198.51.100.7])\r\n")
    assert b"127.0.0.1" not in m.data
    assert f"queue_id='{qid}' client='198.51.100.7' proxy='127.0.0.1'" in log.getvalue()

    c = await Conn.open(port, header("203.0.113.9"))        # not trusted: relaying is refused
    assert (await c.reply()).startswith(b"220")
    rep = await c.mail("someone@elsewhere.test")
    assert rep.startswith(b"550 5.7.1"), rep                # relay access denied, for the client
    assert (await c.mail("bob@example.com")).startswith(b"250 2.0.0")   # local mail is fine
    await c.close()
    assert "client='203.0.113.9' proxy='127.0.0.1'" in log.getvalue()


async def test_ipv6_client_in_a_v2_header(intake):
    _, spool, port, _, _ = await intake()
    c = await Conn.open(port, v2("2001:db8::25", "::1"))
    assert (await c.reply()).startswith(b"220")
    qid = QUEUED.match(await c.mail()).group(1).decode()
    await c.close()
    m = await spool.get(qid, with_data=True)
    assert m.client_addr == "2001:db8::25"
    assert m.data.startswith(b"Received: from client.remote.test ([IPv6:2001:db8::25])\r\n")


@pytest.mark.parametrize("header", [V2_LOCAL, b"PROXY UNKNOWN\r\n"], ids=["v2-local", "v1-unknown"])
async def test_local_and_unknown_are_the_proxy_itself(intake, header):
    """Health checks: greeted, and the session is the proxy's own address."""
    _, spool, port, _, _ = await intake()
    c = await Conn.open(port, header)
    assert (await c.reply()).startswith(b"220")
    qid = QUEUED.match(await c.mail()).group(1).decode()
    await c.close()
    assert (await spool.get(qid)).client_addr == "127.0.0.1"


@pytest.mark.parametrize("header", [v1("198.51.100.7"), v2("198.51.100.7"), V2_LOCAL, b""],
                         ids=["v1", "v2", "v2-local", "nothing"])
async def test_a_peer_outside_proxy_trusted_is_closed_without_a_greeting(intake, header):
    server, spool, _, port, log = await intake()
    c = await Conn.open(port, header)
    assert await c.reply() == b""                            # closed at once, nothing sent
    await c.close()
    assert server.proxy_refused["untrusted"] == 1
    assert "event='proxy_refused' reason='untrusted' proxy='127.0.0.1'" in log.getvalue()
    assert not any((await spool.counts()).values())          # nothing in the spool
    assert server.limits.open == 0 and not server.limits.by_ip


async def test_no_header_is_closed_after_proxy_timeout(intake):
    server, _, port, _, log = await intake()
    t0 = time.monotonic()
    c = await Conn.open(port)
    assert await c.reply(timeout=10) == b""                 # no greeting, then closed
    took = time.monotonic() - t0
    await c.close()
    assert 2.9 <= took < 5.0, took                          # proxy_timeout = 3.0
    assert server.proxy_refused["timeout"] == 1
    assert "reason='timeout'" in log.getvalue()
    assert server.limits.open == 0


async def test_smtp_instead_of_a_header_is_closed_as_invalid(intake):
    server, _, port, _, log = await intake()
    c = await Conn.open(port, b"EHLO client.remote.test\r\n")
    assert await c.reply() == b""
    await c.close()
    for _ in range(50):                                     # connection_lost runs after our EOF
        if server.proxy_refused["invalid"]:
            break
        await asyncio.sleep(0.02)
    assert server.proxy_refused["invalid"] == 1
    assert "reason='invalid'" in log.getvalue()


async def test_per_client_limit_is_keyed_by_the_header_client(intake):
    server, _, port, _, _ = await intake(max_connections_per_client=1)
    first = await Conn.open(port, v2("198.51.100.7"))
    assert (await first.reply()).startswith(b"220")
    assert dict(server.limits.by_ip) == {"198.51.100.7": 1}   # never the proxy's 127.0.0.1
    again = await Conn.open(port, v1("198.51.100.7"))
    assert (await again.reply()).startswith(b"421 4.7.0")
    assert await again.reply() == b""
    other = await Conn.open(port, v2("198.51.100.8"))        # same proxy, another client
    assert (await other.reply()).startswith(b"220")
    assert dict(server.limits.by_ip) == {"198.51.100.7": 1, "198.51.100.8": 1}
    for c in (first, again, other):
        await c.close()
    for _ in range(50):
        if server.limits.open == 0:
            break
        await asyncio.sleep(0.02)
    assert server.limits.open == 0 and not server.limits.by_ip


async def test_the_header_client_survives_starttls(intake, tmp_path):
    """STARTTLS makes aiosmtpd start a new session: the client address must carry over."""
    import ssl

    import trustme
    ca = trustme.CA()
    cert = ca.issue_cert("gw.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "gw.pem"))
    _, spool, port, _, _ = await intake(tls_cert=str(tmp_path / "gw.pem"))
    c = await Conn.open(port, v2("198.51.100.7"))
    assert (await c.reply()).startswith(b"220")
    assert b"STARTTLS" in await c.cmd("EHLO client.remote.test")
    assert (await c.cmd("STARTTLS")).startswith(b"220")
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    await c.w.start_tls(client_ctx, server_hostname="gw.test")
    rep = await c.mail("someone@elsewhere.test")           # relay allowed: still 198.51.100.7
    qid = QUEUED.match(rep).group(1).decode()
    await c.close()
    m = await spool.get(qid, with_data=True)
    assert m.client_addr == "198.51.100.7"
    assert m.data.startswith(b"Received: from client.remote.test ([198.51.100.7])\r\n\tby gw.test "
                             b"(mailgate) with ESMTPS")
