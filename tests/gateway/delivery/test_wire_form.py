"""The envelope on the wire (issue 6 items 3, 5): A-label domains without SMTPUTF8, and when a
transaction cannot go without SMTPUTF8 (RFC 6531 §3.2)."""
import pytest

from gateway.delivery.transport import needs_smtputf8, wire_address

ASCII_HEAD = b"From: a@x.test\r\nSubject: hi\r\n\r\n"


@pytest.mark.parametrize("address, wire", [
    ("carol@bücher.example", "carol@xn--bcher-kva.example"),
    ("carol@BÜCHER.example", "carol@xn--bcher-kva.example"),
    ("jörg@bücher.example", "jörg@xn--bcher-kva.example"),
    ("a@example.com", "a@example.com"), ("", ""), ("postmaster", "postmaster"),
    ('"a@b"@bücher.example', '"a@b"@xn--bcher-kva.example'),
])
def test_wire_address_uses_the_a_label(address, wire):
    assert wire_address(address) == wire


@pytest.mark.parametrize("mail_from, rcpts, data, declared, needed", [
    ("a@bücher.example", ["b@mañana.example"], ASCII_HEAD, True, False),  # A-labels suffice
    ("jörg@sender.test", ["b@example.com"], ASCII_HEAD, True, True),       # non-ASCII local part
    ("a@x.test", ["\u212aate@example.com"], ASCII_HEAD, False, True),
    ("a@x.test", ["b@example.com"], "Subject: Grüße\r\n\r\n".encode(), True, True),
    ("a@x.test", ["b@example.com"], "Subject: Grüße\r\n\r\n".encode(), False, False),  # legacy 8-bit
    ("a@x.test", ["b@example.com"], ASCII_HEAD + "Grüße".encode(), True, False),  # body: 8BITMIME
    ("", ["b@example.com"], ASCII_HEAD, True, False),
])
def test_needs_smtputf8(mail_from, rcpts, data, declared, needed):
    assert needs_smtputf8(mail_from, rcpts, data, declared) is needed
