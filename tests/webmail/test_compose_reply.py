"""Replying to and forwarding filed mail from the webmail (split from test_compose.py): threading
headers, quoting, and every corpus message's reply and forward forms."""
from __future__ import annotations

import base64
import email
import email.policy
import re

from tests.webmail.test_compose import file_original, file_originals, wait_delivered, world  # noqa: F401
from tests.webmail.test_dkim import verify_all


ORIGINAL = (b"From: Partner <partner@ext.test>\r\nTo: alice@example.org, bob@example.org\r\n"
            b"Cc: Carol <carol@ext.test>\r\nReply-To: replies@ext.test\r\n"
            b"Subject: =?utf-8?q?Budget_2027=0D=0ABcc:_victim@ext.test?=\r\n"
            b"Date: Mon, 30 Nov 2026 09:00:00 +0000\r\nMessage-ID: <orig-42@mail.ext.test>\r\n"
            b"References: <root-1@mail.ext.test> <junk <mid-2@mail.ext.test>\r\n"
            b"Thread-Topic: Budget 2027\r\n"
            b"Thread-Index: " + base64.b64encode(bytes(range(22)) + b"\x00\x01\x02\x03\x04") + b"\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\n\r\nPlease review the budget.\r\n")


def thread_index(data: bytes) -> bytes:
    msg = email.message_from_bytes(data, policy=email.policy.default)
    return base64.b64decode(str(msg["Thread-Index"]))


def test_reply_and_reply_all_thread_with_the_original(world):
    alice = world.client("alice@example.org")
    mid = file_original(world, "alice@example.org", ORIGINAL)
    form = alice.http.get(f"/msg/{mid}/reply").text
    assert 'value="replies@ext.test"' in form                      # To from Reply-To
    assert 'value="Re: Budget 2027 Bcc: victim@ext.test"' in form   # CR/LF stripped before "Re:"
    assert "&gt; Please review the budget." in form
    r = alice.send(to="replies@ext.test", subject="Re: Budget 2027 Bcc: victim@ext.test",
                   body="Looks fine.", orig=str(mid), mode="reply")
    assert r.status_code == 303, r.text
    (env, data), = wait_delivered(world.internet)
    assert env["rcpt_tos"] == ["replies@ext.test"]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["In-Reply-To"] == "<orig-42@mail.ext.test>"
    assert msg["References"].split() == ["<root-1@mail.ext.test>", "<mid-2@mail.ext.test>",
                                         "<orig-42@mail.ext.test>"]
    assert msg["Thread-Topic"] == "Budget 2027"
    ti = thread_index(data)
    assert len(ti) == 22 + 5 + 5 and ti[:27] == bytes(range(22)) + b"\x00\x01\x02\x03\x04"
    assert not re.search(rb"^Bcc:", data, re.M)

    form = alice.http.get(f"/msg/{mid}/reply-all").text
    cc = re.search(r'id="cc" name="cc" type="text" value="([^"]*)"', form).group(1)
    assert "bob@example.org" in cc and "carol@ext.test" in cc and "alice@example.org" not in cc

    # an original without Thread-Index: two replies share one derived 22-byte prefix
    plain = ORIGINAL.split(b"Thread-Topic")[0] + b"Message-ID: <other@x.test>\r\n\r\nhi\r\n"
    plain = plain.replace(b"Message-ID: <orig-42@mail.ext.test>\r\n", b"")
    mid2 = file_original(world, "alice@example.org", plain, queue_id="ORIGINAL0000002")
    for _ in range(2):
        assert alice.send(to="partner@ext.test", subject="Re: x", body="y", orig=str(mid2),
                          mode="reply").status_code == 303
    msgs = wait_delivered(world.internet, 3)
    a, b = (thread_index(d) for _e, d in msgs[1:])
    assert len(a) == len(b) == 27 and a[:22] == b[:22]

    # forward as attachment carries the original bytes as message/rfc822
    assert "The original message is attached" in alice.http.get(f"/msg/{mid}/forward?as=attachment").text
    assert alice.send(to="partner@ext.test", subject="Fwd: Budget", body="fyi", orig=str(mid),
                      mode="forward-attachment").status_code == 303
    fwd = email.message_from_bytes(wait_delivered(world.internet, 4)[3][1], policy=email.policy.default)
    att, = fwd.iter_attachments()
    assert att.get_content_type() == "message/rfc822"
    assert str(att.get_content()["Message-ID"]) == "<orig-42@mail.ext.test>"
    # someone else's message id is not a reply target
    bob = world.client("bob@example.org")
    assert bob.http.get(f"/msg/{mid}/reply").status_code == 404
    r = bob.send(from_addr="bob@example.org", to="partner@ext.test", subject="x", body="y",
                 orig=str(mid), mode="reply")
    assert r.status_code == 400 and "not available" in r.text
    huge = "9" * 30                                     # beyond SQLite's integers: 404, not 500
    for path in (f"/msg/{huge}/reply", f"/msg/{huge}/forward", f"/msg/{huge}/status"):
        assert bob.http.get(path).status_code == 404, path
    r = bob.send(from_addr="bob@example.org", to="partner@ext.test", subject="x", body="y",
                 orig=huge, mode="reply")
    assert r.status_code == 400 and "not available" in r.text


def test_every_corpus_message_can_be_replied_to_and_forwarded(world):
    """Hostile and broken real-world mail: the reply, reply-all and forward forms of every
    corpus message render (no 5xx), and forwarding one as an attachment carries its headers and
    parts (re-serialised by the email package: not byte for byte)."""
    from tests.conftest import corpus_files
    files = corpus_files()
    assert len(files) > 100
    ids = file_originals(world, "alice@example.org",
                         [(f"CORPUS{i:09d}", f.read_bytes()) for i, f in enumerate(files)])
    alice = world.client("alice@example.org")
    bad = []
    for mid, f in zip(ids, files):
        for path in ("reply-all", "forward"):      # reply's and forward-as-attachment's paths too
            r = alice.http.get(f"/msg/{mid}/{path}")
            if r.status_code != 200 or "<script" in r.text.split("</header>", 1)[1].replace(
                    '<script src="/static/compose.js" defer></script>', ""):
                bad.append((f.name, path, r.status_code))
    assert bad == []
    raw = files[0].read_bytes()
    r = alice.send(to="partner@ext.test", subject="fwd", body="see attached", orig=str(ids[0]),
                   mode="forward-attachment")
    assert r.status_code == 303, r.text
    (env, data), = wait_delivered(world.internet)
    att, = email.message_from_bytes(data, policy=email.policy.default).iter_attachments()
    assert att.get_content_type() == "message/rfc822"
    # the attached message is the original byte for byte (the part is spliced in, never
    # re-serialised), and parses back to the original's headers and parts
    assert _attached_bytes(data) == raw.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    orig = email.message_from_bytes(raw, policy=email.policy.default)
    fwd = att.get_content()
    assert [(k.lower(), " ".join(str(v).split())) for k, v in fwd.items()] == \
        [(k.lower(), " ".join(str(v).split())) for k, v in orig.items()]
    assert [p.get_content_type() for p in fwd.walk()] == [p.get_content_type() for p in orig.walk()]
    assert verify_all(data, world.dnsfunc) == [True, True]


def _attached_bytes(data: bytes) -> bytes:
    """The content of the message/rfc822 (or message/global) part of ``data``, cut out of the
    bytes by its boundary (RFC 2046 section 5.1.1: the CRLF before a delimiter is the
    delimiter's)."""
    top = email.message_from_bytes(data, policy=email.policy.compat32)
    delim = b"\r\n--" + top.get_boundary().encode()
    for chunk in data.split(delim)[1:]:
        head, _, body = chunk.partition(b"\r\n\r\n")
        if b"Content-Type: message/" in head:
            return body
    raise AssertionError("no message part")
