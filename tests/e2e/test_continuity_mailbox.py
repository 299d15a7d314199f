"""Continuity mailboxes end to end: during an admin-started event, mail to a distribution group
lands in each member's continuity mailbox, a user's mailbox holds only their own mail, search
works through the CLI, and after the event the mail still reaches Exchange exactly once."""
import smtplib
from pathlib import Path

from tests.conftest import config_toml, fast_continuity
from tests.support.peers import free_port, wait_for

DIRECTORY = Path(__file__).resolve().parents[1] / "policies" / "data" / "directory.json"
FAST = fast_continuity("erin@example.org")


def send(port, rcpts, subject, body):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.sendmail("alice@remote.test", rcpts,
                   f"From: Alice <alice@remote.test>\r\nSubject: {subject}\r\n\r\n{body}\r\n".encode())


def listing(gw, address):
    return gw.cli("mailbox", "list", address).stdout


def test_group_mail_reaches_members_and_users_see_only_their_own(peers, tmp_path):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", accepted=("example.org",),
                                   smarthost=f"[127.0.0.1]:{sink.port}", directory=DIRECTORY,
                                   continuity=None, extra=FAST), port)
    assert gw.cli("continuity", "start", "--reason", "test").stdout.strip() == "ok: continuity"
    send(port, ["team@example.org"], "Team offsite", "agenda for the offsite in Oxford")
    send(port, ["erin@example.org"], "For Erin only", "your payslip")
    send(port, ["helpdesk@example.org"], "Printer", "the printer is on fire")
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") == 3, 15, what="3 held")

    erin, frank, helpdesk = (listing(gw, a) for a in
                             ("erin@example.org", "Frank.Miller@example.org", "helpdesk@example.org"))
    assert "Team offsite" in erin and "For Erin only" in erin and "Printer" not in erin
    assert "Team offsite" in frank and "For Erin only" not in frank and "Printer" not in frank
    assert "Printer" in helpdesk and "Team offsite" not in helpdesk
    assert "-- 2 message(s)" in erin and "-- 1 message(s)" in frank

    found = gw.cli("mailbox", "search", "frank.miller@example.org", "oxford").stdout
    assert "Team offsite" in found
    assert "-- 0 message(s)" in gw.cli("mailbox", "search", "frank.miller@example.org", "payslip").stdout

    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: sink.count() == 3, 15, what="replay to Exchange")
    rcpts = sorted(r for env, _ in sink.messages() for r in env["rcpt_tos"])
    assert rcpts == ["erin@example.org", "helpdesk@example.org", "team@example.org"]   # once each


def test_outbound_mail_from_exchange_still_flows_during_an_event(peers, tmp_path):
    """Exchange half alive: its outbound connector (a trusted network) still sends to the internet
    through the gateway while inbound mail for Exchange is held; a message to both is split."""
    from tests.support.dnsserver import DnsServer
    exchange = peers.sink("127.0.0.13", None, "exchange")
    internet = peers.sink("127.0.0.23", None, "internet")
    dns = DnsServer(mx={"partner.test": [(10, "mx.partner.test")]}, a={"mx.partner.test": "127.0.0.23"}).start()
    try:
        port = free_port()
        gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", accepted=("example.org",),
                                       smarthost=f"[127.0.0.13]:{exchange.port}", directory=DIRECTORY,
                                       trusted=["127.0.0.6/32"], dns_port=dns.port, mx_port=internet.port,
                                       continuity=None, extra=FAST), port)
        assert gw.cli("continuity", "start").stdout.strip() == "ok: continuity"
        with smtplib.SMTP("127.0.0.1", port, source_address=("127.0.0.6", 0), timeout=30) as c:
            c.sendmail("erin@example.org", ["buyer@partner.test", "frank.miller@example.org"],
                       b"From: erin@example.org\r\nSubject: order\r\n\r\nplease ship\r\n")
        wait_for(lambda: internet.count() == 1, 15, what="delivery to the internet during the event")
        assert internet.messages()[0][0]["rcpt_tos"] == ["buyer@partner.test"]
        wait_for(lambda: " hold " in gw.cli("queue", "list").stdout, 10, what="local part held")
        assert exchange.count() == 0
        assert "order" in listing(gw, "frank.miller@example.org")
        gw.cli("continuity", "stop")
        wait_for(lambda: exchange.count() == 1, 15, what="replay of the local part")
        assert exchange.messages()[0][0]["rcpt_tos"] == ["frank.miller@example.org"]
        assert internet.count() == 1                     # the internet recipient is not sent again
    finally:
        dns.stop()
