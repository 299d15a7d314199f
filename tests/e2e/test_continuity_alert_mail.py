"""Alert mail to an alternate address goes out through our own outbound path (the MX of the
alternate domain), never through the downstream Exchange it is warning about.

Real processes: the gateway, dnsmasq serving the MX of alt.test, an aiosmtpd sink as that MX
(127.0.0.31), another sink as Exchange (127.0.0.32), a webhook receiver, the CLI. Exchange dies;
the alert mail for the continuity event must arrive at alt.test while Exchange is still dead, and
Exchange must never see an alert, not even after the replay. The webhook and the mail carry the
same transitions with the same text.

Measured here (printed): time from Exchange's death to the continuity alert mail at alt.test."""
import glob
import json
import re
import smtplib
import time

import pytest

from tests.conftest import config_toml
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for

ALERT_FROM = "mailgate@gw.test"
ONCALL = "oncall@alt.test"
ALT_MX, EXCHANGE = "127.0.0.31", "127.0.0.32"
CONF = """
[continuity]
mode = "automatic"
enter_after = 2.0
hold_down = 2.0
tick = 0.2
replay_rate = 200.0
alert_urls = ["json://127.0.0.1:{hook}/alert"]
alert_mail_to = ["{oncall}"]
[probes]
smtp_interval = 0.5
smtp_timeout = 1.0
canary_rcpt = "postmaster@example.com"
"""


@pytest.fixture
def dns():
    with DnsServer(mx={"alt.test": [(10, "mx.alt.test")]}, a={"mx.alt.test": ALT_MX}) as server:
        yield server


def hooks(d):
    return [json.load(open(f)) for f in sorted(glob.glob(str(d / "*.json")))]


def mails(sink):
    """[(envelope, subject, body)] of every message at ``sink``."""
    out = []
    for env, data in sink.messages():
        head, _, body = data.partition(b"\r\n\r\n")
        m = re.search(rb"^Subject: (.*)$", head, re.M)
        out.append((env, m.group(1).decode().strip() if m else "", body.decode("utf-8", "replace")))
    return out


def alert_subjects(sink):
    return [s for env, s, _ in mails(sink) if env["mail_from"] == ALERT_FROM]


def mode(gw):
    return gw.cli("continuity", "status").stdout.split()[1]


def send(port, tag):
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        refused = c.sendmail("alice@remote.test", ["bob@example.com"],
                             f"Subject: {tag}\r\n\r\nbody {tag}\r\n".encode())
    assert not refused, refused


def test_alert_mail_bypasses_the_dead_downstream(peers, tmp_path, webhook, dns):
    hook_port, hook_dir = webhook
    alt = peers.sink(ALT_MX, free_port(), "alt-mx")
    exchange = peers.sink(EXCHANGE, None, "exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[{EXCHANGE}]:{exchange.port}", dns_port=dns.port,
                                   mx_port=alt.port,
                                   extra=CONF.format(hook=hook_port, oncall=ONCALL)), port)
    send(port, "before")
    wait_for(lambda: exchange.count() == 1, 15, what="normal delivery to Exchange")
    wait_for(lambda: "ok" in gw.cli("probes").stdout, 10, what="a passing probe")
    assert alt.count() == 0 and hooks(hook_dir) == []

    exchange.stop()
    died = time.monotonic()
    wait_for(lambda: any("-> continuity" in s for s in alert_subjects(alt)), 30, interval=0.1,
             what="the continuity alert mail at alt.test")
    print(f"continuity alert mail at alt.test {time.monotonic() - died:.2f} s after Exchange died")
    assert not exchange.running                       # it went out while Exchange was dead
    assert mode(gw) == "continuity"
    env, subject, body = next(m for m in mails(alt) if "-> continuity" in m[1])
    assert env["mail_from"] == ALERT_FROM and env["rcpt_tos"] == [ONCALL], env
    assert env["peer"][0] == "127.0.0.1", env         # the gateway itself delivered it
    assert "[mailgate]" in subject and "continuity" in subject, subject
    assert subject == "[mailgate] degraded -> continuity", subject
    assert "event: CE-" in body and "by: engine" in body, body

    send(port, "during")                              # held for Exchange meanwhile
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") == 1, 10, what="user mail held")
    listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    alert_states = {m["state"] for m in listing if m["mail_from"] == ALERT_FROM}
    assert alert_states == {"delivered"}, listing     # alerts are never held for Exchange

    exchange.start()                                  # Exchange back: the event ends, mail replays
    wait_for(lambda: mode(gw) == "normal", 40, interval=0.2, what="replay finished")
    wait_for(lambda: any("-> normal" in s for s in alert_subjects(alt)), 15, what="recovery alert mail")
    wait_for(lambda: exchange.count() == 2, 10, what="replayed user mail")
    time.sleep(1.0)                                   # anything else for Exchange would arrive now
    at_exchange = mails(exchange)
    assert sorted(s for _, s, _ in at_exchange) == ["before", "during"], at_exchange
    assert all(env["mail_from"] != ALERT_FROM and ONCALL not in env["rcpt_tos"]
               for env, _, _ in at_exchange)
    assert all(env["mail_from"] == ALERT_FROM for env, _, _ in mails(alt))   # nothing else went there

    # the webhook and the mail tell the same transitions, with the same text
    by_title = {h["title"]: h for h in hooks(hook_dir)}
    subjects = [s.removeprefix("[mailgate] ") for s in alert_subjects(alt)]
    assert subjects == ["normal -> degraded", "degraded -> continuity", "continuity -> recovering",
                        "recovering -> normal"], subjects
    assert sorted(subjects) == sorted(by_title), (subjects, list(by_title))
    assert body.replace("\r\n", "\n").strip() == by_title["degraded -> continuity"]["message"].strip()
