"""Every real-world message of the corpus, sent by a real SMTP client (smtplib, in the test
process) to the gateway process, arrives at the sink process as our Received: header followed by
the client's bytes, with exactly the transformations documented in docs/relay-and-filtering.md:

- what the client puts on the wire is kept byte for byte, except that
- the delivery client (aiosmtplib) turns every bare LF and bare CR into CRLF when it relays, and
- SMTP content is lines: a message not ending in CRLF gets one from the sending client (smtplib
  appends CRLF), so the sink sees ``normalize_crlf(sent + CRLF)``.

One gateway and one sink serve the whole module; the corpus test reports every failing file.
"""
from __future__ import annotations

import re
import smtplib
import socket
import time

import pytest

from tests.conftest import Peers, config_toml, corpus_files
from tests.support.peers import free_port, wait_for

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as (\S+)$")
DATA_LINE_TOO_LONG = (500, b"5.5.2 Line too long (see RFC5321 4.5.3.1.6)")
OUR_RECEIVED = re.compile(
    rb"\AReceived: from \S+ \(\[127\.0\.0\.1\]\)\r\n"
    rb"\tby gw\.test \(mailgate\) with (?P<proto>ESMTP|UTF8SMTP) id (?P<qid>\S+)\r\n"
    rb"\tfor <(?P<rcpt>[^>\r\n]+)>; [^\r\n]+\r\n")
_EOL = re.compile(rb"\r\n|\n|\r")


def normalize_crlf(data: bytes) -> bytes:
    """Every CRLF, bare LF and bare CR as CRLF: what aiosmtplib sends for stored bytes."""
    return _EOL.sub(b"\r\n", data)


def expected_at_sink(sent: bytes) -> bytes:
    """The body the sink must store for ``sent`` (after our Received: header)."""
    return normalize_crlf(sent if sent.endswith(b"\r\n") else sent + b"\r\n")


def head_is_utf8(raw: bytes) -> bool:
    head = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[0]
    if head.isascii():
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


def mail_options(raw: bytes) -> list[str]:
    """What a correct client declares: BODY=8BITMIME for 8-bit content, SMTPUTF8 when the
    header section is UTF-8 (RFC 6532)."""
    opts = [] if raw.isascii() else ["BODY=8BITMIME"]
    return opts + (["SMTPUTF8"] if head_is_utf8(raw) else [])


@pytest.fixture(scope="module")
def relay(tmp_path_factory):
    peers = Peers(tmp_path_factory.mktemp("corpus"))
    sink = peers.sink("127.0.0.11", None, "exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=peers.base / "data",
                                   smarthost=f"[127.0.0.11]:{sink.port}"), port)
    yield gw, sink
    peers.close()


def sink_by_rcpt(sink) -> dict[str, tuple[dict, bytes]]:
    return {env["rcpt_tos"][0]: (env, data) for env, data in sink.messages()}


def check(name: str, sent: bytes, env: dict, got: bytes, qid: str, opts: list[str]) -> str | None:
    """None if the sink copy is right, else a one-line reason."""
    m = OUR_RECEIVED.match(got)
    if not m:
        return f"{name}: no Received: header of ours on top: {got[:120]!r}"
    if m["qid"].decode() != qid:
        return f"{name}: Received: id {m['qid']!r} is not the queued id {qid}"
    body, want = got[m.end():], expected_at_sink(sent)
    if body != want:
        at = next((i for i, (a, b) in enumerate(zip(body, want)) if a != b), min(len(body), len(want)))
        return (f"{name}: bytes differ at offset {at} (got {len(body)}, want {len(want)}): "
                f"got {body[max(0, at - 20):at + 20]!r} want {want[max(0, at - 20):at + 20]!r}")
    for opt in ("BODY=8BITMIME", "SMTPUTF8"):
        if (opt in env["mail_options"]) != (opt in opts):
            return f"{name}: relayed MAIL options {env['mail_options']} but client sent {opts}"
    return None


def test_every_corpus_message_is_relayed_byte_exact(relay):
    gw, sink = relay
    files = corpus_files()
    assert len(files) >= 250, "the corpus went missing"
    sent: dict[str, tuple[str, bytes, str, list[str]]] = {}   # rcpt -> (name, bytes, qid, opts)
    failures: list[str] = []
    client = smtplib.SMTP("127.0.0.1", gw.port, local_hostname="corpus.client.test", timeout=60)
    client.ehlo()
    try:
        for i, path in enumerate(files):
            raw, rcpt = path.read_bytes(), f"c{i:03d}@example.com"
            opts = mail_options(raw)
            try:
                client.mail("sender@remote.test", opts)
                code, reply = client.rcpt(rcpt)
                assert code == 250, (path.name, code, reply)
                code, reply = client.data(raw)
            except smtplib.SMTPException as e:
                failures.append(f"{path.name}: refused by the gateway: {e!r}")
                client.rset()
                continue
            m = QUEUED.match(reply.decode())
            if code != 250 or not m:
                failures.append(f"{path.name}: DATA answered {code} {reply!r}")
                continue
            sent[rcpt] = (path.name, raw, m[1], opts)
    finally:
        client.quit()
    wait_for(lambda: sink.count() >= len(sent), 180, what=f"{len(sent)} messages at the sink")
    arrived = sink_by_rcpt(sink)
    for rcpt, (name, raw, qid, opts) in sent.items():
        if rcpt not in arrived:
            failures.append(f"{name}: never arrived at the sink")
            continue
        env, got = arrived[rcpt]
        if env["mail_from"] != "sender@remote.test" or env["rcpt_tos"] != [rcpt]:
            failures.append(f"{name}: envelope changed: {env}")
        elif (why := check(name, raw, env, got, qid, opts)) is not None:
            failures.append(why)
    assert not failures, f"{len(failures)} of {len(files)} corpus files failed:\n" + "\n".join(failures)
    assert sink.count() == len(files), "a message was delivered twice"


# -- targeted cases of each class of odd input (docs/relay-and-filtering.md) --------------------

def send(gw, raw: bytes, rcpt: str, sender: str = "sender@remote.test", opts=()) -> tuple[int, bytes]:
    with smtplib.SMTP("127.0.0.1", gw.port, local_hostname="odd.client.test", timeout=30) as c:
        c.ehlo()
        c.mail(sender, list(opts))
        assert c.rcpt(rcpt)[0] == 250
        return c.data(raw)


def arrived(sink, rcpt: str, timeout: float = 15) -> tuple[dict, bytes]:
    return wait_for(lambda: sink_by_rcpt(sink).get(rcpt), timeout, what=f"{rcpt} at the sink")


@pytest.mark.parametrize("raw", [
    b"Subject: dots\n\n.one dot\n..two dots\n.\nend\n",        # smtplib stuffs after a bare LF
    b"Subject: dots\r\n\r\n.one\r\n..two\r\nmixed\n.three\r\n",
], ids=["bare-lf", "mixed"])
def test_dot_lines_after_bare_lf_keep_their_dots(relay, raw):
    """Regression: aiosmtpd unstuffs only after CRLF, so smtplib's stuffing after a bare LF
    used to leave a doubled dot (14 corpus files were changed this way)."""
    gw, sink = relay
    rcpt = f"dots-{len(raw)}@example.com"
    code, reply = send(gw, raw, rcpt)
    assert (code, QUEUED.match(reply.decode()) is not None) == (250, True), reply
    _env, got = arrived(sink, rcpt)
    assert got[OUR_RECEIVED.match(got).end():] == expected_at_sink(raw)


def test_large_bare_lf_message_is_accepted(relay):
    """Regression: a bare-LF message is one CRLF "line" to aiosmtpd; over 64 KiB it got
    500 5.5.2 Line too long (19 corpus files were refused)."""
    gw, sink = relay
    raw = b"Subject: big bare LF\n\n" + b"".join(b"line %06d of a script's report\n" % i for i in range(20000))
    assert len(raw) > 500_000
    code, reply = send(gw, raw, "biglf@example.com")
    assert code == 250, reply
    _env, got = arrived(sink, "biglf@example.com")
    assert got[OUR_RECEIVED.match(got).end():] == expected_at_sink(raw)


def test_long_lines_pass_unchanged_up_to_max_line_length(relay):
    """Lines over RFC 5321's 998 octets are relayed as they are (no folding, unlike Postfix's
    smtp_line_length_limit); over smtp.max_line_length (65536) the message is refused."""
    gw, sink = relay
    raw = b"Subject: long\r\nX-Long: " + b"x" * 5000 + b"\r\n\r\n" + b"y" * 30000 + b"\r\n"
    code, _ = send(gw, raw, "long@example.com")
    assert code == 250
    _env, got = arrived(sink, "long@example.com")
    assert got[OUR_RECEIVED.match(got).end():] == raw
    before = sink.count()
    for eol in (b"\r\n", b"\n"):
        too_long = b"Subject: too long" + eol + eol + b"z" * 70000 + eol
        assert send(gw, too_long, "toolong@example.com") == DATA_LINE_TOO_LONG
    time.sleep(1.0)
    assert sink.count() == before


def test_lf_dot_lf_does_not_end_data(relay):
    """SMTP smuggling (CVE-2023-51766 class): only CRLF.CRLF ends DATA; a <LF>.<LF> and the
    commands after it are message content, one message is queued."""
    gw, sink = relay
    with socket.create_connection(("127.0.0.1", gw.port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO smuggler.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"MAIL FROM:<a@remote.test>\r\nRCPT TO:<smuggle@example.com>\r\nDATA\r\n")
        replies = [f.readline() for _ in range(3)]
        assert [r[:3] for r in replies] == [b"250", b"250", b"354"], replies
        s.sendall(b"Subject: s\r\n\r\nhello\n.\nMAIL FROM:<evil@remote.test>\r\n"
                  b"RCPT TO:<victim@example.com>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n")
        rest = f.read()
    assert re.match(rb"250 2\.0\.0 Ok: queued as \S+\r\n221 ", rest), rest
    _env, got = arrived(sink, "smuggle@example.com")
    assert b"\r\nMAIL FROM:<evil@remote.test>\r\n" in got
    time.sleep(0.5)
    assert "victim@example.com" not in sink_by_rcpt(sink)


def test_smtputf8_envelope_and_8bit_body_are_relayed_as_such(relay):
    gw, sink = relay
    raw = "From: Jörg <jörg@bücher.test>\r\nSubject: Grüße\r\n\r\nÄpfel\r\n".encode()
    code, _ = send(gw, raw, "josé@example.com", sender="jörg@bücher.test",
                   opts=["SMTPUTF8", "BODY=8BITMIME"])
    assert code == 250
    env, got = arrived(sink, "josé@example.com")
    m = OUR_RECEIVED.match(got)
    assert m["proto"] == b"UTF8SMTP" and got[m.end():] == raw
    assert env["mail_from"] == "jörg@bücher.test"
    assert {"SMTPUTF8", "BODY=8BITMIME"} <= set(env["mail_options"])


def test_undeclared_8bit_body_is_relayed_as_8bitmime(relay):
    """A client that sends 8-bit bytes without BODY=8BITMIME: kept as is, and declared
    BODY=8BITMIME on relay (as Postfix's cleanup detects 8-bit content)."""
    gw, sink = relay
    raw = b"Subject: latin-1\r\n\r\ncaf\xe9\r\n"
    assert send(gw, raw, "undeclared@example.com")[0] == 250
    env, got = arrived(sink, "undeclared@example.com")
    assert got[OUR_RECEIVED.match(got).end():] == raw
    assert "BODY=8BITMIME" in env["mail_options"] and "SMTPUTF8" not in env["mail_options"]
