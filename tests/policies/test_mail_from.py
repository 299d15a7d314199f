"""MAIL FROM validation (issue 6 item 3): what the delivery side (aiosmtplib) cannot send is
refused at MAIL with an enhanced code, never taken with 250."""
import pytest

from policies.mail_from import check_mail_from

OK = (250, "2.1.0")
BAD = (501, "5.1.7")
NEEDS_SMTPUTF8 = (553, "5.6.7")


def outcome(path: str, smtputf8: bool = False):
    d = check_mail_from(path, smtputf8)
    return (d.verdict.code, d.verdict.status), d.address


@pytest.mark.parametrize("path, kept", [
    ("user@example.com", "user@example.com"), ("<>", "<>"), ("", "<>"),
    ('"john smith"@example.com', '"john smith"@example.com'),
    ("@relay.example:user@example.com", "user@example.com"),     # source route dropped
    ("user@[192.0.2.1]", "user@[192.0.2.1]"), ("a.b+tag@xn--bcher-kva.de", "a.b+tag@xn--bcher-kva.de"),
])
def test_good_senders_are_kept(path, kept):
    assert outcome(path) == (OK, kept)


@pytest.mark.parametrize("path", [
    "a\x00b@example.com", "a\x01b@example.com", "ab@exa\x1bmple.com", "a\x7f@example.com",
    "a\r\nRCPT TO:<x@y>@example.com", "a\u0085@example.com", '"a\x00"@example.com',
])
def test_control_characters_are_refused_with_5_1_7(path):
    assert outcome(path, smtputf8=True) == (BAD, "")


@pytest.mark.parametrize("path", ["a b@example.com", "a(comment)@example.com", "a,b@example.com",
                                  "@relay.example", "a:b@example.com"])
def test_what_the_smtp_client_would_rewrite_is_refused(path):
    assert outcome(path)[0] == BAD


@pytest.mark.parametrize("path", ["jörg@example.com", "user@bücher.example", "\u212aate@example.com"])
def test_non_ascii_needs_smtputf8(path):
    assert outcome(path) == (NEEDS_SMTPUTF8, "")
    assert outcome(path, smtputf8=True) == (OK, path)
