"""The envelope is validated once, at intake, with the rules the delivery side enforces (issue 6
items 3, 5, 16), end to end: real SMTP clients (smtplib with raw commands) against the gateway
process, real sinks, dnsmasq for the internet MX.

- a control character in MAIL FROM gets 501 5.1.7; a non-ASCII MAIL FROM or RCPT TO without
  SMTPUTF8 (the Kelvin sign that case-folds to a real user) gets 553 5.6.7; nothing is spooled;
- an SMTPUTF8 message from a non-ASCII sender, to a smarthost without SMTPUTF8 (on-premises
  Exchange), bounces with 5.6.7 at the first attempt and the DSN reaches the sender's
  SMTPUTF8-capable MX;
- IDN accepted domains, configured as A-label or U-label, go to the smarthost with the A-label
  on the wire;
- groups with RequireSenderAuthenticationEnabled refuse outside senders with 550 5.7.1 at RCPT,
  and accept mail from the trusted networks.
"""
from __future__ import annotations

import json
import smtplib
import sqlite3
import time
from pathlib import Path

import pytest

from tests.conftest import Peers, config_toml, fast_continuity
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for

EXCHANGE_IP, INTERNET_IP, TRUSTED_IP = "127.0.0.41", "127.0.0.42", "127.0.0.45"
KELVIN = "\u212a"                                   # case-folds to "k"
SENDER_UTF8 = "jörg@sender.test"
BAD_SENDER_CONTROL = (501, "5.1.7")
NEEDS_SMTPUTF8 = (553, "5.6.7")
AUTH_REQUIRED = (550, "5.7.1")

DIRECTORY = {
    "mailboxes": ["kate@example.com", "alice@example.com", "carol@bücher.example",
                  "dave@xn--maana-pta.example"],
    "groups": [
        {"address": "all-staff@example.com", "members": ["kate@example.com", "alice@example.com"],
         "require_sender_authentication_enabled": True},
        {"address": "sales-dyn@example.com", "dynamic": True,
         "members": ["kate@example.com", "alice@example.com"],
         "require_sender_authentication_enabled": True},
        {"address": "open@example.com", "members": ["kate@example.com"]},
    ],
}


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Gateway; Exchange sink without SMTPUTF8; internet sink (MX of sender.test) with it."""
    peers = Peers(tmp_path_factory.mktemp("envelope"))
    exchange = peers.sink(EXCHANGE_IP, None, "exchange", "--no-smtputf8")
    internet = peers.sink(INTERNET_IP, None, "internet")
    dns = DnsServer(mx={"sender.test": [(10, "mx.sender.test")]},
                    a={"mx.sender.test": INTERNET_IP}).start()
    directory = peers.base / "directory.json"
    directory.write_text(json.dumps(DIRECTORY, ensure_ascii=False))
    port = free_port()
    data = peers.base / "data"
    gw = peers.gateway(config_toml(
        port=port, data_dir=data, directory=directory, trusted=[f"{TRUSTED_IP}/32"],
        accepted=("example.com", "xn--bcher-kva.example", "mañana.example"),
        smarthost=f"[{EXCHANGE_IP}]:{exchange.port}", dns_port=dns.port,
        mx_port=internet.port, continuity=None), port)
    yield gw, exchange, internet, data / "spool.db"
    peers.close()
    dns.stop()


def session(port: int, source: str = "127.0.0.1") -> smtplib.SMTP:
    c = smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10)
    c.ehlo("client.test")
    return c


def reply(resp: tuple[int, bytes]) -> tuple[int, str]:
    code, text = resp
    return code, text.decode("utf-8", "replace").split(" ", 1)[0]


def raw_mail(c: smtplib.SMTP, path: str, params: str = "") -> tuple[int, str]:
    """MAIL FROM sent as given, bytes included (smtplib would re-quote or refuse it)."""
    c.send(f"MAIL FROM:<{path}>{params}\r\n".encode("utf-8"))
    return reply(c.getreply())


def raw_rcpt(c: smtplib.SMTP, path: str) -> tuple[int, str]:
    c.send(f"RCPT TO:<{path}>\r\n".encode("utf-8"))
    return reply(c.getreply())


def spool_rows(db: Path, sql: str, *args) -> list[tuple]:
    with sqlite3.connect(db) as con:
        return con.execute(sql, args).fetchall()


def messages_from(db: Path, sender: str) -> list[tuple]:
    return spool_rows(db, "SELECT queue_id FROM messages WHERE mail_from = ?", sender)


@pytest.mark.parametrize("path", ["a\x00b@remote.test", "a\x01b@remote.test",
                                  "a\x7fb@remote.test", "x@re\x1bmote.test"])
def test_control_character_in_mail_from_is_refused(site, path):
    gw, *_ = site
    with session(gw.port) as c:
        assert raw_mail(c, path) == BAD_SENDER_CONTROL
        # the session goes on: a good sender is taken afterwards
        assert raw_mail(c, "good@remote.test")[0] == 250


def test_non_ascii_mail_from_without_smtputf8_is_refused(site):
    gw, *_ = site
    with session(gw.port) as c:
        assert raw_mail(c, SENDER_UTF8) == NEEDS_SMTPUTF8
        assert raw_mail(c, SENDER_UTF8, " SMTPUTF8")[0] == 250


def test_kelvin_sign_rcpt_without_smtputf8_is_refused_and_nothing_queued(site):
    gw, exchange, _internet, db = site
    before = exchange.count()
    with session(gw.port) as c:
        assert raw_mail(c, "kelvin@remote.test")[0] == 250
        assert raw_rcpt(c, f"{KELVIN}ate@example.com") == NEEDS_SMTPUTF8
        assert raw_rcpt(c, "carol@bücher.example") == NEEDS_SMTPUTF8
        c.send(b"DATA\r\n")
        assert c.getreply()[0] == 503          # no valid recipients: need RCPT
    assert messages_from(db, "kelvin@remote.test") == []
    assert exchange.count() == before


def test_smtputf8_sender_to_exchange_without_smtputf8_bounces_at_once_and_dsn_arrives(site):
    gw, exchange, internet, db = site
    before = exchange.count()
    body = (f"From: {SENDER_UTF8}\r\nTo: alice@example.com\r\nSubject: Grüße\r\n"
            f"Message-ID: <u8.{time.time()}@sender.test>\r\n\r\nHallo\r\n").encode()
    with session(gw.port) as c:
        assert raw_mail(c, SENDER_UTF8, " SMTPUTF8 BODY=8BITMIME")[0] == 250
        assert raw_rcpt(c, "alice@example.com")[0] == 250
        assert c.docmd("DATA")[0] == 354
        c.send(body + b".\r\n")
        assert c.getreply()[0] == 250
    (qid,), = messages_from(db, SENDER_UTF8)
    rows = wait_for(lambda: [r for r in spool_rows(
        db, "SELECT state, attempts, reply_text FROM recipients WHERE queue_id = ?", qid)
        if r[0] != "pending"], 20, what="the recipient's final state")
    state, attempts, text = rows[0]
    assert (state, attempts) == ("bounced", 1)
    assert text.startswith("5.6.7")
    assert exchange.count() == before                  # nothing reached Exchange
    dsn = wait_for(lambda: [(env, data) for env, data in internet.messages()
                            if env["mail_from"] == "<>"], 20, what="the DSN at the sender's MX")
    env, data = dsn[0]
    assert env["rcpt_tos"] == [SENDER_UTF8]
    assert "SMTPUTF8" in env["mail_options"]
    assert b"Status: 5.6.7" in data


@pytest.mark.parametrize("rcpt_path, smtputf8, wire", [
    ("carol@xn--bcher-kva.example", False, "carol@xn--bcher-kva.example"),   # A-label config
    ("carol@bücher.example", True, "carol@xn--bcher-kva.example"),
    ("dave@xn--maana-pta.example", False, "dave@xn--maana-pta.example"),     # U-label config
    ("dave@MAÑANA.example", True, "dave@xn--maana-pta.example"),
])
def test_idn_accepted_domain_goes_to_the_smarthost_with_the_a_label(site, rcpt_path, smtputf8, wire):
    gw, exchange, internet, db = site
    sender = f"idn.{time.time()}@remote.test"
    with session(gw.port) as c:
        assert raw_mail(c, sender, " SMTPUTF8" if smtputf8 else "")[0] == 250
        assert raw_rcpt(c, rcpt_path)[0] == 250
        assert c.docmd("DATA")[0] == 354
        c.send(b"Subject: idn\r\n\r\nhi\r\n.\r\n")
        assert c.getreply()[0] == 250
    got = wait_for(lambda: [env for env, _ in exchange.messages() if env["mail_from"] == sender],
                   20, what="the message at the smarthost")
    assert got[0]["rcpt_tos"] == [wire]
    assert not [env for env, _ in internet.messages() if env["mail_from"] == sender]


@pytest.mark.parametrize("group", ["all-staff@example.com", "sales-dyn@example.com"])
def test_internal_only_group_refuses_outside_senders_at_rcpt(site, group):
    gw, _exchange, _internet, db = site
    sender = f"stranger.{time.time()}@remote.test"
    with session(gw.port) as c:
        assert raw_mail(c, sender)[0] == 250
        assert raw_rcpt(c, group) == AUTH_REQUIRED
        assert raw_rcpt(c, "open@example.com")[0] == 250     # an ordinary group still takes it
    with session(gw.port) as c:
        assert raw_mail(c, sender)[0] == 250
        assert raw_rcpt(c, group) == AUTH_REQUIRED
        c.send(b"DATA\r\n")
        assert c.getreply()[0] == 503
    assert messages_from(db, sender) == []
    # filed nowhere (the journal files the module's delivered local mail: count the sender's only)
    assert spool_rows(db, "SELECT COUNT(*) FROM mailbox_messages WHERE envelope_from=?", sender) == [(0,)]


@pytest.mark.parametrize("group", ["all-staff@example.com", "sales-dyn@example.com"])
def test_internal_only_group_takes_mail_from_trusted_networks(site, group):
    gw, exchange, _internet, db = site
    sender = f"colleague.{time.time()}@example.com"
    with session(gw.port, TRUSTED_IP) as c:
        assert c.sendmail(sender, [group], b"Subject: staff\r\n\r\nhello\r\n") == {}
    got = wait_for(lambda: [env for env, _ in exchange.messages() if env["mail_from"] == sender],
                   20, what="the group message at Exchange")
    assert got[0]["rcpt_tos"] == [group]


CONTINUITY = fast_continuity("kate@example.com")


def test_during_an_event_outside_mail_to_internal_groups_is_refused_and_filed_nowhere(peers, tmp_path):
    """The incident: mail from outside to a dynamic group reached four users' continuity
    mailboxes. Now it is refused at RCPT; a colleague's mail to the group is still filed."""
    exchange = peers.sink(EXCHANGE_IP, None, "exchange-ev", "--no-smtputf8")
    directory = tmp_path / "directory.json"
    directory.write_text(json.dumps(DIRECTORY, ensure_ascii=False))
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", directory=directory,
                                   trusted=[f"{TRUSTED_IP}/32"], accepted=("example.com",),
                                   smarthost=f"[{EXCHANGE_IP}]:{exchange.port}", continuity=None,
                                   extra=CONTINUITY), port)
    assert gw.cli("continuity", "start", "--reason", "test").stdout.strip() == "ok: continuity"
    for group in ("all-staff@example.com", "sales-dyn@example.com"):
        with session(port) as c:
            assert raw_mail(c, "stranger@remote.test")[0] == 250
            assert raw_rcpt(c, group) == AUTH_REQUIRED
    with session(port, TRUSTED_IP) as c:
        c.sendmail("colleague@example.com", ["sales-dyn@example.com"],
                   b"Subject: Inside news\r\n\r\nfor the team\r\n")
    db = tmp_path / "data" / "spool.db"
    wait_for(lambda: spool_rows(db, "SELECT COUNT(*) FROM mailbox_messages") == [(2,)], 15,
             what="the colleague's mail filed for both members")
    assert messages_from(db, "stranger@remote.test") == []
    owners = spool_rows(db, "SELECT mailbox, envelope_from FROM mailbox_messages ORDER BY mailbox")
    assert owners == [("alice@example.com", "colleague@example.com"),
                      ("kate@example.com", "colleague@example.com")]
