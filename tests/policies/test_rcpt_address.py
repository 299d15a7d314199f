import pytest

from policies.rcpt_address import AddressError, Mailbox, normalize_domain, parse_rcpt, to_ascii_domain

BAD_SYNTAX = (501, "5.1.3")


@pytest.mark.parametrize("addr,local,domain", [
    ("user@example.com", "user", "example.com"),
    ("User.Name@Example.COM", "User.Name", "example.com"),
    ("user@example.com.", "user", "example.com"),
    ("user@EXAMPLE.com. ", "user", "example.com"),
    ("<user@example.com>", "user", "example.com"),
    ("@relay.example.net:user@example.com", "user", "example.com"),
    ("@a.example,@b.example:user@example.com", "user", "example.com"),
    ('"a@b"@example.com', '"a@b"', "example.com"),
    ('"john smith"@example.com', '"john smith"', "example.com"),
    ("user+tag@example.com", "user+tag", "example.com"),
    ("a..b.@docomo.example", "a..b.", "docomo.example"),
    ("user@xn--bcher-kva.example", "user", "bücher.example"),
    ("Jörg@BÜCHER.example", "Jörg", "bücher.example"),
    ("用户@例子。广告", "用户", "例子.广告"),
    ("user@[192.0.2.1]", "user", "[192.0.2.1]"),
    ("user@[IPv6:2001:DB8:0:0::1]", "user", "[ipv6:2001:db8::1]"),
    ("postmaster", "postmaster", ""),
    ("PostMaster", "PostMaster", ""),
])
def test_parse_valid(addr, local, domain):
    assert parse_rcpt(addr) == Mailbox(local, domain)


@pytest.mark.parametrize("addr", [
    "", "<>", "   ", "user", "abuse", "@example.com", "user@", "user@example.com@foreign.org",
    "user@exa mple.com", "a b@example.com", "user@example..com", "user@.example.com",
    "user@example.com..", '"unterminated@example.com', '"a"b@example.com', "user@[300.1.1.1]",
    "user@[127.0.0.1", "user@[foo:bar]", "@relay.example:", "@relay.example,user@example.com",
    "user@xn--zz-.example", "user@exam\x00ple.com", "us\ter@example.com", "user@example.com/x",
    "x" * 65 + "@example.com", "user@" + "a" * 64 + ".example",
])
def test_parse_invalid(addr):
    with pytest.raises(AddressError) as info:
        parse_rcpt(addr)
    assert (info.value.verdict.code, info.value.verdict.status) == BAD_SYNTAX
    assert isinstance(info.value, ValueError)


def test_key_is_case_insensitive_and_canonical():
    assert parse_rcpt("Alice.Smith@Example.COM.").key == "alice.smith@example.com"
    assert parse_rcpt('"alice.smith"@example.com').key == "alice.smith@example.com"
    assert parse_rcpt('"a\\"b c"@example.com').key == '"a\\"b c"@example.com'
    assert parse_rcpt("STRASSE@xn--bcher-kva.example").key == "strasse@bücher.example"
    assert parse_rcpt("postmaster").key == "postmaster"


def test_address_keeps_local_case():
    assert parse_rcpt("Alice@EXAMPLE.com").address == "Alice@example.com"
    assert parse_rcpt("postmaster").address == "postmaster"


@pytest.mark.parametrize("addr,routed", [
    ("user%foreign.org@example.com", True),
    ("foreign.org!user@example.com", True),
    ('"user@foreign.org"@example.com', True),
    ('"user%x"@example.com', True),
    ("@foreign.org:user@example.com", False),
    ('"user name"@example.com', False),
    ("user@example.com", False),
])
def test_routed(addr, routed):
    assert parse_rcpt(addr).routed is routed


def test_normalize_domain():
    assert normalize_domain(" Example.COM. ") == "example.com"
    assert normalize_domain("XN--BCHER-KVA.example") == "bücher.example"
    with pytest.raises(AddressError):
        normalize_domain("")


@pytest.mark.parametrize("domain, normal, alabel", [
    ("ＥＸＡＭＰＬＥ.com", "example.com", "example.com"),           # UTS #46 width mapping
    ("BÜCHER.example", "bücher.example", "xn--bcher-kva.example"),
    ("XN--BCHER-KVA.Example.", "bücher.example", "xn--bcher-kva.example"),
    ("faß.example", "faß.example", "xn--fa-hia.example"),         # non-transitional (IDNA 2008)
    ("mañana。example", "mañana.example", "xn--maana-pta.example"),
    ("\u212aelvin.example", "kelvin.example", "kelvin.example"),   # Kelvin sign maps to k
])
def test_idna_uts46_normalisation_and_a_label(domain, normal, alabel):
    """issue 6 item 5: one normalisation, by the idna package, for config, RCPT and router."""
    assert normalize_domain(domain) == normal
    assert to_ascii_domain(normal) == alabel
    assert normalize_domain(alabel) == normal


@pytest.mark.parametrize("domain", ["xn--zz.example", "xn--abc.example", "\u2603.example"])
def test_idna_refuses_bad_labels(domain):
    with pytest.raises(AddressError):
        normalize_domain(domain)
