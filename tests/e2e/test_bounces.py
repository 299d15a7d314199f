"""Bounces end to end (RFC 3464): a recipient refused with 550 downstream gets one DSN to the
envelope sender, from the null sender, while the other recipient is delivered once; a bounce is
never bounced; mail still deferred when the queue lifetime ends bounces with 4.4.7.

The DSN must itself be routable: the sender is in the accepted domain (its DSN goes to the same
Exchange sink) or in a foreign domain whose MX (dnsmasq) is another sink.
"""
from __future__ import annotations

import email
import email.policy
import json
import smtplib
import sqlite3
import time

from tests.conftest import config_toml
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for

NULL_SENDER = "<>"          # how the sink (aiosmtpd) records MAIL FROM:<>
SUBJECT = "Quarterly numbers"


def with_keys(toml: str, table: str, **keys) -> str:
    """``toml`` with ``keys`` added to ``[table]`` (config_toml's extra cannot reopen a table)."""
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in keys.items())
    head = f"[{table}]\n"
    assert head in toml, table
    return toml.replace(head, head + lines, 1)


def send(port: int, sender: str, rcpts: list[str]) -> None:
    msg = (f"From: {sender or 'daemon@remote.test'}\r\nTo: {', '.join(rcpts)}\r\n"
           f"Subject: {SUBJECT}\r\nMessage-ID: <q3.{time.time()}@remote.test>\r\n\r\nnumbers\r\n")
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        refused = c.sendmail(sender, rcpts, msg.encode())
    assert refused == {}


def dsns(sink) -> list[tuple[dict, email.message.EmailMessage]]:
    return [(env, email.message_from_bytes(data, policy=email.policy.default))
            for env, data in sink.messages() if env["mail_from"] == NULL_SENDER]


def status_blocks(dsn: email.message.EmailMessage) -> list:
    """The message/delivery-status part's blocks: [per-message, per-recipient...]."""
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    parts = [p for p in dsn.iter_parts() if p.get_content_type() == "message/delivery-status"]
    assert len(parts) == 1
    return parts[0].get_payload()


def test_one_refused_recipient_gets_a_dsn_and_the_other_is_delivered_once(peers, tmp_path):
    sink = peers.sink("127.0.0.31", None, "exchange", "--rcpt-reply", "gone@example.com=550")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data",
                                   smarthost=f"[127.0.0.31]:{sink.port}"), port)
    send(port, "alice@example.com", ["gone@example.com", "bob@example.com"])
    wait_for(lambda: len(dsns(sink)) == 1, 20, what="the DSN at the sink")
    time.sleep(1.5)  # a second copy or a second DSN would arrive now
    originals = [env for env, _ in sink.messages() if env["mail_from"] == "alice@example.com"]
    assert [env["rcpt_tos"] for env in originals] == [["bob@example.com"]]
    [(env, dsn)] = dsns(sink)
    assert env["rcpt_tos"] == ["alice@example.com"]
    assert dsn["To"] == "alice@example.com"
    assert dsn["Auto-Submitted"] == "auto-replied"
    per_message, *per_rcpt = status_blocks(dsn)
    assert per_message["Reporting-MTA"] == "dns; gw.test"
    assert len(per_rcpt) == 1
    r = per_rcpt[0]
    assert (r["Final-Recipient"], r["Action"], r["Status"]) == ("rfc822; gone@example.com", "failed", "5.1.1")
    assert r["Diagnostic-Code"] == "smtp; 550 5.1.1 User unknown"
    assert r["Remote-MTA"].startswith("dns; ")
    headers = [p for p in dsn.iter_parts() if p.get_content_type() == "text/rfc822-headers"]
    assert f"Subject: {SUBJECT}" in headers[0].get_content()
    listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    states = sorted((m["mail_from"], sorted((r["address"], r["state"]) for r in m["recipients"]))
                    for m in listing)
    assert states == [("", [("alice@example.com", "delivered")]),
                      ("alice@example.com", [("bob@example.com", "delivered"),
                                             ("gone@example.com", "bounced")])]


def test_a_bounce_is_never_bounced(peers, tmp_path):
    sink = peers.sink("127.0.0.32", None, "exchange", "--rcpt-reply", "gone@example.com=550")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data",
                                   smarthost=f"[127.0.0.32]:{sink.port}"), port)
    send(port, "", ["gone@example.com"])

    def settled():
        listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
        return listing if listing and all(m["state"] == "bounced" for m in listing) else None

    listing = wait_for(settled, 20, interval=0.3, what="the null-sender message to bounce")
    time.sleep(2.0)  # a DSN, had one been made, would be queued and delivered by now
    listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    assert [(m["mail_from"], m["state"], [r["address"] for r in m["recipients"]]) for m in listing] \
        == [("", "bounced", ["gone@example.com"])]
    assert sink.count() == 0          # the spool holds no DSN (above) and the sink got none


def test_queue_lifetime_expiry_bounces_with_4_4_7(peers, tmp_path):
    exchange = peers.sink("127.0.0.33", None, "exchange", "--all-reply", "451")
    sender_mx = peers.sink("127.0.0.34", None, "sender-mx")
    dns = DnsServer(mx={"sender.test": [(10, "mx.sender.test")]},
                    a={"mx.sender.test": "127.0.0.34"}).start()
    try:
        port = free_port()
        toml = config_toml(port=port, data_dir=tmp_path / "data", dns_port=dns.port,
                           smarthost=f"[127.0.0.33]:{exchange.port}", mx_port=sender_mx.port)
        peers.gateway(with_keys(toml, "delivery", maximal_lifetime=3.0), port)
        send(port, "carol@sender.test", ["bob@example.com"])
        wait_for(lambda: len(dsns(sender_mx)) == 1, 30, what="the expiry DSN at the sender's MX")
    finally:
        dns.stop()
    assert exchange.count() == 0
    [(env, dsn)] = dsns(sender_mx)
    assert env["rcpt_tos"] == ["carol@sender.test"]
    _, r = status_blocks(dsn)
    assert (r["Final-Recipient"], r["Action"], r["Status"]) == ("rfc822; bob@example.com", "failed", "4.4.7")
    assert r["Diagnostic-Code"] == "smtp; 451 4.4.7 delivery time expired: 4.3.0 Try again later"
    # not before the lifetime, by the spool's own clock: the recipient was bounced (its row's
    # updated_at) at least 3 s after the message arrived, after more than one attempt
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)
    try:
        [(state, attempts, reply, queued_for)] = db.execute(
            "SELECT r.state, r.attempts, r.reply_text, r.updated_at - m.arrived_at FROM recipients r"
            " JOIN messages m USING (queue_id) WHERE m.mail_from = 'carol@sender.test'").fetchall()
    finally:
        db.close()
    assert (state, reply.startswith("4.4.7 delivery time expired")) == ("bounced", True), reply
    assert attempts >= 2 and queued_for >= 3.0, (attempts, queued_for)
    print(f"expiry bounce {queued_for:.1f}s after arrival, {attempts} attempts (lifetime 3 s, backoff 2-4 s)")


def test_a_four_digit_status_detail_bounces_with_the_class_default_and_nothing_is_sent_twice(
        peers, tmp_path):
    """The remote answers ``550 5.1.1000`` (RFC 3463 allows 1-3 digits): the DSN carries the class
    default 5.0.0, the other recipients are delivered once. Before the fix building the DSN
    raised, the attempt was discarded, and bob and carol got a copy at every retry."""
    sink = peers.sink("127.0.0.35", None, "exchange", "--rcpt-reply",
                      "odd@example.com=550 5.1.1000 No such user here")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data",
                                   smarthost=f"[127.0.0.35]:{sink.port}", minimal_backoff=0.5,
                                   maximal_backoff=1.0), port)
    send(port, "alice@example.com", ["bob@example.com", "odd@example.com", "carol@example.com"])

    def settled():
        listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
        original = [m for m in listing if m["mail_from"] == "alice@example.com"]
        return original if original and original[0]["state"] == "bounced" else None

    [original] = wait_for(settled, 20, interval=0.3, what="the original to reach bounced")
    assert sorted((r["address"], r["state"]) for r in original["recipients"]) == [
        ("bob@example.com", "delivered"), ("carol@example.com", "delivered"),
        ("odd@example.com", "bounced")]
    wait_for(lambda: len(dsns(sink)) == 1, 20, what="the DSN at the sink")
    originals = [env for env, _ in sink.messages() if env["mail_from"] == "alice@example.com"]
    assert [env["rcpt_tos"] for env in originals] == [["bob@example.com", "carol@example.com"]]
    [(_env, dsn)] = dsns(sink)
    _per_message, per_rcpt = status_blocks(dsn)
    assert (per_rcpt["Final-Recipient"], per_rcpt["Status"]) == ("rfc822; odd@example.com", "5.0.0")
    assert per_rcpt["Diagnostic-Code"] == "smtp; 550 5.1.1000 No such user here"
