"""Replay pace after a continuity event: held mail is released at ``replay_rate`` (never faster),
and the decision tick does not cap it at replay_concurrency / tick messages per second (the bug
bench/continuity.py found: 20 msg/s whatever replay_rate, so 10,000 held messages took 8 min).
Real processes: the gateway, an aiosmtpd sink, the CLI; an admin event holds the mail."""
import re
import smtplib
import time
import uuid

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

N = 300
REPLY_OK = 250
CONF = """
[continuity]
mode = "automatic"
tick = 1.0
replay_rate = {rate}
replay_concurrency = 20
[probes]
smtp_interval = 1.0
canary_rcpt = "postmaster@example.com"
"""


def held(gw):
    return int(re.search(r"held:\s+(\d+)", gw.cli("continuity", "status").stdout).group(1))


def replay_seconds(peers, tmp_path, rate):
    """Hold N messages in an admin event, stop it, return (seconds to the last one, subjects)."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{sink.port}", extra=CONF.format(rate=rate)), port)
    assert gw.cli("continuity", "start").stdout.strip() == "ok: continuity"
    sent = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        for _ in range(N):
            tok = uuid.uuid4().hex
            code, _ = c.sendmail("alice@remote.test", ["bob@example.com"],
                                 f"Subject: {tok}\r\n\r\nbody\r\n".encode()) or (REPLY_OK, b"")
            sent.append(tok)
    wait_for(lambda: held(gw) == N, 30, interval=0.3, what=f"{N} held")
    stop = time.time()
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: sink.count() >= N, 60, interval=0.2, what="replay")
    time.sleep(0.5)
    files = sorted(sink.dir.glob("*.json"))
    last = max(f.stat().st_mtime for f in files)
    got = [re.search(rb"^Subject: (\S+)", f.with_suffix(".eml").read_bytes(), re.M).group(1).decode()
           for f in files]
    assert sorted(got) == sorted(sent)              # each message once, none missing
    return last - stop


def test_replay_is_not_capped_by_the_tick(peers, tmp_path):
    secs = replay_seconds(peers, tmp_path, rate=1000)
    print(f"replay of {N}: {secs:.2f} s = {N / secs:.0f} msg/s (replay_rate 1000, concurrency 20, tick 1 s)")
    assert N / secs > 60                            # was 20 msg/s: replay_concurrency / tick


def test_replay_rate_is_respected(peers, tmp_path):
    secs = replay_seconds(peers, tmp_path, rate=50)
    print(f"replay of {N}: {secs:.2f} s = {N / secs:.0f} msg/s (replay_rate 50)")
    assert N / secs <= 50 * 1.2
