"""Continuity events end to end: a real downstream sink that dies and comes back, the gateway as a
process with a fast engine setting, a real webhook receiver for alerts, the CLI for the admin.

Measured here (printed): detection time from downstream death to continuity."""
import glob
import json
import smtplib
import time
import uuid


from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

FAST = """
[continuity]
mode = "{mode}"
enter_after = 2.0
hold_down = 2.0
tick = 0.2
replay_rate = 200.0
alert_urls = ["json://127.0.0.1:{hook}/alert"]
[probes]
smtp_interval = 0.5
smtp_timeout = 1.0
canary_rcpt = "postmaster@example.com"
"""


def alerts(d):
    return [json.load(open(f)) for f in sorted(glob.glob(str(d / "*.json")))]


def start(peers, tmp_path, hook_port, mode="automatic"):
    sink = peers.sink(name="exchange")
    port = free_port()
    toml = config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}",
                       continuity=None, extra=FAST.format(mode=mode, hook=hook_port))
    return sink, peers.gateway(toml, port)


def send(port, n, tag):
    tokens = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        for _ in range(n):
            tok = f"{tag}-{uuid.uuid4().hex}"
            c.sendmail("alice@remote.test", ["bob@example.com"],
                       f"Subject: {tok}\r\nMessage-ID: <{tok}@remote.test>\r\n\r\nbody {tok}\r\n".encode())
            tokens.append(tok)
    return tokens


def mode(gw):
    return gw.cli("continuity", "status").stdout.split()[1]


def tokens_at(sink):
    out = []
    for _env, data in sink.messages():
        for line in data.split(b"\r\n"):
            if line.startswith(b"Subject: "):
                out.append(line[9:].decode())
    return out


def test_outage_holds_mail_then_replays_each_message_once(peers, tmp_path, webhook):
    hook_port, hook_dir = webhook
    sink, gw = start(peers, tmp_path, hook_port)
    before = send(gw.port, 5, "before")
    wait_for(lambda: sink.count() == 5, 15, what="normal delivery")
    wait_for(lambda: "ok" in gw.cli("probes").stdout, 10, what="a passing probe")

    sink.stop()
    died = time.monotonic()
    wait_for(lambda: mode(gw) == "continuity", 20, interval=0.1, what="continuity")
    detection = time.monotonic() - died
    print(f"detection time: {detection:.2f} s (enter_after 2 s, probe interval 0.5 s)")
    assert detection < 8

    during = send(gw.port, 20, "during")           # still accepted with 250
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") >= 20, 15, what="20 held")
    listing = gw.cli("queue", "list", "--all").stdout
    assert " bounced " not in listing and "<>" not in listing   # nothing bounced, no DSN

    gw.stop()                                       # restart during the event: still continuity
    gw.start()
    assert mode(gw) == "continuity"

    sink.start()                                    # Exchange is back
    wait_for(lambda: mode(gw) == "normal", 40, interval=0.2, what="replay finished")
    wait_for(lambda: sink.count() == 25, 10, what="replayed mail")
    got = tokens_at(sink)
    assert sorted(got) == sorted(before + during)   # every message, each exactly once
    assert len(set(got)) == len(got) == 25
    titles = [a.get("title", "") for a in alerts(hook_dir)]
    assert any("-> continuity" in t for t in titles), titles
    assert any("-> recovering" in t for t in titles), titles
    status = gw.cli("continuity", "status").stdout
    assert "continuity -> recovering" in status and "recovering -> normal" in status


def test_admin_start_and_stop(peers, tmp_path, webhook):
    hook_port, _ = webhook
    sink, gw = start(peers, tmp_path, hook_port)
    out = gw.cli("continuity", "start", "--reason", "certificate renewal")
    assert out.stdout.strip() == "ok: continuity"
    held = send(gw.port, 3, "held")
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") == 3, 10, what="held")
    time.sleep(3)                                   # healthy downstream does not end an admin event
    assert mode(gw) == "continuity" and sink.count() == 0
    assert gw.cli("continuity", "start", check=False).returncode == 1   # already running
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: sink.count() == 3, 15, what="replay")
    assert sorted(tokens_at(sink)) == sorted(held)
    wait_for(lambda: mode(gw) == "normal", 10, what="normal")


def test_alert_only_mode_waits_for_confirm(peers, tmp_path, webhook):
    hook_port, hook_dir = webhook
    sink, gw = start(peers, tmp_path, hook_port, mode="alert-only")
    wait_for(lambda: "ok" in gw.cli("probes").stdout, 10, what="a passing probe")
    sink.stop()
    wait_for(lambda: "awaiting confirmation" in gw.cli("continuity", "status").stdout, 20,
             what="confirmation request")
    time.sleep(2)
    assert mode(gw) == "degraded"                   # nothing changes without the admin
    assert any("confirm" in a.get("title", "") for a in alerts(hook_dir))
    assert gw.cli("continuity", "confirm").stdout.strip() == "ok: continuity"
    send(gw.port, 2, "x")
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") == 2, 10, what="held")


def test_recovery_shorter_than_hold_down_does_not_end_the_event(peers, tmp_path, webhook):
    """Exchange comes back for less than hold_down (6 s here), then dies again: the event goes on
    and nothing held is released; only a recovery that lasts hold_down ends it."""
    hook_port, _ = webhook
    sink = peers.sink(name="exchange")
    port = free_port()
    extra = FAST.format(mode="automatic", hook=hook_port).replace("hold_down = 2.0", "hold_down = 6.0")
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}",
                                   continuity=None, extra=extra), port)
    wait_for(lambda: "ok" in gw.cli("probes").stdout, 10, what="a passing probe")
    sink.stop()
    wait_for(lambda: mode(gw) == "continuity", 20, what="continuity")
    held = send(gw.port, 3, "held")
    for _ in range(2):                      # two short recoveries of 3 s each
        sink.start()
        time.sleep(3)
        sink.stop()
        assert mode(gw) == "continuity"
        time.sleep(1.5)
    assert "-> recovering" not in gw.cli("continuity", "status").stdout
    assert sink.count() == 0 and gw.cli("queue", "list").stdout.count(" hold ") == 3
    sink.start()                            # a real recovery
    wait_for(lambda: mode(gw) == "normal", 30, what="end of the event after hold_down")
    wait_for(lambda: sink.count() == 3, 10, what="replay")
    assert sorted(tokens_at(sink)) == sorted(held)


def test_a_short_outage_during_the_replay_does_not_restart_the_event(peers, tmp_path, webhook):
    """Hysteresis on the way back: Exchange gone for about a second (several failed probes, less
    than enter_after = 5 s) while a slow replay runs leaves the engine in recovering (before the
    fix one failed probe sent it straight back to continuity); the replay then finishes."""
    hook_port, _ = webhook
    sink = peers.sink(name="exchange")
    port = free_port()
    extra = (FAST.format(mode="automatic", hook=hook_port).replace("enter_after = 2.0", "enter_after = 5.0")
             .replace("replay_rate = 200.0", "replay_rate = 4.0"))
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}",
                                   continuity=None, extra=extra), port)
    assert gw.cli("continuity", "start").stdout.strip() == "ok: continuity"
    held = send(gw.port, 40, "slow")
    wait_for(lambda: gw.cli("queue", "list").stdout.count(" hold ") == 40, 15, what="40 held")
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: sink.count() >= 2, 10, what="the replay under way")
    sink.stop()
    wait_for(lambda: "FAIL" in gw.cli("probes").stdout, 5, interval=0.1, what="a failed probe")
    sink.start()
    assert mode(gw) == "recovering"
    wait_for(lambda: mode(gw) == "normal", 60, interval=0.3, what="the replay finished")
    wait_for(lambda: len(set(tokens_at(sink))) == 40, 15, what="every message")
    assert sorted(set(tokens_at(sink))) == sorted(held)
    status = gw.cli("continuity", "status").stdout
    assert "recovering -> continuity" not in status and "recovering -> normal" in status, status
