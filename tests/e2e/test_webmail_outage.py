"""The full-outage drill of issue 7: Exchange dies (its sink is stopped), there is no IdP, and a
user who has never logged in gets in with a one-time code sent to her alternate address, reads the
mail held for her, and replies. The reply is DKIM-signed (RSA and Ed25519, verified with dkimpy
against dnsmasq serving the records `mailgate dkim keygen` printed) and reaches the internet-side
sink; after Exchange comes back, the held message is replayed exactly once, byte for byte as it
was received, whatever the user did to it in the webmail (read, replied, deleted).

Real parts throughout: the gateway process, Debian's chromium, aiosmtpd sinks for Exchange and
for "the internet" (the alternate address' and the correspondent's MX, served by dnsmasq)."""
from __future__ import annotations

import email
import email.policy
import json
import re
import smtplib
import sqlite3
import subprocess
import sys

from tests.conftest import ROOT, fast_continuity
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for
from tests.webmail.conftest import Recorder, browser, browser_page, start_webmail  # noqa: F401 (browser: fixture)
from tests.webmail.test_dkim import dnsfunc_for, parse_output, verify_all

ALICE, ALT, PARTNER = "alice@example.org", "alice.home@home.test", "partner@ext.test"


def db(spool_path, sql: str, *args):
    conn = sqlite3.connect(spool_path)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def mode(spool_path) -> str:
    rows = db(spool_path, "SELECT mode FROM continuity_state")
    return rows[0][0] if rows else "normal"


def keys(tmp_path) -> tuple[dict, str]:
    records, toml = {}, ""
    for sel, alg in (("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256")):
        out = subprocess.run([sys.executable, "-m", "gateway.cli", "dkim", "keygen", "example.org", sel,
                              "--algorithm", alg, "--dir", str(tmp_path / "keys")],
                             capture_output=True, text=True, cwd=ROOT, check=True).stdout
        name, strings, k = parse_output(out)
        records[name] = "".join(strings)
        toml += (f'\n[[webmail.dkim]]\ndomain = "{k["domain"]}"\nselector = "{k["selector"]}"\n'
                 f'key_file = "{k["key_file"]}"\nalgorithm = "{k["algorithm"]}"\n')
    return records, toml


def test_full_outage_drill(peers, tmp_path, browser):
    exchange_port = free_port()
    exchange = peers.sink("127.0.0.1", exchange_port, "exchange")
    internet = peers.sink(name="internet")
    records, dkim_toml = keys(tmp_path)
    dns = DnsServer(mx={"ext.test": [(10, "mx.ext.test")], "home.test": [(10, "mx.ext.test")]},
                    a={"mx.ext.test": "127.0.0.1"}, txt=records).start()
    directory = tmp_path / "recipients.json"
    directory.write_text(json.dumps({"mailboxes": [{"address": ALICE, "alt_email": ALT},
                                                   "bob@example.org"]}))
    try:
        gw = start_webmail(peers, tmp_path, accepted=("example.org",), directory=directory,
                           smarthost=f"[127.0.0.1]:{exchange_port}", dns_port=dns.port,
                           mx_port=internet.port, continuity=None,
                           extra=fast_continuity("canary@example.org"), webmail_toml=dkim_toml)
        # Exchange dies; the gateway notices by itself (no admin) and holds mail
        exchange.stop()
        wait_for(lambda: mode(gw.spool_path) == "continuity",
                 30, what="an automatic continuity event")

        # mail from the internet for alice: accepted, held, filed into her continuity mailbox
        original = (b"From: Partner <partner@ext.test>\r\nTo: Alice <alice@example.org>\r\n"
                    b"Subject: Contract for signature\r\nMessage-ID: <contract.1@ext.test>\r\n"
                    b"Date: Wed, 02 Dec 2026 09:00:00 +0000\r\n\r\nPlease sign by Friday.\r\n")
        with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as s:
            s.sendmail(PARTNER, [ALICE], original)
        wait_for(lambda: db(gw.spool_path, "SELECT count(*) FROM messages WHERE state='hold'")[0][0] == 1,
                 30, what="the message on hold")
        [(queue_id, held_bytes)] = db(gw.spool_path, "SELECT m.queue_id, b.data FROM messages m JOIN"
                                      " bodies b ON b.queue_id = m.queue_id WHERE m.state='hold'")
        assert held_bytes.endswith(original)          # our Received: line, then the bytes as received
        assert db(gw.spool_path, "SELECT count(*) FROM webmail_sessions")[0][0] == 0   # never logged in

        # alice, who has never logged in, asks for a code; it goes to her alternate address
        page = browser_page(browser, gw)
        rec = Recorder(page, gw.base)
        page.goto(gw.base + "/login")
        with page.expect_navigation():
            page.click("text=Get a one-time code")
        page.fill("#address", ALICE)
        with page.expect_navigation():
            page.click("button[type=submit]")
        wait_for(lambda: any(env["rcpt_tos"] == [ALT] for env, _ in internet.messages()), 30,
                 what="the login code at the alternate address' MX")
        [code_mail] = [data for env, data in internet.messages() if env["rcpt_tos"] == [ALT]]
        text = email.message_from_bytes(code_mail, policy=email.policy.default).get_content()
        code = "".join(re.search(r"^\s+(\d{4}) (\d{4})\s*$", text, re.M).groups())
        page.fill("#code", code)
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == gw.base + "/mail/inbox"
        assert "Contract for signature" in page.content()
        assert "Continuity event" in page.content()        # the banner

        # she reads it and replies from the webmail
        [(mid,)] = db(gw.spool_path, "SELECT id FROM mailbox_messages WHERE mailbox=? AND queue_id=?",
                      ALICE, queue_id)
        with page.expect_navigation():
            page.click("text=Contract for signature")
        assert page.url == f"{gw.base}/msg/{mid}"
        assert "Please sign by Friday." in page.frame_locator("iframe").locator("body").inner_text() \
            if page.locator("iframe").count() else "Please sign by Friday." in page.content()
        page.goto(f"{gw.base}/msg/{mid}/reply")
        assert page.input_value("#to").strip().endswith("partner@ext.test>") or \
            PARTNER in page.input_value("#to")
        page.fill("#body", "Signed and attached. Alice\n\n" + page.input_value("#body"))
        with page.expect_navigation():
            page.click("#send")
        wait_for(lambda: any(env["rcpt_tos"] == [PARTNER] for env, _ in internet.messages()), 30,
                 what="the reply at the correspondent's MX")
        [(env, reply)] = [(e, d) for e, d in internet.messages() if e["rcpt_tos"] == [PARTNER]]
        assert env["mail_from"] == ALICE
        assert verify_all(reply, dnsfunc_for(dns.port)) == [True, True]     # RSA and Ed25519
        parsed = email.message_from_bytes(reply, policy=email.policy.default)
        assert parsed["In-Reply-To"] == "<contract.1@ext.test>"
        assert parsed["From"].addresses[0].addr_spec == ALICE
        assert not rec.foreign and not rec.dialogs

        # what she does in the webmail never touches the queue: she deletes the original
        page.goto(f"{gw.base}/msg/{mid}")
        with page.expect_navigation():
            page.click("button[value=delete]")
        assert db(gw.spool_path, "SELECT deleted FROM mailbox_messages WHERE id=?", mid) == [(1,)]
        assert db(gw.spool_path, "SELECT state FROM messages WHERE queue_id=?", queue_id) == [("hold",)]
        page.context.close()

        # Exchange comes back on the same address: the gateway recovers and replays once
        back = peers.sink("127.0.0.1", exchange_port, "exchange-back")
        wait_for(lambda: any(env["rcpt_tos"] == [ALICE] for env, _ in back.messages()), 60,
                 what="the held message replayed to Exchange")
        wait_for(lambda: mode(gw.spool_path) == "normal", 60,
                 what="the end of the event")
        replayed = [data for env, data in back.messages() if env["rcpt_tos"] == [ALICE]]
        assert replayed == [held_bytes]                  # exactly once, byte for byte
        assert db(gw.spool_path, "SELECT state FROM messages WHERE queue_id=?", queue_id) == [("delivered",)]
        actions = [a for (a,) in db(gw.spool_path, "SELECT action FROM webmail_audit WHERE address=?"
                                    " ORDER BY id", ALICE)]
        assert "login_code_issued" in actions and "login" in actions and "send" in actions
    finally:
        dns.stop()
