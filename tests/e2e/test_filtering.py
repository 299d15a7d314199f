"""Recipient filtering and relay control, end to end: a real SMTP client (smtplib, raw commands
where smtplib would rewrite the path) talks to the gateway process, which has a JSON directory
(tests/e2e/data/directory.json) and the accepted domain example.com.

Untrusted clients reach listed recipients only; no address form relays to a foreign domain, and
nothing refused ever reaches a sink. A trusted client (127.0.0.5/32) relays to the internet by
MX lookup (dnsmasq serves the MX, the "internet" is a sink). The directory reloads without a
restart (mtime and SIGHUP) and a broken file keeps the old directory.
"""
from __future__ import annotations

import json
import shutil
import signal
import smtplib
import time
from pathlib import Path

import pytest

from tests.conftest import Peers, config_toml
from tests.support.dnsserver import DnsServer
from tests.support.peers import free_port, wait_for

DIRECTORY = Path(__file__).parent / "data" / "directory.json"
RCPT_OK = (250, b"2.1.5 Recipient OK")
USER_UNKNOWN = (550, b"5.1.1 Recipient address rejected: User unknown")
RELAY_DENIED = (550, b"5.7.1 Relay access denied")
ROUTING_DENIED = (550, b"5.7.1 Relay access denied: sender-specified routing")
MALFORMED = (553, b"5.1.3 Error: malformed address")   # aiosmtpd's own path parser
TRUSTED_IP = "127.0.0.5"
SMARTHOST_IP, INTERNET_IP = "127.0.0.12", "127.0.0.22"


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """Gateway + Exchange sink (smarthost) + internet sink (MX of foreign.test/.org) + DNS."""
    peers = Peers(tmp_path_factory.mktemp("filtering"))
    exchange = peers.sink(SMARTHOST_IP, None, "exchange")
    internet = peers.sink(INTERNET_IP, None, "internet")
    mx = {d: [(10, "mx.foreign.test")] for d in ("foreign.test", "foreign.org")}
    dns = DnsServer(mx=mx, a={"mx.foreign.test": INTERNET_IP}).start()
    directory = peers.base / "directory.json"
    shutil.copy(DIRECTORY, directory)
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=peers.base / "data", directory=directory,
                                   smarthost=f"[{SMARTHOST_IP}]:{exchange.port}",
                                   trusted=[f"{TRUSTED_IP}/32"], dns_port=dns.port,
                                   mx_port=internet.port), port)
    yield gw, exchange, internet
    peers.close()
    dns.stop()


def rcpt(port: int, path: str, source: str = "127.0.0.1") -> tuple[int, bytes]:
    """The reply to ``RCPT TO:<path>`` sent as given (smtplib's rcpt() would re-quote it)."""
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail("sender@remote.test")[0] == 250
        return c.docmd("RCPT", f"TO:<{path}>")


@pytest.mark.parametrize("address", [
    "alice@example.com", "ALICE@Example.COM", "bob@example.com", "robert@example.com",
    "team@example.com", "vendor@example.com", "postmaster@example.com", "Postmaster",
])
def test_listed_recipient_is_accepted(site, address):
    assert rcpt(site[0].port, address) == RCPT_OK


@pytest.mark.parametrize("address, reply", [
    ("nobody@example.com", USER_UNKNOWN),
    ("alice@example.net", RELAY_DENIED),
    ("alice@sub.example.com", RELAY_DENIED),
])
def test_unknown_recipient_is_refused_at_rcpt(site, address, reply):
    assert rcpt(site[0].port, address) == reply


NO_RELAY = [
    ("user%foreign.org@example.com", ROUTING_DENIED),       # percent hack
    ("@example.com:user@foreign.org", RELAY_DENIED),         # source route: route ignored
    ('"user@foreign.org"@example.com', ROUTING_DENIED),     # quoted local part
    ("foreign.org!user@example.com", ROUTING_DENIED),       # bang path
    ("user@foreign.org.", MALFORMED),                        # trailing dot
    ("USER@Foreign.ORG", RELAY_DENIED),                      # mixed case
    ("user@[127.0.0.1]", RELAY_DENIED),                      # address literal
    ("user@example.com@foreign.org", MALFORMED),             # two @
    ("user@foreign.test", RELAY_DENIED),
    ("user@foreign.test@example.com", MALFORMED),            # two @, the last one ours
    ("@foreign.org:alice@example.com", RCPT_OK),             # route ignored: a local user (ok)
]


@pytest.mark.parametrize("address, reply", NO_RELAY, ids=[a for a, _ in NO_RELAY])
def test_no_address_form_relays_for_an_untrusted_client(site, address, reply):
    gw, exchange, internet = site
    sender = f"probe-{NO_RELAY.index((address, reply))}@remote.test"
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.mail(sender)[0] == 250
        assert c.docmd("RCPT", f"TO:<{address}>") == reply
        assert c.docmd("RCPT", "TO:<alice@example.com>") == RCPT_OK
        code, _ = c.data(b"Subject: relay probe\r\n\r\nprobe\r\n")
        assert code == 250
    env = wait_for(lambda: next((e for e, _ in exchange.messages() if e["mail_from"] == sender), None),
                   15, what="the probe at the Exchange sink")
    assert env["rcpt_tos"] == ["alice@example.com"]
    assert internet.count() == 0


def test_refused_transaction_queues_nothing(site):
    gw, exchange, internet = site
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
        c.ehlo("client.test")
        c.mail("nothing@remote.test")
        for address, reply in [case for case in NO_RELAY if case[1] != RCPT_OK]:
            assert c.docmd("RCPT", f"TO:<{address}>") == reply
        assert c.docmd("DATA")[0] == 503
    queued = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    assert [m for m in queued if m["mail_from"] == "nothing@remote.test"] == []
    bad = {a.lower() for a, reply in NO_RELAY if reply != RCPT_OK}
    assert not [r for m in queued for r in m["recipients"] if r["address"].lower() in bad]
    assert internet.count() == 0


def test_trusted_client_relays_by_mx_of_the_recipient_domain(site):
    gw, exchange, internet = site
    assert rcpt(gw.port, "carol@foreign.test", source="127.0.0.1") == RELAY_DENIED
    with smtplib.SMTP("127.0.0.1", gw.port, source_address=(TRUSTED_IP, 0), timeout=10) as c:
        c.ehlo("app.internal.test")
        c.mail("app@example.com")
        assert c.docmd("RCPT", "TO:<carol@foreign.test>") == RCPT_OK
        assert c.data(b"Subject: outbound\r\n\r\nhello carol\r\n")[0] == 250
    wait_for(lambda: internet.count() == 1, 15, what="delivery to the MX of foreign.test")
    env, data = internet.messages()[0]
    assert (env["mail_from"], env["rcpt_tos"]) == ("app@example.com", ["carol@foreign.test"])
    assert data.endswith(b"Subject: outbound\r\n\r\nhello carol\r\n")
    assert f"({'[' + TRUSTED_IP + ']'})".encode() in data.split(b"\r\n", 1)[0]


# -- directory reload -------------------------------------------------------------------------

def write_directory(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.rename(path)


def with_new_user(address: str) -> str:
    d = json.loads(DIRECTORY.read_text())
    d["mailboxes"].append(address)
    return json.dumps(d)


def test_directory_reloads_without_restart_and_a_broken_file_keeps_the_old(peers, tmp_path):
    sink = peers.sink("127.0.0.13", None, "exchange")
    directory = tmp_path / "directory.json"
    shutil.copy(DIRECTORY, directory)
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", directory=directory,
                                   smarthost=f"[127.0.0.13]:{sink.port}"), port)
    n = gw.wait_workers_ready()      # a worker still starting would read the file written next
    assert rcpt(port, "newbie@example.com") == USER_UNKNOWN
    write_directory(directory, with_new_user("newbie@example.com"))
    started = time.monotonic()
    wait_for(lambda: rcpt(port, "newbie@example.com") == RCPT_OK, 10, interval=0.25,
             what="the new user to be accepted")
    print(f"reload took {time.monotonic() - started:.2f}s (reload_interval 0.5 s, settle 1 s)")
    # each process watches the file (every intake worker, and the supervisor for continuity):
    # all of them have the new one before it breaks
    watchers = n + 1 if n > 1 else 1
    wait_for(lambda: gw.log_text().count("event='directory_reloaded'") >= watchers, 10,
             what=f"the reload in each of the {watchers} processes")
    write_directory(directory, '{"mailboxes": ["oops@example.com", ')      # truncated export
    wait_for(lambda: gw.log_text().count("event='directory_reload_failed'") >= watchers, 10,
             what="the failed reload in every process")
    assert rcpt(port, "newbie@example.com") == RCPT_OK
    assert rcpt(port, "alice@example.com") == RCPT_OK
    assert rcpt(port, "oops@example.com") == USER_UNKNOWN
    assert gw.running


def test_sighup_reloads_the_directory(peers, tmp_path):
    sink = peers.sink("127.0.0.14", None, "exchange")
    directory = tmp_path / "directory.json"
    shutil.copy(DIRECTORY, directory)
    port = free_port()
    extra = f'[directory]\nfile = "{directory}"\nreload_interval = 3600.0\n'
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data",
                                   smarthost=f"[127.0.0.14]:{sink.port}", extra=extra), port)
    gw.wait_workers_ready()      # a worker still starting would read the file written next
    write_directory(directory, with_new_user("hup@example.com"))
    time.sleep(1.5)
    assert rcpt(port, "hup@example.com") == USER_UNKNOWN   # no polling within the hour
    gw.p.send_signal(signal.SIGHUP)
    wait_for(lambda: rcpt(port, "hup@example.com") == RCPT_OK, 5, interval=0.2,
             what="the SIGHUP reload")
    # the log line may follow the effect by a loop turn (lines of one turn are written together)
    wait_for(lambda: "directory_reloaded" in gw.log_text(), 5, what="the reload's log line")
