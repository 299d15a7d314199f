"""The Received: header intake prepends (gateway/intake/received.py): valid RFC 5322 that the
email package parses without defects, address literals (RFC 5321 §4.1.3), protocol names
(RFC 3848, RFC 6531), no header injection from a hostile HELO, ``for`` only with one recipient."""
from __future__ import annotations

import email.policy
import email.utils
from email.parser import BytesParser

import pytest

from gateway.intake.received import address_literal, count_received, protocol_name, received_header

TS = 1_700_000_000.0
BODY = b"Subject: hello\r\nFrom: a@remote.test\r\n\r\nbody\r\n"


def header(helo="mail.remote.test", ip="192.0.2.7", rcpts=("bob@example.com",), protocol="ESMTP",
           **kw) -> bytes:
    return received_header(helo=helo, client_ip=ip, hostname="gw.test", protocol=protocol,
                           queue_id="0123456789BCDF", rcpt_tos=list(rcpts), timestamp=TS, **kw)


def parse(raw: bytes):
    return BytesParser(policy=email.policy.default).parsebytes(raw)


def unfolded(msg) -> str:
    return " ".join(str(msg["Received"]).split())


def test_header_is_valid_rfc5322():
    h = header()
    assert h.endswith(b"\r\n") and h.isascii()
    lines = h.split(b"\r\n")[:-1]
    assert lines[0].startswith(b"Received: from mail.remote.test ([192.0.2.7])")
    assert all(line[:1] in (b" ", b"\t") for line in lines[1:])     # folded with WSP
    assert all(len(line) <= 78 for line in lines)
    msg = parse(h + BODY)
    assert msg.defects == [] and msg["Received"].defects == ()
    assert msg["Subject"] == "hello"                               # the rest is still headers
    value = unfolded(msg)
    assert value.startswith("from mail.remote.test ([192.0.2.7]) by gw.test (mailgate) with ESMTP "
                            "id 0123456789BCDF for <bob@example.com>;")
    date = value.rsplit(";", 1)[1].strip()
    assert email.utils.parsedate_to_datetime(date).timestamp() == TS


@pytest.mark.parametrize("ip,literal", [
    ("192.0.2.7", "[192.0.2.7]"),
    ("2001:db8::1", "[IPv6:2001:db8::1]"),
    ("2001:0db8:0000:0000:0000:0000:0000:0001", "[IPv6:2001:db8::1]"),
    ("::ffff:192.0.2.9", "[192.0.2.9]"),            # IPv4-mapped: the IPv4 client it is
    ("::1", "[IPv6:::1]"),
    ("", "[unknown]"),
    ("not-an-ip", "[unknown]"),
])
def test_address_literal(ip, literal):
    assert address_literal(ip) == literal


def test_ipv6_client_in_the_header():
    msg = parse(header(ip="2001:db8::25") + BODY)
    assert unfolded(msg).startswith("from mail.remote.test ([IPv6:2001:db8::25]) by gw.test")


@pytest.mark.parametrize("helo", [
    "evil\r\nX-Injected: yes",
    "evil\nX-Injected: yes",
    "evil\rX-Injected: yes",
    "évil.exämple\r\n\r\nX-Injected: yes",
    "evil\x00\x7f\x1b[31m",
])
def test_hostile_helo_cannot_inject_a_header(helo):
    h = header(helo=helo)
    assert h.isascii()
    assert h.count(b"\r\n") == 3 and b"\n" not in h.replace(b"\r\n", b"") and b"\r" not in h.replace(b"\r\n", b"")
    msg = parse(h + BODY)
    assert msg["X-Injected"] is None
    assert msg.defects == []
    assert list(msg.keys()) == ["Received", "Subject", "From"]
    first = h.split(b"\r\n")[0]
    assert first.startswith(b"Received: from ") and first.endswith(b" ([192.0.2.7])") and b"?" in first


def test_hostile_recipient_cannot_inject_a_header():
    msg = parse(header(rcpts=("bob@example.com>\r\nX-Injected: yes",)) + BODY)
    assert msg["X-Injected"] is None and list(msg.keys()) == ["Received", "Subject", "From"]


def test_long_helo_is_cut():
    h = header(helo="a" * 5000)
    assert len(h.split(b"\r\n")[0]) < 300
    assert parse(h + BODY).defects == []


def test_empty_helo():
    assert header(helo="").startswith(b"Received: from unknown ([192.0.2.7])\r\n")


def test_for_only_with_one_recipient():
    one = header(rcpts=("bob@example.com",))
    assert b"for <bob@example.com>;" in one
    two = header(rcpts=("bob@example.com", "carol@example.com"))
    assert b" for " not in two and b"bob@" not in two and b"carol@" not in two
    value = unfolded(parse(two + BODY))
    assert value.startswith("from mail.remote.test ([192.0.2.7]) by gw.test (mailgate) with ESMTP "
                            "id 0123456789BCDF;")
    assert email.utils.parsedate_to_datetime(value.rsplit(";", 1)[1].strip()).timestamp() == TS


def test_tls_info_is_sanitised():
    h = header(protocol="ESMTPS", tls_info="TLSv1.3\r\nX-Injected: 1")
    assert b"with ESMTPS (TLSv1.3??X-Injected:?1) id " in h
    assert parse(h + BODY)["X-Injected"] is None


@pytest.mark.parametrize("esmtp,tls,utf8,name", [
    (False, False, False, "SMTP"),
    (True, False, False, "ESMTP"),
    (True, True, False, "ESMTPS"),
    (True, False, True, "UTF8SMTP"),
    (True, True, True, "UTF8SMTPS"),
])
def test_protocol_names(esmtp, tls, utf8, name):
    assert protocol_name(esmtp, tls, utf8) == name


def test_count_received_reads_only_the_header_section():
    hops = b"".join(b"Received: from h%d by h%d; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i)
                    for i in range(3))
    body = b"\r\n" + b"Received: in the body does not count\r\n" * 10
    assert count_received(hops + b"Subject: x\r\n" + body, 100) == 3
    assert count_received(b"received: lower case\r\nRECEIVED: upper\r\n\r\n", 100) == 2
    assert count_received(hops * 20 + body, 51) == 51                # stops at the limit
    assert count_received(b"Subject: none\r\n\r\nReceived: body\r\n", 100) == 0
