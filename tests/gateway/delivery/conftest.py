"""Fixtures for delivery tests: a real dnsmasq serving the admins' private smarthost zone."""
from __future__ import annotations

import random

import pytest

from gateway.delivery.mx import MxResolver
from tests.support.dnsserver import DnsServer

SITE_A = "site-a.smarthost.test"
SITE_B = "site-b.smarthost.test"
MX1_A, MX2_A, MX1_B = f"mx1.{SITE_A}", f"mx2.{SITE_A}", f"mx1.{SITE_B}"

ZONE_MX = {
    SITE_A: [(10, MX1_A), (10, MX2_A), (20, MX1_B)],
    SITE_B: [(20, MX1_B)],
    "dual.test": [(10, "dual.smarthost.test")],          # target with A and AAAA
    "nullmx.test": [(0, ".")],                            # RFC 7505 null MX
    "both.test": [(10, MX1_B)],                           # MX and its own A: [both.test] skips MX
    "partial.test": [(10, "ghost.partial.test"), (20, MX1_B)],   # best target has no address
    "deadend.test": [(10, "ghost.deadend.test")],         # only target has no address (own A!)
    "halfbroken.test": [(10, "x.broken.test"), (20, MX1_B)],     # best target SERVFAILs
    "allbroken.test": [(10, "x.broken.test")],            # only target SERVFAILs
}
ZONE_A = {
    MX1_A: "127.0.0.11", MX2_A: "127.0.0.12", MX1_B: "127.0.0.21",
    "dual.smarthost.test": "127.0.0.31",
    "implicit.test": "127.0.0.40",                        # no MX: implicit MX
    "both.test": "127.0.0.50",
    "deadend.test": "127.0.0.60",
}
ZONE_AAAA = {"dual.smarthost.test": "::31", "v6only.test": "::40"}


@pytest.fixture(scope="module")
def dns_server():
    with DnsServer(mx=ZONE_MX, a=ZONE_A, aaaa=ZONE_AAAA, servfail=["broken.test"],
                   timeout=["slow.test"]) as server:
        yield server


@pytest.fixture
def resolver(dns_server) -> MxResolver:
    return MxResolver(["127.0.0.1"], port=dns_server.port, timeout=1.0, lifetime=2.0,
                      rng=random.Random(5321))
