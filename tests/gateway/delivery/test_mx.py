"""MX resolution: pure ordering/parsing/error mapping, then against a real dnsmasq (conftest)."""
from __future__ import annotations

import asyncio
import collections
import random

import dns.message
import dns.resolver
import pytest

from gateway.delivery.mx import (Host, MxResolver, ResolveError, error_from_dns, format_routes,
                                 is_null_mx, order_mx, parse_target)

SITE_A, SITE_B = "site-a.smarthost.test", "site-b.smarthost.test"    # the zone in conftest.py
MX1_A, MX2_A, MX1_B = f"mx1.{SITE_A}", f"mx2.{SITE_A}", f"mx1.{SITE_B}"

NULL_MX = (556, "5.1.10")          # RFC 7505 §3
NXDOMAIN = (550, "5.1.2")
NO_ADDRESS = (550, "5.4.4")
TEMP_DNS = (451, "4.4.3")


def outcome(err: ResolveError) -> tuple[bool, int, str]:
    return err.permanent, err.code, err.status


# --- pure ---------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,expected", [
    ("[smart.example]:2525", ("smart.example", 2525, True)),
    ("[smart.example]", ("smart.example", 25, True)),
    ("1.2.3.4", ("1.2.3.4", 25, True)),
    ("[1.2.3.4]:2525", ("1.2.3.4", 2525, True)),
    ("1.2.3.4:2525", ("1.2.3.4", 2525, True)),
    ("[::1]:25", ("::1", 25, True)),
    ("[IPv6:2001:db8::1]", ("2001:db8::1", 25, True)),
    ("::1", ("::1", 25, True)),
    ("site-a.smarthost.test", ("site-a.smarthost.test", 25, False)),
    ("site-a.smarthost.test.:587", ("site-a.smarthost.test", 587, False)),
])
def test_parse_target(spec, expected):
    assert parse_target(spec, 25) == expected


@pytest.mark.parametrize("spec", ["", "[", "[]", "[host", "host]:25", "[h]x", "name:", "name:abc",
                                  "name:0", "name:65536", "a b", "-x", "[IPv6:1.2.3.4]", "::1:25:x:z"])
def test_parse_target_rejects_nonsense(spec):
    with pytest.raises(ValueError):
        parse_target(spec, 25)


def test_order_mx_groups_sorts_dedups():
    records = [(20, "b.test."), (10, "a2.test"), (10, "A1.test."), (10, "a1.test"), (30, "b.test"),
               (5, ".")]
    groups = order_mx(records, random.Random(1))
    assert [[p for p, _ in g] for g in groups] == [[10, 10], [20]]
    assert sorted(n.lower() for _, n in groups[0]) == ["a1.test", "a2.test"]
    assert groups[1] == [(20, "b.test")]


def test_order_mx_shuffles_within_preference_only():
    firsts = collections.Counter()
    for seed in range(400):
        groups = order_mx([(10, "x"), (10, "y"), (20, "z")], random.Random(seed))
        firsts[groups[0][0][1]] += 1
        assert groups[1] == [(20, "z")]
    assert 150 < firsts["x"] < 250 and firsts["x"] + firsts["y"] == 400


def test_null_mx_detection():
    assert is_null_mx([(0, ".")]) and is_null_mx([(0, "")])
    assert not is_null_mx([(0, "."), (10, "mx.test")])     # not a null MX; "." is just dropped
    assert not is_null_mx([(10, "mx.test")]) and not is_null_mx([])


def test_dns_error_mapping():
    query = dns.message.make_query("x.test", "MX")
    assert outcome(error_from_dns(dns.resolver.NXDOMAIN(), "x", "MX")) == (True, *NXDOMAIN)
    for exc in (dns.resolver.NoNameservers(request=query, errors=[]),
                dns.resolver.LifetimeTimeout(timeout=2.0, errors=[])):
        assert outcome(error_from_dns(exc, "x", "MX")) == (False, *TEMP_DNS)


def test_format_routes():
    text = format_routes([[Host("mx1.a.test", 10, ("127.0.0.11", "::11"), 25)],
                          [Host("mx1.b.test", 20, ("127.0.0.21",), 2525)]])
    lines = text.splitlines()
    assert lines[0].split() == ["PREF", "HOST", "PORT", "ADDRESSES"]
    assert lines[1].split() == ["10", "mx1.a.test", "25", "127.0.0.11,", "::11"]
    assert lines[2].split() == ["20", "mx1.b.test", "2525", "127.0.0.21"]
    assert format_routes([]) == "(no routes)" and not text.endswith("\n")


# --- real DNS (dnsmasq) ---------------------------------------------------------------------

def names(groups):
    return [[h.name for h in g] for g in groups]


async def test_site_a_order_over_many_resolutions(resolver):
    firsts = collections.Counter()
    for _ in range(200):
        groups = await resolver.resolve(SITE_A)
        assert sorted(names(groups)[0]) == [MX1_A, MX2_A] and names(groups)[1:] == [[MX1_B]]
        assert [g[0].preference for g in groups] == [10, 20]
        firsts[groups[0][0].name] += 1
    assert 70 <= firsts[MX1_A] <= 130, firsts
    hosts = {h.name: h for g in groups for h in g}
    assert hosts[MX1_A].addresses == ("127.0.0.11",) and hosts[MX2_A].addresses == ("127.0.0.12",)
    assert hosts[MX1_B] == Host(MX1_B, 20, ("127.0.0.21",), 25)


async def test_site_b_and_port(resolver):
    assert await resolver.resolve(f"{SITE_B}:2525") == [[Host(MX1_B, 20, ("127.0.0.21",), 2525)]]


async def test_ipv4_first_then_prefer_ipv6(resolver, dns_server):
    assert (await resolver.resolve("dual.test"))[0][0].addresses == ("127.0.0.31", "::31")
    v6 = MxResolver(["127.0.0.1"], port=dns_server.port, prefer_ipv6=True)
    assert (await v6.resolve("dual.test"))[0][0].addresses == ("::31", "127.0.0.31")


async def test_implicit_mx(resolver):
    assert await resolver.resolve("implicit.test") == [[Host("implicit.test", 0, ("127.0.0.40",), 25)]]
    assert await resolver.resolve("v6only.test") == [[Host("v6only.test", 0, ("::40",), 25)]]


@pytest.mark.parametrize("spec,expected", [
    ("127.0.0.9", Host("127.0.0.9", 0, ("127.0.0.9",), 25)),
    ("[::1]:2525", Host("::1", 0, ("::1",), 2525)),
    ("[both.test]", Host("both.test", 0, ("127.0.0.50",), 25)),    # MX exists but is skipped
    ("[mx1.site-a.smarthost.test]:2525", Host(MX1_A, 0, ("127.0.0.11",), 2525)),
])
async def test_literals_and_brackets_skip_mx(resolver, dns_server, spec, expected):
    assert await resolver.resolve(spec) == [[expected]]


async def test_mx_present_means_no_fallback_to_domain_address(resolver):
    assert names(await resolver.resolve("both.test")) == [[MX1_B]]
    with pytest.raises(ResolveError) as info:          # deadend.test has its own A record
        await resolver.resolve("deadend.test")
    assert outcome(info.value) == (True, *NO_ADDRESS)


async def test_mx_target_without_address_is_skipped(resolver, caplog):
    assert names(await resolver.resolve("partial.test")) == [[MX1_B]]
    assert any(getattr(r, "target", "") == "ghost.partial.test" for r in caplog.records)
    assert names(await resolver.resolve("halfbroken.test")) == [[MX1_B]]


@pytest.mark.parametrize("spec,expected", [
    ("nullmx.test", (True, *NULL_MX)),
    ("nowhere.test", (True, *NXDOMAIN)),
    ("[nowhere.test]", (True, *NXDOMAIN)),
    ("[site-a.smarthost.test]", (True, *NO_ADDRESS)),      # exists, only MX records
    ("x.broken.test", (False, *TEMP_DNS)),                 # REFUSED/SERVFAIL → NoNameservers
    ("[x.broken.test]", (False, *TEMP_DNS)),
    ("allbroken.test", (False, *TEMP_DNS)),                # only target's lookup failed
])
async def test_errors_map_to_permanent_or_temporary(resolver, spec, expected):
    with pytest.raises(ResolveError) as info:
        await resolver.resolve(spec)
    assert outcome(info.value) == expected


async def test_timeout_is_temporary(dns_server):
    quick = MxResolver(["127.0.0.1"], port=dns_server.port, timeout=0.3, lifetime=0.6)
    with pytest.raises(ResolveError) as info:
        async with asyncio.timeout(3):      # a bound to wait, not the assertion: a resolver
            await quick.resolve("x.slow.test")   # ignoring its lifetime raises TimeoutError here
    assert outcome(info.value) == (False, *TEMP_DNS) and "timeout" in str(info.value)


async def test_bad_spec_raises_value_error(resolver):
    with pytest.raises(ValueError):
        await resolver.resolve("not a host")
