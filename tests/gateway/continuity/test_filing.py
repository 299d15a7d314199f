"""Filing held mail: recipients expanded through the real directory fixture (nested groups, a
cycle, aliases, a contact), and metadata/text extracted from every real-world corpus message."""
from pathlib import Path

import pytest

from gateway.continuity.filing import mailboxes_for, prepare
from policies.directory import Directory
from tests.conftest import corpus_files

DIRECTORY = Directory.load(Path(__file__).resolve().parents[2] / "policies" / "data" / "directory.json")


def test_group_reaches_members_alias_reaches_mailbox_contact_reaches_nobody():
    owners = mailboxes_for(["team@example.org"], DIRECTORY, filtering=True)
    assert set(owners) == {"erin@example.org", "frank.miller@example.org"}   # nested, cycle-safe
    assert all(via == "team@example.org" for via in owners.values())
    assert list(mailboxes_for(["fmiller@example.org"], DIRECTORY, True)) == ["frank.miller@example.org"]
    assert mailboxes_for(["vendor@example.org"], DIRECTORY, True) == {}
    assert mailboxes_for(["nobody@example.org"], DIRECTORY, True) == {}


def test_a_user_gets_only_their_own_mail():
    assert list(mailboxes_for(["erin@example.org"], DIRECTORY, True)) == ["erin@example.org"]


def test_without_directory_each_recipient_is_its_own_mailbox():
    assert mailboxes_for(["Bob@Example.com"], Directory.empty(), filtering=False) == {"bob@example.com": "Bob@Example.com"}


def test_direct_and_group_delivery_are_one_mailbox_entry():
    owners = mailboxes_for(["erin@example.org", "team@example.org"], DIRECTORY, True)
    assert owners["erin@example.org"] == "erin@example.org"


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: p.name)
def test_every_corpus_message_can_be_filed(path):
    data = path.read_bytes()
    e = prepare(queue_id="Q", data=data, envelope_from="a@remote.test", rcpts=["erin@example.org"],
                directory=DIRECTORY, filtering=True)
    assert e.mailboxes == {"erin@example.org": "erin@example.org"}
    assert e.data == data
    assert isinstance(e.subject, str) and isinstance(e.body_text, str)


def test_text_and_attachments_are_extracted():
    msg = (b"From: Alice <a@remote.test>\r\nTo: erin@example.org\r\nSubject: =?utf-8?q?R=C3=A9sum=C3=A9?=\r\n"
           b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/html\r\n\r\n<p>Hello <b>world</b><script>steal()</script></p>\r\n--b\r\n"
           b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=a.pdf\r\n\r\nJVBE\r\n--b--\r\n")
    e = prepare(queue_id="Q", data=msg, envelope_from="", rcpts=["erin@example.org"], directory=DIRECTORY,
                filtering=True)
    assert e.subject == "Résumé" and e.has_attachments
    assert "Hello world" in e.body_text and "steal" not in e.body_text


def test_idn_forms_of_one_address_are_one_mailbox():
    """issue 6 item 5: A-label, U-label and any case of the domain key the same mailbox."""
    owners = mailboxes_for(["Carol@XN--BCHER-KVA.example", "carol@bücher.example",
                            "carol@BÜCHER.example"], Directory.empty(), filtering=False)
    assert owners == {"carol@bücher.example": "Carol@XN--BCHER-KVA.example"}


def test_mime_nested_deeper_than_the_parser_goes_is_still_filed_with_its_headers():
    """1,200 nested multiparts make the email package's recursive parser raise RecursionError:
    the message must still reach its user's mailbox, listed by its top-level headers."""
    n = 1200
    raw = (b"From: a@b.test\r\nTo: c@example.com\r\nSubject: deep\r\nMIME-Version: 1.0\r\n"
           b"Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
           + b"".join(b"--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n" % (i, i + 1)
                      for i in range(n))
           + b"--b%d\r\nContent-Type: text/plain\r\n\r\nhello from the bottom\r\n--b%d--\r\n" % (n, n)
           + b"".join(b"\r\n--b%d--\r\n" % i for i in reversed(range(n))))
    e = prepare(queue_id="Q1", data=raw, envelope_from="a@b.test", rcpts=["c@example.com"],
                directory=Directory.empty(), filtering=False)
    assert e is not None and e.mailboxes == {"c@example.com": "c@example.com"}
    assert e.subject == "deep" and e.from_header == "a@b.test" and e.data == raw
    assert "hello from the bottom" in e.body_text
