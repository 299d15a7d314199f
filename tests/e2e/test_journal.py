"""The journal end to end (continuity.journal, issue 7 item 3 "mail from before the outage"): a
real gateway with a directory and continuity on, real sinks for Exchange and the internet, real
DNS. With "all", mail delivered to a local mailbox is in that user's continuity mailbox (listed
at once, searchable once the background indexer has run), a group files into each member, a bounce
to a local sender is filed, an external recipient is not; with "held" nothing is filed on
delivery; mail filed when held and delivered on replay is there once per mailbox."""
import smtplib
from pathlib import Path

import pytest

from spool import db, mailbox
from tests.conftest import config_toml, fast_continuity
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for

DIRECTORY = Path(__file__).resolve().parents[1] / "policies" / "data" / "directory.json"
EXCHANGE_IP, INTERNET_IP, TRUSTED_IP = "127.0.0.13", "127.0.0.23", "127.0.0.6"


def rows(spool_db: Path, sql: str, *args):
    c = db.connect(spool_db)
    try:
        return [tuple(r) for r in c.execute(sql, args)]
    finally:
        c.close()


def listing(spool_db: Path, owner: str) -> list[dict]:
    c = db.connect(spool_db)
    try:
        return mailbox.list_mailbox(c, owner)
    finally:
        c.close()


def found(spool_db: Path, owner: str, words: str) -> list[str]:
    c = db.connect(spool_db)
    try:
        return [r["subject"] for r in mailbox.search(c, owner, words)]
    finally:
        c.close()


def send(port, mail_from, rcpts, subject, body, source=None):
    with smtplib.SMTP("127.0.0.1", port, timeout=30,
                      source_address=(source, 0) if source else None) as c:
        refused = c.sendmail(mail_from, rcpts, (f"From: <{mail_from}>\r\nTo: {', '.join(rcpts)}\r\n"
                                                f"Subject: {subject}\r\n\r\n{body}\r\n").encode())
        assert refused == {}


@pytest.fixture
def site(peers, tmp_path):
    """(start(journal) → (gateway, spool db), exchange sink, internet sink)."""
    exchange = peers.sink(EXCHANGE_IP, None, "exchange")
    internet = peers.sink(INTERNET_IP, None, "internet", "--rcpt-reply", "nobody@partner.test=550")
    dns = DnsServer(mx={"partner.test": [(10, "mx.partner.test")]}, a={"mx.partner.test": INTERNET_IP}).start()

    def start(journal: str, mode: str = "automatic"):
        port = free_port()
        extra = fast_continuity("erin@example.org", mode=mode, journal=journal)
        toml = config_toml(port=port, data_dir=tmp_path / "data", accepted=("example.org",),
                           smarthost=f"[{EXCHANGE_IP}]:{exchange.port}", directory=DIRECTORY,
                           trusted=[f"{TRUSTED_IP}/32"], dns_port=dns.port, mx_port=internet.port,
                           continuity=None, extra=extra)
        return peers.gateway(toml, port), tmp_path / "data" / "spool.db"
    try:
        yield start, exchange, internet
    finally:
        dns.stop()


def test_journal_all_files_delivered_local_mail_only(site):
    start, exchange, internet = site
    gw, spool_db = start("all")
    send(gw.port, "alice@remote.test", ["erin@example.org"], "Quarterly zeppelin forecast",
         "the airship budget for Q3")
    send(gw.port, "alice@remote.test", ["team@example.org"], "Team offsite", "agenda for Oxford")
    send(gw.port, "erin@example.org", ["buyer@partner.test", "helpdesk@example.org"], "Order 7",
         "please ship the widgets", source=TRUSTED_IP)
    send(gw.port, "erin@example.org", ["nobody@partner.test"], "Lost order", "nobody reads this",
         source=TRUSTED_IP)
    wait_for(lambda: exchange.count() == 4, 20, what="3 messages and the bounce at Exchange")
    wait_for(lambda: internet.count() == 1, 20, what="the order at the internet MX")
    bounce = [env for env, _ in exchange.messages() if env["mail_from"] in ("", "<>")]
    assert [env["rcpt_tos"] for env in bounce] == [["erin@example.org"]]

    # listed at once (pending entries: headers parsed on demand), searchable once indexed
    wait_for(lambda: found(spool_db, "erin@example.org", "airship"), 20, what="the indexer")
    wait_for(lambda: rows(spool_db, "SELECT count(*) FROM mailbox_messages WHERE indexed=0") == [(0,)],
             20, what="every entry indexed")
    erin = sorted(r["subject"] for r in listing(spool_db, "erin@example.org"))
    assert erin == ["Quarterly zeppelin forecast", "Team offsite", "Undelivered Mail Returned to Sender"]
    assert found(spool_db, "erin@example.org", "zeppelin") == ["Quarterly zeppelin forecast"]
    # the group reached Frank three ways (alias in team, nested leads): one entry
    assert [r["subject"] for r in listing(spool_db, "frank.miller@example.org")] == ["Team offsite"]
    assert found(spool_db, "frank.miller@example.org", "oxford") == ["Team offsite"]
    assert found(spool_db, "frank.miller@example.org", "airship") == []          # erin's only
    [order] = listing(spool_db, "helpdesk@example.org")
    assert order["subject"] == "Order 7" and order["envelope_from"] == "erin@example.org"
    # external recipients are not filed: only local owners exist
    owners = {o for (o,) in rows(spool_db, "SELECT DISTINCT mailbox FROM mailbox_messages")}
    assert owners == {"erin@example.org", "frank.miller@example.org", "helpdesk@example.org"}
    # the bytes are the queue's own copy, kept past delivery (no second copy)
    assert rows(spool_db, "SELECT count(*) FROM mailbox_bodies") == [(0,)]
    c = db.connect(spool_db)
    try:
        [entry] = [r for r in mailbox.list_mailbox(c, "erin@example.org") if r["subject"] == "Team offsite"]
        data = mailbox.get_message(c, "erin@example.org", entry["id"])["data"]
    finally:
        c.close()
    assert b"agenda for Oxford" in data
    assert "journal_failed" not in gw.log_text()


@pytest.mark.parametrize("journal, mode", [("held", "automatic"), ("all", "off")])
def test_journal_held_or_continuity_off_files_nothing_on_delivery(site, journal, mode):
    """With "held", today's behaviour (only held mail is filed); with continuity off (a plain
    relay) there are no continuity mailboxes to fill, whatever continuity.journal says."""
    start, exchange, _internet = site
    gw, spool_db = start(journal, mode)
    send(gw.port, "alice@remote.test", ["erin@example.org", "team@example.org"], "Plain relay", "hi")
    wait_for(lambda: exchange.count() == 1, 20, what="delivery to Exchange")
    wait_for(lambda: rows(spool_db, "SELECT state FROM messages") == [("delivered",)], 10,
             what="the delivery recorded")
    assert rows(spool_db, "SELECT count(*) FROM mailbox_messages") == [(0,)]
    assert rows(spool_db, "SELECT count(*) FROM bodies") == [(0,)]     # bytes gone at delivery, as before


def test_held_then_replayed_mail_is_filed_once_per_mailbox(site):
    start, exchange, _internet = site
    gw, spool_db = start("all")
    send(gw.port, "alice@remote.test", ["erin@example.org"], "Before the outage", "yesterday")
    wait_for(lambda: exchange.count() == 1, 20, what="the first delivery")
    assert gw.cli("continuity", "start", "--reason", "test").stdout.strip() == "ok: continuity"
    send(gw.port, "alice@remote.test", ["team@example.org"], "During the outage", "held mail")
    send(gw.port, "alice@remote.test", ["erin@example.org", "fmiller@example.org"], "Also held", "x")
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") == 2, 15, what="2 held")
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: exchange.count() == 3, 20, what="the replay")
    wait_for(lambda: rows(spool_db, "SELECT count(*) FROM messages WHERE state='delivered'") == [(3,)],
             20, what="the replayed deliveries recorded")
    wait_for(lambda: rows(spool_db, "SELECT count(*) FROM mailbox_messages WHERE indexed=0") == [(0,)],
             20, what="every entry indexed")
    per_box = rows(spool_db, "SELECT mailbox, subject, count(*) FROM mailbox_messages"
                   " GROUP BY mailbox, queue_id ORDER BY mailbox, subject")
    assert per_box == [("erin@example.org", "Also held", 1), ("erin@example.org", "Before the outage", 1),
                       ("erin@example.org", "During the outage", 1),
                       ("frank.miller@example.org", "Also held", 1),
                       ("frank.miller@example.org", "During the outage", 1)]
    # held mail kept its copy; the replay's delivery let the queue's copy go
    held = {q for (q,) in rows(spool_db, "SELECT queue_id FROM mailbox_bodies")}
    assert len(held) == 2
    assert not held & {q for (q,) in rows(spool_db, "SELECT queue_id FROM bodies")}
    assert "journal_failed" not in gw.log_text()      # the replay's filing was a no-op, not an error
