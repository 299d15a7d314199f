"""Session limits and the ESMTP surface of the gateway process, seen by real clients (smtplib,
raw sockets, swaks): recipients per message, message size, connections per client, EHLO
keywords, STARTTLS (trustme certificate), require_tls, pipelining, and replies that never leak
Python internals.
"""
from __future__ import annotations

import re
import smtplib
import socket
import ssl
import subprocess

import pytest
import trustme

from tests.conftest import Peers, config_toml
from tests.support.peers import free_port, wait_for

MAX_RCPT, MAX_SIZE, PER_CLIENT = 100, 100_000, 3
TOO_MANY_RCPTS = (452, b"4.5.3 Too many recipients")
SIZE_EXCEEDED = (552, b"5.3.4 Message size exceeds fixed maximum message size")
TOO_MANY_CONNECTIONS = b"421 4.7.0 Too many connections from your address, try again later\r\n"
NEED_TLS = (530, b"5.7.0 Must issue a STARTTLS command first")
RCPT_OK = (250, b"2.1.5 Recipient OK")
EHLO_KEYWORDS = {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SMTPUTF8", "SIZE", "STARTTLS"}
LEAK = re.compile(rb"Error: \(|Traceback|\b[A-Z][A-Za-z]*(Error|Exception)\b")
ENHANCED = re.compile(rb"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3} ")


def with_keys(toml: str, table: str, **keys) -> str:
    """``toml`` with ``keys`` added to ``[table]`` (config_toml's extra cannot reopen a table)."""
    def value(v):
        return "true" if v is True else "false" if v is False else repr(v).replace("'", '"')
    head = f"[{table}]\n"
    assert head in toml, table
    return toml.replace(head, head + "".join(f"{k} = {value(v)}\n" for k, v in keys.items()), 1)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("tls")
    ca = trustme.CA()
    cert = ca.issue_cert("gw.test")
    cert.private_key_and_cert_chain_pem.write_to_path(str(d / "gw.pem"))
    cert.private_key_pem.write_to_path(str(d / "gw.key"))
    ca.cert_pem.write_to_path(str(d / "ca.pem"))
    return d / "gw.pem", d / "gw.key", d / "ca.pem"


def start(peers: Peers, tls_files, **smtp) -> tuple:
    sink = peers.sink("127.0.0.41", None, f"exchange{len(peers.procs)}")
    port = free_port()
    cert, key, _ = tls_files
    toml = config_toml(port=port, data_dir=peers.base / f"data{len(peers.procs)}",
                       smarthost=f"[127.0.0.41]:{sink.port}")
    toml = with_keys(toml, "smtp", tls_cert=str(cert), tls_key=str(key), **smtp)
    return peers.gateway(toml, port, name=f"gw{len(peers.procs)}"), sink


@pytest.fixture(scope="module")
def gw(tmp_path_factory, tls_files):
    peers = Peers(tmp_path_factory.mktemp("limits"))
    yield start(peers, tls_files, max_recipients=MAX_RCPT, max_message_size=MAX_SIZE,
                max_connections_per_client=PER_CLIENT)
    peers.close()


def client(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=15)
    c.ehlo("limits.client.test")
    return c


def test_ehlo_advertises_the_extensions(gw):
    with client(gw[0].port) as c:
        code, text = c.ehlo("limits.client.test")
        assert code == 250
        keywords = {line.split()[0].decode() for line in text.splitlines()[1:]}
        assert EHLO_KEYWORDS <= keywords, keywords
        assert "AUTH" not in keywords
        assert c.esmtp_features["size"] == str(MAX_SIZE)


def test_recipients_past_the_limit_get_452_and_the_first_100_are_delivered(gw):
    gateway, sink = gw
    with client(gateway.port) as c:
        c.mail("many@remote.test")
        replies = [c.rcpt(f"user{i:03d}@example.com") for i in range(MAX_RCPT)]
        assert replies == [RCPT_OK] * MAX_RCPT
        assert c.rcpt("user100@example.com") == TOO_MANY_RCPTS
        assert c.rcpt("user101@example.com") == TOO_MANY_RCPTS
        assert c.data(b"Subject: many\r\n\r\nhi\r\n")[0] == 250

    def delivered():
        return sorted(r for env, _ in sink.messages() if env["mail_from"] == "many@remote.test"
                      for r in env["rcpt_tos"])
    wait_for(lambda: len(delivered()) >= MAX_RCPT, 20, what="100 recipients at the sink")
    assert delivered() == [f"user{i:03d}@example.com" for i in range(MAX_RCPT)]


def test_size_is_advertised_and_enforced(gw):
    gateway, sink = gw
    before = sink.count()
    with client(gateway.port) as c:
        assert c.mail("big@remote.test", [f"SIZE={MAX_SIZE + 1}"]) == SIZE_EXCEEDED
        assert c.mail("big@remote.test", [f"SIZE={MAX_SIZE // 2}"])[0] == 250
        c.rset()
        c.mail("big@remote.test")
        assert c.rcpt("bob@example.com") == RCPT_OK
        body = b"Subject: big\r\n\r\n" + b"x" * 998 + b"\r\n"
        assert c.data(body * (MAX_SIZE // 1000 + 5)) == SIZE_EXCEEDED
        assert c.noop()[0] == 250            # the session goes on after the refusal
    assert sink.count() == before


def test_fourth_connection_from_one_client_gets_421(gw):
    port = gw[0].port
    held = []
    try:
        for _ in range(PER_CLIENT):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            held.append(s)
            assert s.recv(512).startswith(b"220 ")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as fourth:
            assert fourth.recv(512) == TOO_MANY_CONNECTIONS
            assert fourth.recv(512) == b""       # and closed
        with client(port, source="127.0.0.6") as other:  # another client is not affected
            assert other.noop()[0] == 250
    finally:
        for s in held:
            s.close()
    def accepted() -> bool:
        try:
            return client(port).quit()[0] == 221
        except smtplib.SMTPConnectError:       # the released slots are not counted back yet
            return False
    wait_for(accepted, 5, what="a slot after closing")


def test_starttls_with_swaks(gw):
    gateway, sink = gw
    out = subprocess.run(["swaks", "--server", f"127.0.0.1:{gateway.port}", "--tls",
                          "--from", "tls@remote.test", "--to", "bob@example.com",
                          "--header", "Subject: over TLS"],
                         capture_output=True, text=True, timeout=60)
    assert "<-  220 2.0.0 Ready to start TLS" in out.stdout, out.stdout
    assert re.search(r"<~  250 2\.0\.0 Ok: queued as \S+", out.stdout), out.stdout
    env, data = wait_for(lambda: next(((e, d) for e, d in sink.messages()
                                       if e["mail_from"] == "tls@remote.test"), None),
                         15, what="the TLS message at the sink")
    assert b"by gw.test (mailgate) with ESMTPS id " in data
    assert env["rcpt_tos"] == ["bob@example.com"]


def test_require_tls_refuses_mail_before_starttls(tmp_path, tls_files):
    peers = Peers(tmp_path)
    try:
        gateway, _ = start(peers, tls_files, require_tls=True)
        with client(gateway.port) as c:
            assert c.mail("plain@remote.test") == NEED_TLS
            ctx = ssl.create_default_context(cafile=str(tls_files[2]))
            c._host = "gw.test"                   # verify the certificate against its name
            assert c.starttls(context=ctx)[0] == 220
            c.ehlo("limits.client.test")
            assert c.mail("secure@remote.test")[0] == 250
            assert c.rcpt("bob@example.com") == RCPT_OK
    finally:
        peers.close()


def session(port: int, lines: list[bytes]) -> list[tuple[bytes, bytes]]:
    """Send each line, one at a time; return (command, reply line) for every reply line."""
    out = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        f = s.makefile("rb")
        out.append((b"", f.readline()))
        for line in lines:
            s.sendall(line + b"\r\n")
            while True:
                reply = f.readline()
                out.append((line, reply))
                if reply[3:4] != b"-":
                    break
    return out


def test_pipelined_commands_get_replies_in_order(gw):
    gateway, sink = gw
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        f = s.makefile("rb")
        f.readline()
        s.sendall(b"EHLO pipe.test\r\n")
        while f.readline()[3:4] == b"-":
            pass
        s.sendall(b"MAIL FROM:<pipe@remote.test>\r\nRCPT TO:<bob@example.com>\r\n"
                  b"RCPT TO:<x@foreign.test>\r\nRCPT TO:<alice@example.com>\r\nDATA\r\n")
        got = [f.readline() for _ in range(5)]
        s.sendall(b"Subject: pipelined\r\n\r\nbody\r\n.\r\nQUIT\r\n")
        got += [f.readline(), f.readline()]
    assert [g[:9] for g in got] == [b"250 2.1.0", b"250 2.1.5", b"550 5.7.1", b"250 2.1.5",
                                   b"354 End d", b"250 2.0.0", b"221 2.0.0"], got
    wait_for(lambda: any(e["mail_from"] == "pipe@remote.test" for e, _ in sink.messages()), 15,
             what="the pipelined message")


def test_no_reply_leaks_python_internals(gw):
    # two sessions: one would reach the error limit (21 errors: 421 4.7.0 and closed)
    replies = session(gw[0].port, [
        b"HELO", b"EHLO hostile.test", b"XYZZY", b"RCPT TO:<bob@example.com>", b"DATA",
        b"MAIL FROM:<a@remote.test> FOO=BAR", b"MAIL FROM:<\xff\xfe@remote.test>",
        b"MAIL FROM:<a@remote.test> SIZE=abc", b"MAIL FROM:a@remote.test",
        b"MAIL FROM:<a@remote.test> BODY=8BITMIME", b"MAIL FROM:<b@remote.test>", b"QUIT"])
    replies += session(gw[0].port, [
        b"EHLO hostile.test", b"MAIL FROM:<b@remote.test>",
        b"RCPT TO:<bob@example.com> NOTIFY=NEVER", b"RCPT TO:<\xc3\x28@example.com>",
        b"RCPT TO:<" + b"a" * 300 + b"@example.com>", b"RCPT TO:<>", b"RCPT TO:<@>",
        b"RCPT TO:<a@[999.1.1.1]>", b"RCPT TO:<a@xn--zz.example.com>", b"RCPT TO:<\"\\\x01\"@example.com>",
        b"DATA extra", b"AUTH PLAIN AGFAYg==", b"VRFY bob", b"EXPN team", b"HELP", b"NOOP",
        b"X" * 70000, b"RSET", b"STARTTLS extra", b"QUIT"])
    assert len(replies) > 30
    for command, reply in replies:
        assert not LEAK.search(reply), (command[:80], reply)
    missing = [(command[:40], reply) for command, reply in replies   # RFC 2034 §3: all
               if command and not command.startswith((b"HELO", b"EHLO"))  # but greeting, HELO
               and not ENHANCED.match(reply)]
    assert not missing, f"replies without an enhanced status code: {missing}"
