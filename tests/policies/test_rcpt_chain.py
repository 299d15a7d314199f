from pathlib import Path

import pytest

from policies.directory import Directory
from policies.directory_formats import read_json
from policies.rcpt_address import Mailbox
from policies.rcpt_chain import RcptContext, check_rcpt
from policies.relay_networks import TrustedNetworks

# SMTP replies, as (code, enhanced status)
OK = (250, "2.1.5")
BAD_SYNTAX = (501, "5.1.3")
USER_UNKNOWN = (550, "5.1.1")
RELAY_DENIED = (550, "5.7.1")

UNTRUSTED = "203.0.113.9"
TRUSTED = "10.20.1.5"
TRUSTED_MAPPED = "::ffff:10.20.1.5"

DIRECTORY = Directory.load(Path(__file__).parent / "data" / "exchange-recipients.csv")
NETS = TrustedNetworks(["127.0.0.0/8", "::1", "10.20.0.0/16"])


def ctx(filtering: bool = True, domains=("example.com", "Example.NET.", "xn--bcher-kva.example"),
        **kw) -> RcptContext:
    return RcptContext(frozenset(domains), DIRECTORY if filtering else Directory.empty(),
                       filtering, NETS, **kw)


def outcome(addr: str, ip: str, context: RcptContext | None = None):
    d = check_rcpt(addr, ip, context or ctx())
    return (d.verdict.code, d.verdict.status), d.local


@pytest.mark.parametrize("ip", [UNTRUSTED, TRUSTED])
@pytest.mark.parametrize("addr", [
    "alice.smith@example.com", "Alice.Smith@EXAMPLE.COM.", "asmith@example.com",
    "alice@example.net", "alice@EXAMPLE.NET.", "sales@example.com", "everyone@example.com",
    "partner.contact@example.com", "carol@bücher.example", "carol@XN--BCHER-KVA.example",
    "@relay.example.net:bob@example.com", '"bob"@example.com', "bob@example.com ",
    "postmaster@example.com", "PostMaster@example.net",
])
def test_known_local_recipient_accepted(addr, ip):
    assert outcome(addr, ip) == (OK, True)


@pytest.mark.parametrize("ip", [UNTRUSTED, TRUSTED])
@pytest.mark.parametrize("addr", [
    "nobody@example.com", "NOBODY@example.com.", "alice.smith+tag@example.com",
    "jane.doe@example.com", '"alice smith"@example.com', "nobody@bücher.example",
])
def test_unknown_local_recipient_rejected(addr, ip):
    assert outcome(addr, ip) == (USER_UNKNOWN, True)


def test_unknown_recipient_reply_text():
    d = check_rcpt("nobody@example.com", UNTRUSTED, ctx())
    assert d.verdict.reply() == "550 5.1.1 Recipient address rejected: User unknown"
    assert d.mailbox == Mailbox("nobody", "example.com")


def test_no_filtering_accepts_any_local_part():
    assert outcome("anything@example.com", UNTRUSTED, ctx(filtering=False)) == (OK, True)


# Each trick: (address, outcome from an untrusted client, outcome from a trusted one).
TRICKS = [
    ("jane@foreign.org", (RELAY_DENIED, False), (OK, False)),
    ("user%foreign.org@example.com", (RELAY_DENIED, False), (USER_UNKNOWN, True)),
    ("foreign.org!user@example.com", (RELAY_DENIED, False), (USER_UNKNOWN, True)),
    ('"user@foreign.org"@example.com', (RELAY_DENIED, False), (USER_UNKNOWN, True)),
    ('"user%foreign.org"@example.com', (RELAY_DENIED, False), (USER_UNKNOWN, True)),
    ("user@example.com@foreign.org", (BAD_SYNTAX, False), (BAD_SYNTAX, False)),
    ("@example.com:user@foreign.org", (RELAY_DENIED, False), (OK, False)),
    ("@foreign.org:bob@example.com", (OK, True), (OK, True)),
    ("user@[127.0.0.1]", (RELAY_DENIED, False), (OK, False)),
    ("user@[IPv6:::1]", (RELAY_DENIED, False), (OK, False)),
    ("user@sub.example.com", (RELAY_DENIED, False), (OK, False)),
    ("user@example.com.foreign.org", (RELAY_DENIED, False), (OK, False)),
    ("user@xample.com", (RELAY_DENIED, False), (OK, False)),
    ("user@foreign.org.", (RELAY_DENIED, False), (OK, False)),
    ("user@FOREIGN.ORG ", (RELAY_DENIED, False), (OK, False)),
    ("user@bücher.example.org", (RELAY_DENIED, False), (OK, False)),
    ("user@xn--bcher-kva.example.org", (RELAY_DENIED, False), (OK, False)),
    ("user@example.com..", (BAD_SYNTAX, False), (BAD_SYNTAX, False)),
    ("user@exa mple.com", (BAD_SYNTAX, False), (BAD_SYNTAX, False)),
    ("<>", (BAD_SYNTAX, False), (BAD_SYNTAX, False)),
    ("", (BAD_SYNTAX, False), (BAD_SYNTAX, False)),
    ("user", (BAD_SYNTAX, False), (BAD_SYNTAX, False)),
]


@pytest.mark.parametrize("addr,untrusted,trusted", TRICKS)
def test_relay_tricks(addr, untrusted, trusted):
    assert outcome(addr, UNTRUSTED) == untrusted
    assert outcome(addr, TRUSTED) == trusted
    assert outcome(addr, TRUSTED_MAPPED) == trusted
    assert outcome(addr, "garbage") == untrusted


def test_relay_denied_reply_text():
    d = check_rcpt("jane@foreign.org", UNTRUSTED, ctx())
    assert d.verdict.reply() == "550 5.7.1 Relay access denied"
    assert d.mailbox == Mailbox("jane", "foreign.org")


def test_syntax_error_has_no_mailbox():
    d = check_rcpt("a b@example.com", TRUSTED, ctx())
    assert d.mailbox is None and d.verdict.reply().startswith("501 5.1.3 ")


@pytest.mark.parametrize("ip", [UNTRUSTED, TRUSTED])
def test_bare_postmaster(ip):
    d = check_rcpt("Postmaster", ip, ctx())
    assert ((d.verdict.code, d.verdict.status), d.local) == (OK, True)
    assert d.mailbox == Mailbox("Postmaster", "bücher.example")   # alphabetically first
    d = check_rcpt("postmaster", ip, ctx(postmaster_domain="EXAMPLE.COM."))
    assert d.mailbox == Mailbox("postmaster", "example.com")


def test_bare_postmaster_without_domains():
    d = check_rcpt("postmaster", UNTRUSTED, ctx(domains=()))
    assert (d.verdict.code, d.local) == (550, False)


def test_context_normalises_and_validates_domains():
    c = ctx()
    assert c.accepted_domains == frozenset({"example.com", "example.net", "bücher.example"})
    with pytest.raises(ValueError, match="not an accepted domain"):
        ctx(postmaster_domain="foreign.org")


KELVIN = "\u212a"   # KELVIN SIGN: case-folds to "k"


@pytest.mark.parametrize("addr", [f"{KELVIN}ate@example.com", "carol@bücher.example",
                                  "Jörg@example.com"])
def test_non_ascii_rcpt_without_smtputf8_is_refused_with_5_6_7(addr):
    """issue 6 item 3: RFC 6531 §3.4; the Kelvin sign would otherwise reach a real user."""
    d = check_rcpt(addr, UNTRUSTED, ctx(), smtputf8=False)
    assert (d.verdict.code, d.verdict.status) == (553, "5.6.7")


def test_a_label_rcpt_without_smtputf8_is_fine():
    d = check_rcpt("carol@xn--bcher-kva.example", UNTRUSTED, ctx(), smtputf8=False)
    assert (d.verdict.code, d.verdict.status, d.mailbox.domain) == (250, "2.1.5", "bücher.example")


INTERNAL_ONLY = """{"mailboxes": ["erin@example.org"], "groups": [
  {"address": "staff@example.org", "aliases": ["staff-alias@example.org"],
   "members": ["erin@example.org"], "require_sender_authentication_enabled": true},
  {"address": "everyone-dyn@example.org", "dynamic": true, "members": ["erin@example.org"],
   "require_sender_authentication_enabled": true},
  {"address": "team@example.org", "members": ["erin@example.org"],
   "require_sender_authentication_enabled": false}]}"""


def internal_ctx() -> RcptContext:
    directory = Directory.from_records(read_json("inline.json", INTERNAL_ONLY), "inline.json")
    return RcptContext(frozenset(["example.org"]), directory, True, NETS)


@pytest.mark.parametrize("addr", ["staff@example.org", "STAFF@example.org",
                                  "everyone-dyn@example.org", "staff-alias@example.org"])
def test_internal_only_group_refuses_untrusted_and_accepts_trusted(addr):
    """issue 6 item 16: RequireSenderAuthenticationEnabled → 550 5.7.1 from outside."""
    c = internal_ctx()
    d = check_rcpt(addr, UNTRUSTED, c)
    assert (d.verdict.code, d.verdict.status, d.local) == (550, "5.7.1", True)
    assert check_rcpt(addr, TRUSTED, c).verdict.code == 250


def test_ordinary_group_still_takes_outside_mail():
    assert check_rcpt("team@example.org", UNTRUSTED, internal_ctx()).verdict.code == 250
