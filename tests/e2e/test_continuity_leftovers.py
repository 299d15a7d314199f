"""Replay is not stalled by deferred mail: real processes (the gateway, an aiosmtpd sink as Exchange
that answers 451 for one recipient, the CLI). Before the fix every unfinished message with
``held_seconds > 0`` counted as in flight: 25 replayed messages deferred by a 4xx (more than
replay_concurrency, 20) stopped all releases, and ``recovering`` never reached ``normal``; the
leftovers then blocked the next event's replay too. Now only this replay's unsettled releases count."""
import json
import re
import smtplib
import sqlite3

from tests.conftest import config_toml, fast_continuity
from tests.support.peers import free_port, wait_for

DEFERRING = "busy@example.com"          # the sink answers 451 4.3.0 at RCPT for it
CONF = fast_continuity("postmaster@example.com", enter_after=40.0, hold_down=300.0,
                       replay_rate=200.0, replay_concurrency=20)


def send(port, rcpt, n, tag):
    toks = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        for i in range(n):
            tok = f"{tag}-{i}"
            assert not c.sendmail("alice@remote.test", [rcpt], f"Subject: {tok}\r\n\r\nbody\r\n".encode())
            toks.append(tok)
    return toks


def mode(gw):
    return gw.cli("continuity", "status").stdout.split()[1]


def states(gw):
    out = {}
    for m in json.loads(gw.cli("queue", "list", "--all", "--json").stdout):
        out[m["state"]] = out.get(m["state"], 0) + 1
    return out


def tokens_at(sink):
    return [re.search(rb"^Subject: (\S+)", d, re.M).group(1).decode() for _e, d in sink.messages()]


def event(gw, sends, also_held=0):
    """One admin event: hold what ``sends()`` sends (and ``also_held`` deferred messages, which
    an event holds too), stop, wait for normal."""
    assert gw.cli("continuity", "start", "--reason", "drill").stdout.strip() == "ok: continuity"
    toks = sends()
    wait_for(lambda: states(gw).get("hold", 0) == len(toks) + also_held, 20, interval=0.2, what="all held")
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: mode(gw) == "normal", 30, interval=0.2, what="recovering -> normal")
    return toks


def test_deferred_replayed_mail_and_leftovers_do_not_stall_the_replay(peers, tmp_path):
    sink = peers.sink("127.0.0.1", None, "exchange", "--rcpt-reply", f"{DEFERRING}=451")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{sink.port}", minimal_backoff=600.0,
                                   maximal_backoff=1200.0, extra=CONF), port)
    first = event(gw, lambda: send(port, DEFERRING, 25, "busy") + send(port, "bob@example.com", 3, "one"))
    wait_for(lambda: sorted(tokens_at(sink)) == sorted(first[25:]), 10, what="event 1 at the sink")
    assert states(gw) == {"deferred": 25, "delivered": 3}      # deferred on their own backoff
    second = event(gw, lambda: send(port, "bob@example.com", 5, "two"), also_held=25)   # the leftovers
    wait_for(lambda: len(tokens_at(sink)) == 8, 10, what="event 2 at the sink")
    assert sorted(tokens_at(sink)) == sorted(first[25:] + second)          # each exactly once
    assert states(gw) == {"deferred": 25, "delivered": 8}
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)
    trail = [r for r in db.execute("SELECT src, dst, actor FROM continuity_audit ORDER BY id")]
    db.close()
    assert trail == [("normal", "continuity", trail[0][2]), ("continuity", "recovering", trail[0][2]),
                     ("recovering", "normal", "engine")] * 2, trail
