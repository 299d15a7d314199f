"""The round-trip probe end to end: the gateway as a process submits its token mail to a real
"Exchange" process (tests/support/forwarder.py, also the smarthost) whose canary mailbox forwards
it back to the gateway's SMTP port. The probe passes with its latency measured; a forwarder that
drops it fails the probe at the deadline; probe messages and a forged one to the return address
are consumed: never in `mailgate queue list --all`, never at any sink but the forwarder.

Measured here (printed): round-trip latency through a gateway and forwarder process."""
import json
import re
import signal
import smtplib

from tests.conftest import config_toml
from tests.support.forwarder import ForwarderProc
from tests.support.peers import free_port, wait_for

CANARY = "canary@example.com"
RETURN = "mailgate-probe@example.net"       # an accepted domain routed to the "other" sink:
PROBE_CONSUMED = (250, b"2.0.0 Ok: probe consumed")  # were it not consumed, it would land there
QUEUED = re.compile(rb"^2\.0\.0 Ok: queued as ([0-9B-Z]{14}(?:[0-9B-Z]{2}){0,2})$")  # 16: a worker's, 18: on PostgreSQL
PROBES = """
[[routing.routes]]
domain = "example.net"
smarthost = "[127.0.0.31]:{other}"
[continuity]
mode = "alert-only"
tick = 0.2
[probes]
smtp_interval = 1.0
smtp_timeout = 1.0
canary_rcpt = "{canary}"
roundtrip = true
roundtrip_to = "{canary}"
roundtrip_return = "{ret}"
roundtrip_interval = 1.0
roundtrip_deadline = {deadline}
"""


def start(peers, tmp_path, *forwarder_args, deadline=3.0, directory=None, workers=None):
    """(gateway, forwarder, other sink): the forwarder is the default smarthost and the
    submission target; the other sink is where example.net mail goes. ``workers``:
    server.workers (None: the default)."""
    port = free_port()
    other = peers.sink("127.0.0.31", None, "other")
    fwd = ForwarderProc("127.0.0.21", free_port(), tmp_path / "fwd", "exchange", canary=CANARY,
                        relay=f"127.0.0.1:{port}", return_to=RETURN, extra=forwarder_args)
    peers.procs.append(fwd)
    fwd.start()
    toml = config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.21]:{fwd.port}",
                       accepted=("example.com", "example.net"), continuity=None, directory=directory,
                       workers=workers, extra=PROBES.format(other=other.port, canary=CANARY, ret=RETURN,
                                           deadline=deadline))
    return peers.gateway(toml, port), fwd, other


def roundtrip_results(gw) -> list[tuple[str, float, str]]:
    """(ok|FAIL, latency ms, rest of line) of every kept result of the roundtrip probe."""
    out = []
    for line in gw.cli("probes", "--history").stdout.splitlines():
        m = re.search(r"\s(ok  |FAIL)\s+([\d.]+) ms\s+roundtrip\s+(.*)$", line)
        if m:
            out.append((m.group(1).strip(), float(m.group(2)), m.group(3)))
    return out


def queue_all(gw) -> list[dict]:
    return json.loads(gw.cli("queue", "list", "--all", "--json").stdout)


def probe_messages(fwd) -> list[bytes]:
    return [data for env, data in fwd.messages() if env["rcpt_tos"] == [CANARY]]


def test_probe_passes_latency_measured_and_nothing_queued_or_delivered(peers, tmp_path):
    gw, fwd, other = start(peers, tmp_path)
    ok = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(
        [r for r in roundtrip_results(gw) if r[0] == "ok"]), 20, what="two successful round trips")
    print(f"\nround trip gateway -> forwarder -> gateway: {[r[1] for r in ok]} ms")
    for _status, latency, detail in ok:
        assert latency > 0
        assert detail.startswith("returned after "), detail
        assert f"submitted via [127.0.0.21]:{fwd.port}: 250 2.0.0 Ok: stored as exchange-" in detail
        assert "(critical)" not in detail              # informative by default
    wait_for(lambda: len(fwd.forwarded()) >= 2, 10, what="the forwarder's log")
    assert all(line == f"{RETURN} 250 2.0.0 Ok: probe consumed" for line in fwd.forwarded())

    # an ordinary message still flows (to the same Exchange), and is the only thing ever queued
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=30) as c:
        c.sendmail("alice@remote.test", ["bob@example.com"], b"Subject: real\r\n\r\nreal mail\r\n")
    wait_for(lambda: any(env["rcpt_tos"] == ["bob@example.com"] for env, _ in fwd.messages()), 15,
             what="the ordinary message at Exchange")
    listing = queue_all(gw)
    assert [m["state"] for m in listing] == ["delivered"], listing
    assert "mailgate-probe" not in gw.cli("queue", "list", "--all").stdout
    assert other.count() == 0                          # the return address is never delivered
    tokens = {d.split(b"X-Mailgate-Probe: ")[1][:32] for d in probe_messages(fwd)}
    assert len(tokens) == len(probe_messages(fwd)) >= 2    # a fresh token for every check
    assert all(b"X-Mailgate-Probe" not in data for env, data in fwd.messages()
               if env["rcpt_tos"] != [CANARY])


def test_dropped_probe_fails_after_the_deadline(peers, tmp_path):
    gw, fwd, other = start(peers, tmp_path, "--drop", deadline=2.0)
    (fail, latency, detail), = wait_for(
        lambda: [r for r in roundtrip_results(gw) if r[0] == "FAIL"][:1], 20, what="a failed round trip")
    assert detail.startswith(f"no return (submitted via [127.0.0.21]:{fwd.port}: 250 2.0.0 Ok: "
                             "stored as exchange-"), detail
    assert detail.endswith("): timeout after 1.8s"), detail
    assert not [r for r in roundtrip_results(gw) if r[0] == "ok"]
    assert fwd.forwarded() == [] and probe_messages(fwd)
    status = gw.cli("continuity", "status").stdout
    assert status.split()[1] == "normal", status       # not critical: inbound stays normal
    assert queue_all(gw) == [] and other.count() == 0


def test_forged_message_to_the_return_address_is_consumed_not_delivered(peers, tmp_path):
    gw, fwd, other = start(peers, tmp_path, "--drop", deadline=30.0)
    forged = (b"From: eve@attacker.test\r\nSubject: mailgate round-trip probe " + b"0" * 32 +
              b"\r\nX-Mailgate-Probe: " + b"f" * 32 + b"\r\n\r\nplease deliver me\r\n")
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=30) as c:
        c.ehlo("attacker.test")
        assert c.mail("eve@attacker.test")[0] == 250
        assert c.rcpt(RETURN)[0] == 250
        assert c.data(forged) == PROBE_CONSUMED
        # mixing the return address with a real recipient is refused for this transaction
        assert c.mail("eve@attacker.test")[0] == 250
        assert c.rcpt("bob@example.com")[0] == 250
        assert c.rcpt(RETURN) == (452, b"4.5.3 Too many recipients")
        code, text = c.data(b"Subject: to bob only\r\n\r\nhello\r\n")
        assert code == 250 and QUEUED.match(text), text
    wait_for(lambda: any(env["rcpt_tos"] == ["bob@example.com"] for env, _ in fwd.messages()), 15,
             what="bob's message at Exchange")
    listing = queue_all(gw)
    assert len(listing) == 1 and listing[0]["state"] == "delivered", listing
    assert other.count() == 0
    assert all(b"please deliver me" not in data for _env, data in fwd.messages())
    # log lines may follow the effect by a loop turn (lines of one turn are written together)
    wait_for(lambda: "outcome='unknown'" in gw.log_text(), 5, what="the probe's log line")
    assert "f" * 32 in gw.log_text()                   # the forged token is logged for the admin


def test_a_users_mail_quoting_an_awaited_token_is_delivered_not_consumed(peers, tmp_path):
    """Only the probe's own envelope (MAIL FROM and RCPT TO the return address) passes a check:
    mail to a user that carries an awaited token (a reply to the probe, a forward) is theirs."""
    gw, fwd, other = start(peers, tmp_path, "--drop", deadline=30.0)
    probe, = wait_for(lambda: probe_messages(fwd)[:1], 20, what="a probe at Exchange")
    token = probe.split(b"X-Mailgate-Probe: ")[1][:32]       # awaited for 30 s: dropped
    quoting = (b"From: alice@remote.test\r\nSubject: RE: mailgate round-trip probe " + token +
               b"\r\nX-Mailgate-Probe: " + token + b"\r\n\r\nwhat is this mail?\r\n")
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=30) as c:
        assert c.sendmail("alice@remote.test", ["bob@example.com"], quoting) == {}
    wait_for(lambda: any(env["rcpt_tos"] == ["bob@example.com"] for env, _ in fwd.messages()), 15,
             what="the quoting message at Exchange for bob")
    assert [m["state"] for m in queue_all(gw)] == ["delivered"]
    assert not [r for r in roundtrip_results(gw) if r[0] == "ok"]   # it did not pass the check


def test_return_address_added_to_the_directory_disables_the_probe_mailbox(peers, tmp_path):
    """A directory reload that lists the return address gives it back to that recipient: mail to
    it is queued and delivered, the probe fails "disabled" at once (never critical)."""
    directory = tmp_path / "directory.json"
    directory.write_text(json.dumps({"mailboxes": ["bob@example.com"]}))
    gw, fwd, other = start(peers, tmp_path, directory=directory)
    wait_for(lambda: [r for r in roundtrip_results(gw) if r[0] == "ok"], 20, what="a round trip")
    directory.write_text(json.dumps({"mailboxes": ["bob@example.com", RETURN]}))
    gw.p.send_signal(signal.SIGHUP)                          # reload now
    wait_for(lambda: [r for r in roundtrip_results(gw) if r[2].startswith("disabled: ")], 20,
             what="a disabled probe")
    with smtplib.SMTP("127.0.0.1", gw.port, timeout=30) as c:
        c.ehlo("remote.test")
        assert c.mail("alice@remote.test")[0] == 250
        assert c.rcpt(RETURN)[0] == 250
        assert c.rcpt("bob@example.com")[0] == 250    # an ordinary recipient now: no "travels alone"
        code, text = c.data(b"Subject: for the user now\r\n\r\nhello\r\n")
        assert code == 250 and QUEUED.match(text), text
    wait_for(lambda: other.count() == 1, 15, what="the message at the return address's host")
    (env, _data), = other.messages()
    assert env["rcpt_tos"] == [RETURN]
    wait_for(lambda: any(e["rcpt_tos"] == ["bob@example.com"] for e, _ in fwd.messages()), 15,
             what="bob's copy at Exchange")
    assert gw.cli("continuity", "status").stdout.split()[1] == "normal"
