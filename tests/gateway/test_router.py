"""Routing of IDN domains (issue 6 item 5): the router compares in the same normal form as the
RCPT chain, whichever IDNA form the configuration or the envelope uses, and hands the MX lookup
an A-label."""
import pytest

from gateway.config import parse
from gateway.router import Router

SMARTHOST = "[192.0.2.10]:25"


def router(*domains: str, routes=()) -> Router:
    return Router(parse({"relay": {"accepted_domains": list(domains)},
                         "routing": {"default_smarthost": SMARTHOST,
                                     "routes": [{"domain": d, "smarthost": h} for d, h in routes]}},
                        "test.toml"))


@pytest.mark.parametrize("configured", ["xn--bcher-kva.example", "bücher.example", "BÜCHER.example."])
@pytest.mark.parametrize("rcpt", ["carol@bücher.example", "carol@xn--bcher-kva.example",
                                  "carol@XN--BCHER-KVA.EXAMPLE", "carol@BÜCHER.example"])
def test_accepted_idn_domain_goes_to_the_smarthost_in_any_form(configured, rcpt):
    hop = router(configured).next_hop(rcpt)
    assert (hop.kind, hop.spec) == ("smarthost", SMARTHOST)


def test_per_domain_route_matches_any_idna_form():
    r = router("mañana.example", routes=[("xn--maana-pta.example", "[192.0.2.20]:25")])
    assert r.next_hop("dave@MAÑANA.example").spec == "[192.0.2.20]:25"


@pytest.mark.parametrize("rcpt, spec", [
    ("x@föö.test", "xn--f-1gaa.test"), ("x@XN--F-1GAA.test", "xn--f-1gaa.test"),
    ("x@Example.ORG.", "example.org"),
])
def test_internet_next_hop_is_the_a_label(rcpt, spec):
    hop = router("example.com").next_hop(rcpt)
    assert (hop.kind, hop.spec) == ("mx", spec)
