"""SmtpInboundProbe against real SMTP sink processes (tests/support/sink.py): the canary accepted,
refused (550, 451), hosts down, a host that never greets, STARTTLS with a private CA, and the
hosts resolved through a real DNS server (dnsmasq) the way delivery resolves a smarthost."""
from __future__ import annotations

import asyncio
import random
import socket
import time

import pytest

from gateway.delivery.mx import MxResolver
from gateway.health import SmtpInboundProbe, mx_hosts
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port

CANARY, MAIL_FROM, HELO = "canary@example.com", "probe@gw.test", "gw.test"
RCPT_OK = "250 2.1.5 OK"
RCPT_UNKNOWN = "RCPT TO: 550 5.1.1 User unknown"
RCPT_TRY_LATER = "RCPT TO: 451 4.3.0 Try again later"
REFUSED = "connect: connection refused"
SITE_A = "site-a.smarthost.test"
MX1, MX2 = f"mx1.{SITE_A}", f"mx2.{SITE_A}"
WAIT = 10.0     # seconds: a bound for waiting on a check (5x the longest probe timeout here), never
                # the thing asserted: a probe that ignores its own timeout raises TimeoutError


def probe(hosts, **kw) -> SmtpInboundProbe:
    async def resolve():
        return list(hosts)
    kw.setdefault("timeout", 5.0)
    return SmtpInboundProbe("smtp:inbound", resolve, canary_rcpt=CANARY, mail_from=MAIL_FROM,
                            helo=HELO, **kw)


def hosts_detail(p: SmtpInboundProbe) -> dict[str, tuple[bool, str]]:
    return {r.probe: (r.ok, r.detail) for r in p.last_hosts}


async def test_canary_accepted_by_both_hosts_and_nothing_delivered(peers):
    a = peers.sink("127.0.0.11", None, "mx1")
    b = peers.sink("127.0.0.12", None, "mx2")
    p = probe([(MX1, "127.0.0.11", a.port), (MX2, "127.0.0.12", b.port)])
    before, started = time.time(), time.monotonic()
    r = await p.check()
    wall = time.monotonic() - started
    assert (r.probe, r.ok, r.critical) == ("smtp:inbound", True, True)
    assert r.detail.startswith("2/2 hosts accept the canary"), r.detail
    assert hosts_detail(p) == {f"smtp:{MX1}[127.0.0.11]:{a.port}": (True, RCPT_OK),
                               f"smtp:{MX2}[127.0.0.12]:{b.port}": (True, RCPT_OK)}
    assert 0 < r.latency <= wall and before <= r.at <= time.time()     # measured, not made up
    assert all(0 < h.latency <= r.latency for h in p.last_hosts)
    assert a.count() == 0 and b.count() == 0          # no DATA: no message ever reaches Exchange


async def test_canary_refused_550_is_failure(peers):
    s = peers.sink("127.0.0.11", None, "mx1", "--rcpt-reply", f"{CANARY}=550")
    p = probe([(MX1, "127.0.0.11", s.port)])
    r = await p.check()
    assert not r.ok
    assert r.detail == f"0/1 hosts accept the canary: {MX1}[127.0.0.11]:{s.port} {RCPT_UNKNOWN}"


async def test_canary_deferred_451_is_failure(peers):
    s = peers.sink("127.0.0.11", None, "mx1", "--all-reply", "451")
    r = await probe([(MX1, "127.0.0.11", s.port)]).check()
    assert not r.ok
    assert RCPT_TRY_LATER in r.detail, r.detail


async def test_one_host_of_two_down_is_still_ok(peers):
    a = peers.sink("127.0.0.11", None, "mx1")
    b = peers.sink("127.0.0.12", None, "mx2")
    b.stop()                                         # mx2 was up and is gone: refused
    p = probe([(MX1, "127.0.0.11", a.port), (MX2, "127.0.0.12", b.port)])
    r = await p.check()
    assert r.ok
    assert r.detail.startswith("1/2 hosts accept the canary"), r.detail
    assert hosts_detail(p)[f"smtp:{MX2}[127.0.0.12]:{b.port}"] == (False, REFUSED)
    assert hosts_detail(p)[f"smtp:{MX1}[127.0.0.11]:{a.port}"] == (True, RCPT_OK)


async def test_all_hosts_down_is_failure(peers):
    p = probe([(MX1, "127.0.0.11", free_port()), (MX2, "127.0.0.12", free_port())])
    async with asyncio.timeout(WAIT):
        r = await p.check()
    assert not r.ok
    assert r.detail.startswith("0/2 hosts accept the canary"), r.detail
    assert [h.detail for h in p.last_hosts] == [REFUSED, REFUSED]    # refused, not timed out


@pytest.fixture
def silent_host():
    """A TCP listener on 127.0.0.13 that never accepts: connect succeeds, no greeting ever comes."""
    s = socket.socket()
    s.bind(("127.0.0.13", 0))
    s.listen(8)
    yield s.getsockname()[1]
    s.close()


async def test_silent_host_times_out_within_timeout_without_hiding_the_live_one(peers, silent_host):
    a = peers.sink("127.0.0.11", None, "mx1")
    p = probe([("silent.test", "127.0.0.13", silent_host), (MX1, "127.0.0.11", a.port)], timeout=2.0)
    async with asyncio.timeout(WAIT):     # the silent host would hold a probe without a bound
        r = await p.check()
    assert r.ok and r.detail.startswith("1/2"), r.detail
    ok, detail = hosts_detail(p)[f"smtp:silent.test[127.0.0.13]:{silent_host}"]
    assert not ok and detail.startswith("connect: timeout"), detail   # cut by the probe itself

    alone = probe([("silent.test", "127.0.0.13", silent_host)], timeout=1.0)
    async with asyncio.timeout(WAIT):
        r = await alone.check()
    assert not r.ok and "connect: timeout" in r.detail, r


async def test_max_hosts_checks_only_the_first(peers):
    a = peers.sink("127.0.0.11", None, "mx1")
    p = probe([(MX1, "127.0.0.11", a.port), (MX2, "127.0.0.12", free_port())], max_hosts=1)
    r = await p.check()
    assert r.ok and r.detail.startswith("1/1"), r.detail
    assert len(p.last_hosts) == 1


async def test_starttls_required_and_verified(peers, tls_ca):
    ca, cert, key = tls_ca
    s = peers.sink("127.0.0.11", None, "mx1", "--tls", f"{cert},{key}")
    plain = peers.sink("127.0.0.12", None, "mx2")
    hosts = [(MX1, "127.0.0.11", s.port)]
    ok = await probe(hosts, tls="required", verify_tls=True, ca_file=ca).check()
    assert ok.ok, ok.detail
    untrusted = await probe(hosts, tls="required", verify_tls=True).check()   # system CAs only
    assert not untrusted.ok
    assert "STARTTLS:" in untrusted.detail and "CERTIFICATE_VERIFY_FAILED" in untrusted.detail
    wrong_name = await probe([(MX2, "127.0.0.11", s.port)], tls="required", verify_tls=True,
                             ca_file=ca).check()
    assert not wrong_name.ok and "STARTTLS:" in wrong_name.detail, wrong_name.detail
    no_tls = await probe([(MX2, "127.0.0.12", plain.port)], tls="required").check()
    assert not no_tls.ok and "STARTTLS: SMTPNotSupported" in no_tls.detail, no_tls.detail
    assert (await probe([(MX2, "127.0.0.12", plain.port)]).check()).ok   # opportunistic


async def test_hosts_resolved_like_delivery_through_dns(peers):
    a = peers.sink("127.0.0.11", None, "mx1")
    b = peers.sink("127.0.0.12", a.port, "mx2")
    zone_mx = {SITE_A: [(10, MX1), (10, MX2), (20, "mx1.site-b.smarthost.test")]}
    zone_a = {MX1: "127.0.0.11", MX2: "127.0.0.12", "mx1.site-b.smarthost.test": "127.0.0.21"}
    with DnsServer(mx=zone_mx, a=zone_a) as dns:
        resolver = MxResolver(["127.0.0.1"], port=dns.port, timeout=1.0, lifetime=2.0,
                              rng=random.Random(5321))
        p = SmtpInboundProbe("smtp:inbound", mx_hosts(resolver, SITE_A, a.port),
                             canary_rcpt=CANARY, mail_from=MAIL_FROM, helo=HELO, timeout=3.0)
        r = await p.check()
        assert r.ok and r.detail.startswith("2/3"), r.detail   # site B (127.0.0.21) has no sink
        names = [h.probe for h in p.last_hosts]
        assert sorted(names[:2]) == [f"smtp:{MX1}[127.0.0.11]:{a.port}",
                                     f"smtp:{MX2}[127.0.0.12]:{b.port}"]
        assert names[2] == f"smtp:mx1.site-b.smarthost.test[127.0.0.21]:{a.port}"
        gone = SmtpInboundProbe("smtp:inbound", mx_hosts(resolver, "gone.test", a.port),
                                canary_rcpt=CANARY, mail_from=MAIL_FROM, helo=HELO, timeout=3.0)
        r = await gone.check()
        assert not r.ok and r.detail.startswith("resolve: gone.test:"), r.detail
        assert "NXDOMAIN" in r.detail and gone.last_hosts == []
