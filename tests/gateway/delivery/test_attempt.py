"""One delivery attempt (gateway/delivery/attempt.deliver_group) with the real MxResolver (IP
literals, and dnsmasq for the two-site smarthost zone of conftest.py), the real SmtpTransport,
and real sink processes: per-recipient outcomes, moving on to the next host within the attempt,
and dead hosts remembered in the HostCache."""
from __future__ import annotations

import pytest

from gateway.delivery.attempt import deliver_group
from gateway.delivery.hostcache import HostCache
from gateway.delivery.transport import SmtpTransport, TlsPolicy
from gateway.logs import make_logger
from gateway.router import NextHop
from spool import RcptState
from tests.gateway.delivery.conftest import MX1_B, SITE_A
from tests.support.peers import free_port

D, B, P = RcptState.DELIVERED, RcptState.BOUNCED, RcptState.PENDING
DATA = b"From: a@remote.test\r\nSubject: attempt\r\n\r\nbody\r\n"
NO_TLS = TlsPolicy("none")
USER_UNKNOWN = (550, "5.1.1 User unknown")
TRY_LATER = (451, "4.3.0 Try again later")
MAILBOX_BUSY = (450, "4.2.1 Mailbox busy")


class RecordingTransport:
    """The real SmtpTransport, with the addresses it was asked to connect to written down."""

    def __init__(self):
        self.real = SmtpTransport("gw.test", connect_timeout=2.0, command_timeout=10.0,
                                  data_timeout=10.0, idle_timeout=0.0)
        self.calls: list[str] = []

    async def send(self, address, port, *args, **kw):
        self.calls.append(address)
        return await self.real.send(address, port, *args, **kw)

    async def close(self):
        await self.real.close()


@pytest.fixture
async def transport():
    t = RecordingTransport()
    yield t
    await t.close()


async def attempt(hop, rcpts, resolver, transport, hosts=None):
    return await deliver_group(hop, "a@remote.test", list(rcpts), DATA, smtputf8=False,
                               body_8bit=False, resolver=resolver, transport=transport,
                               hosts=hosts or HostCache(60), log=make_logger("error"))


def literal(addr: str, port: int) -> NextHop:
    return NextHop(f"[{addr}]:{port}", 25, NO_TLS, "smarthost")


async def test_literal_next_hop_delivers_every_recipient(peers, resolver, transport):
    sink = peers.sink("127.0.0.11", None, "exch")
    res = await attempt(literal("127.0.0.11", sink.port), ["bob@example.com", "carol@example.com"],
                        resolver, transport)
    where = f"127.0.0.11[127.0.0.11]:{sink.port}"
    assert {r: (x.state, x.code, x.host) for r, x in res.items()} == {
        "bob@example.com": (D, 250, where), "carol@example.com": (D, 250, where)}
    assert transport.calls == ["127.0.0.11"]
    (env, data), = sink.messages()
    assert env["rcpt_tos"] == ["bob@example.com", "carol@example.com"] and data == DATA


async def test_5xx_for_one_recipient_bounces_only_that_one(peers, resolver, transport):
    sink = peers.sink("127.0.0.11", None, "exch", "--rcpt-reply", "gone@example.com=550")
    res = await attempt(literal("127.0.0.11", sink.port),
                        ["bob@example.com", "gone@example.com", "carol@example.com"], resolver, transport)
    assert (res["gone@example.com"].state, res["gone@example.com"].code,
            res["gone@example.com"].text) == (B, *USER_UNKNOWN)
    assert res["bob@example.com"].state is D and res["carol@example.com"].state is D
    (env, _data), = sink.messages()
    assert env["rcpt_tos"] == ["bob@example.com", "carol@example.com"]


async def test_4xx_everywhere_leaves_the_recipient_pending(peers, resolver, transport):
    sink = peers.sink("127.0.0.11", None, "sick", "--all-reply", "451")
    res = await attempt(literal("127.0.0.11", sink.port), ["bob@example.com"], resolver, transport)
    r = res["bob@example.com"]
    assert (r.state, r.code, r.text) == (P, *TRY_LATER)
    assert r.host == f"127.0.0.11[127.0.0.11]:{sink.port}"
    assert sink.count() == 0


async def test_4xx_from_the_first_site_moves_on_to_the_next_within_the_attempt(peers, resolver,
                                                                              transport):
    port = free_port()
    sick = [peers.sink(a, port, f"sick{a[-2:]}", "--all-reply", "451") for a in ("127.0.0.11", "127.0.0.12")]
    good = peers.sink("127.0.0.21", port, "siteb")
    hop = NextHop(SITE_A, port, NO_TLS, "smarthost")
    res = await attempt(hop, ["bob@example.com"], resolver, transport)
    r = res["bob@example.com"]
    assert (r.state, r.code, r.host) == (D, 250, f"{MX1_B}[127.0.0.21]:{port}")
    assert sorted(transport.calls[:2]) == ["127.0.0.11", "127.0.0.12"]
    assert transport.calls[2:] == ["127.0.0.21"]
    assert good.count() == 1 and [s.count() for s in sick] == [0, 0]


async def test_a_4xx_recipient_moves_on_alone(peers, resolver, transport):
    port = free_port()
    for a in ("127.0.0.11", "127.0.0.12"):
        peers.sink(a, port, f"busy{a[-2:]}", "--rcpt-reply", "busy@example.com=450")
    good = peers.sink("127.0.0.21", port, "siteb")
    res = await attempt(NextHop(SITE_A, port, NO_TLS, "smarthost"),
                        ["bob@example.com", "busy@example.com"], resolver, transport)
    assert res["bob@example.com"].state is D
    assert res["bob@example.com"].host.split("[")[1].startswith("127.0.0.1")   # site A took it
    assert (res["busy@example.com"].state, res["busy@example.com"].host) == (
        D, f"{MX1_B}[127.0.0.21]:{port}")
    (env, _data), = good.messages()
    assert env["rcpt_tos"] == ["busy@example.com"]                # bob was not sent twice
    assert len(transport.calls) == 3


async def test_refused_connection_marks_the_host_down_and_the_next_call_skips_it(peers, resolver,
                                                                                 transport):
    port = free_port()                      # nothing listens on 127.0.0.11/12 at this port
    good = peers.sink("127.0.0.21", port, "siteb")
    hosts = HostCache(ttl=60)
    hop = NextHop(SITE_A, port, NO_TLS, "smarthost")
    res = await attempt(hop, ["bob@example.com"], resolver, transport, hosts)
    assert res["bob@example.com"].state is D
    assert sorted(transport.calls) == ["127.0.0.11", "127.0.0.12", "127.0.0.21"]
    assert hosts.is_down("127.0.0.11", port) and hosts.is_down("127.0.0.12", port)
    assert not hosts.is_down("127.0.0.21", port)
    assert sorted(a for a, _p, _left in hosts.down()) == ["127.0.0.11", "127.0.0.12"]
    transport.calls.clear()
    res = await attempt(hop, ["carol@example.com"], resolver, transport, hosts)
    assert res["carol@example.com"].state is D
    assert transport.calls == ["127.0.0.21"]                      # the dead site is skipped
    assert good.count() == 2


async def test_when_every_address_is_down_it_is_tried_anyway(resolver, transport):
    port = free_port()
    hosts = HostCache(ttl=60)
    hosts.mark_down("127.0.0.1", port)
    res = await attempt(literal("127.0.0.1", port), ["bob@example.com"], resolver, transport, hosts)
    r = res["bob@example.com"]
    assert transport.calls == ["127.0.0.1"]
    assert (r.state, r.code) == (P, None)
    assert r.text.startswith(f"4.4.1 connect to 127.0.0.1[127.0.0.1]:{port}: ")
    assert hosts.is_down("127.0.0.1", port)


async def test_unresolvable_smarthost_defers_but_an_internet_domain_bounces(resolver, transport):
    smart = await attempt(NextHop("nowhere.test", 25, NO_TLS, "smarthost"), ["bob@example.com"],
                          resolver, transport)
    r = smart["bob@example.com"]
    assert (r.state, r.code) == (P, 451) and r.text.startswith("4.3.5 smarthost configuration problem: 5.1.2")
    mx = await attempt(NextHop("nowhere.test", 25, NO_TLS, "mx"), ["x@nowhere.test"], resolver, transport)
    r = mx["x@nowhere.test"]
    assert (r.state, r.code) == (B, 550) and r.text.startswith("5.1.2 ")
    assert transport.calls == []


async def test_hosts_skipped_as_recently_dead_are_tried_last_before_deferring(peers, resolver,
                                                                             transport):
    """Site A's hosts failed a minute ago and are back; site B fails now. The memory must not
    turn into a deferral: the skipped site-A hosts are tried after site B, in the same attempt."""
    port = free_port()                      # nothing listens on site B (127.0.0.21) at this port
    back = [peers.sink(a, port, f"back{a[-2:]}") for a in ("127.0.0.11", "127.0.0.12")]
    hosts = HostCache(ttl=60)
    for a in ("127.0.0.11", "127.0.0.12"):
        hosts.mark_down(a, port)            # they failed within dead_host_ttl
    res = await attempt(NextHop(SITE_A, port, NO_TLS, "smarthost"), ["bob@example.com"], resolver,
                        transport, hosts)
    r = res["bob@example.com"]
    assert r.state is D, r
    assert transport.calls[0] == "127.0.0.21"              # the live host first, as before
    assert transport.calls[1] in ("127.0.0.11", "127.0.0.12") and len(transport.calls) == 2
    assert sum(s.count() for s in back) == 1
    assert hosts.is_down("127.0.0.21", port)
    assert not hosts.is_down(transport.calls[1], port)     # its success cleared the mark


def test_host_cache_orders_live_addresses_first_then_those_marked_down():
    hosts = HostCache(ttl=60)
    hosts.mark_down("10.0.0.1", 25)
    assert hosts.order([("a", "10.0.0.1", 25), ("b", "10.0.0.2", 25), ("c", "10.0.0.3", 25)]) == [
        ("b", "10.0.0.2", 25), ("c", "10.0.0.3", 25), ("a", "10.0.0.1", 25)]
