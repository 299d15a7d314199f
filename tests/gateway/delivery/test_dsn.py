"""Bounces (RFC 3464 / RFC 6522) built from every message of the real corpus, parsed back."""
from __future__ import annotations

import email
import email.policy
import pathlib
import re
from email.utils import parsedate_to_datetime

import pytest

from gateway.delivery.dsn import MAX_HEADER_BYTES, FailedRecipient, build_dsn, should_bounce

CORPUS = sorted((pathlib.Path(__file__).parents[3] / "../shared/corpus/messages").resolve().glob("*"))
NOW, ARRIVED = 1_700_000_000.0, 1_699_990_000.0
UNKNOWN_USER = "550 5.1.1 <bob@example.net>: Recipient address rejected: User unknown"
RCPTS = [FailedRecipient("bob@example.net", "5.1.1", UNKNOWN_USER, "mx1.example.net"),
         FailedRecipient("<carol@example.net>", "4.4.1", "connect to 192.0.2.1: timed out",
                         action="delayed")]


def dsn_for(original: bytes, recipients=RCPTS, **kw) -> bytes:
    args = dict(reporting_mta="gw.example.org", original_mail_from="alice@example.com",
                original_queue_id="4QmX2b0Zk9z", arrival_date=ARRIVED, recipients=recipients,
                original=original, now=NOW)
    return build_dsn(**{**args, **kw})


def header_block(original: bytes) -> bytes:
    """Independent reference: the original up to its first blank line, LF-normalised."""
    block = re.split(rb"\r?\n\r?\n", original, maxsplit=1)[0]
    return b"\n".join(re.split(rb"\r\n|\n|\r", block)).rstrip(b"\n")


def test_corpus_present():
    assert len(CORPUS) > 50


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.name)
def test_dsn_for_corpus_message(path):
    original = path.read_bytes()
    raw = dsn_for(original)
    assert raw.isascii(), "DSN must be 7-bit clean"
    assert b"\n" not in raw.replace(b"\r\n", b"") and b"\r" not in raw.replace(b"\r\n", b"")
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998

    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    assert msg["From"].addresses[0].addr_spec == "MAILER-DAEMON@gw.example.org"
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert msg["Subject"] == "Undelivered Mail Returned to Sender"
    assert msg["Auto-Submitted"] == "auto-replied"
    assert msg["Date"].datetime.timestamp() == NOW and msg["Message-ID"]
    text, report, headers = msg.iter_parts()
    assert text.get_content_type() == "text/plain"
    assert "gw.example.org" in text.get_content() and UNKNOWN_USER in text.get_content()

    assert report.get_content_type() == "message/delivery-status"
    per_message, bob, carol = report.get_payload()
    assert per_message["Reporting-MTA"] == "dns; gw.example.org"
    assert per_message["X-Mailgate-Queue-ID"] == "4QmX2b0Zk9z"
    assert parsedate_to_datetime(per_message["Arrival-Date"]).timestamp() == ARRIVED
    assert (bob["Final-Recipient"], bob["Action"], bob["Status"]) == \
        ("rfc822; bob@example.net", "failed", "5.1.1")
    assert bob["Remote-MTA"] == "dns; mx1.example.net"
    assert bob["Diagnostic-Code"] == f"smtp; {UNKNOWN_USER}"
    assert parsedate_to_datetime(bob["Last-Attempt-Date"]).timestamp() == NOW
    assert (carol["Final-Recipient"], carol["Action"], carol["Status"]) == \
        ("rfc822; carol@example.net", "delayed", "4.4.1")
    assert "Remote-MTA" not in carol

    assert headers.get_content_type() == "text/rfc822-headers"
    quoted = headers.get_payload(decode=True).replace(b"\r\n", b"\n").rstrip(b"\n")
    expected = header_block(original)
    if len(expected) <= MAX_HEADER_BYTES:
        assert quoted == expected
    else:
        assert expected.startswith(quoted) and len(quoted) <= MAX_HEADER_BYTES
    assert len(raw) < len(quoted) * 4 + 8192        # headers only, never the body


def test_huge_original_only_headers():
    original = b"Subject: big\r\nFrom: a@b\r\n\r\n" + b"x" * 10_000_000
    raw = dsn_for(original)
    assert len(raw) < 10_000
    headers = list(email.message_from_bytes(raw, policy=email.policy.default).iter_parts())[2]
    assert headers.get_payload(decode=True).rstrip() == b"Subject: big\r\nFrom: a@b"


@pytest.mark.parametrize("original", [b"", b"\r\n\r\nbody only", b"\xff\xfe\x00garbage\rno-newline",
                                      b"Subject: \xe9t\xe9\n\tfolded\nX: " + b"y" * 5000 + b"\n\n"])
def test_broken_originals_never_crash(original):
    msg = email.message_from_bytes(dsn_for(original), policy=email.policy.default)
    assert msg.get_content_type() == "multipart/report"
    assert [p.get_content_type() for p in msg.iter_parts()][2] == "text/rfc822-headers"


def test_header_injection_from_remote_reply_is_neutralised():
    evil = FailedRecipient("bob@example.net", "5.7.1", "550 no\r\nBcc: victim@example.org\r\n\r\nX")
    msg = email.message_from_bytes(dsn_for(b"Subject: x\r\n\r\n", [evil]),
                                   policy=email.policy.default)
    assert msg["Bcc"] is None
    rcpt = list(msg.iter_parts())[1].get_payload()[1]
    assert rcpt["Bcc"] is None and "Bcc: victim" in rcpt["Diagnostic-Code"]


def test_utf8_recipient_uses_rfc6533_escape():
    rcpt = FailedRecipient("jörg@exämple.net", "5.1.1", "550 unknown")
    raw = dsn_for(b"Subject: x\r\n\r\n", [rcpt])
    report = list(email.message_from_bytes(raw, policy=email.policy.default).iter_parts())[1]
    assert report.get_payload()[1]["Final-Recipient"] == r"utf-8; j\x{F6}rg@ex\x{E4}mple.net"


def test_delay_warning_and_postmaster_sender():
    rcpt = FailedRecipient("bob@example.net", "4.4.1", "timeout", action="delayed")
    msg = email.message_from_bytes(dsn_for(b"Subject: x\r\n\r\n", [rcpt],
                                           postmaster="postmaster@example.org"),
                                   policy=email.policy.default)
    assert msg["Subject"] == "Delayed Mail (still being retried)"
    assert msg["From"].addresses[0].addr_spec == "postmaster@example.org"
    assert "WARNING ONLY" in list(msg.iter_parts())[0].get_content()


@pytest.mark.parametrize("recipients", [[], [FailedRecipient("a@b", "550", "x")],
                                        [FailedRecipient("a@b", "5.1.1", "x", action="bounced")]])
def test_bad_input_rejected(recipients):
    with pytest.raises(ValueError):
        dsn_for(b"Subject: x\r\n\r\n", recipients)


@pytest.mark.parametrize("mail_from,is_dsn,expected", [
    ("alice@example.com", False, True), ("", False, False), ("<>", False, False),
    (" <> ", False, False), ("alice@example.com", True, False)])
def test_never_bounce_a_bounce(mail_from, is_dsn, expected):
    assert should_bounce(mail_from, is_dsn) is expected


@pytest.mark.parametrize("status", ["5.1.1000", "5.1000.1", "5.1", "6.1.1", "5.1.x"])
def test_a_status_outside_rfc_3463_is_refused(status):
    with pytest.raises(ValueError, match="bad RFC 3463 status"):
        dsn_for(b"Subject: x\r\n\r\nbody\r\n",
                recipients=[FailedRecipient("bob@example.net", status, "550 no")])
