"""Replay after a continuity event, asserted on state: every held message reaches the sink exactly
once, in arrival order as far as the throttle allows (a message is released only while fewer than
``replay_concurrency`` of this replay's releases are unsettled, so at the sink it is preceded by all
but at most replay_concurrency - 1 of the messages held before it), and the gateway's own release
stamps (``messages.released_at``) never exceed the token bucket (``replay_rate`` per second plus
one tick's worth saved up). The speed figures (msg/s) are printed and kept in bench/CONTINUITY.md.
Real processes: the gateway, an aiosmtpd sink, the CLI; an admin event holds the mail."""
import re
import smtplib
import sqlite3
import time
import uuid

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

N = 300
TICK = 1.0
CONF = """
[continuity]
mode = "automatic"
tick = {tick}
replay_rate = {rate}
replay_concurrency = {concurrency}
[probes]
smtp_interval = 1.0
canary_rcpt = "postmaster@example.com"
"""


def held(gw):
    return int(re.search(r"held:\s+(\d+)", gw.cli("continuity", "status").stdout).group(1))


def replay(peers, tmp_path, rate, concurrency):
    """Hold N messages in an admin event, stop it, wait for normal; return (tokens in the order
    sent, tokens in the order the sink stored them, release stamps, seconds to the last one)."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{sink.port}",
                                   extra=CONF.format(tick=TICK, rate=rate, concurrency=concurrency)), port)
    assert gw.cli("continuity", "start").stdout.strip() == "ok: continuity"
    sent = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        for _ in range(N):                          # one session: arrival order is sending order
            tok = uuid.uuid4().hex
            assert not c.sendmail("alice@remote.test", ["bob@example.com"],
                                  f"Subject: {tok}\r\n\r\nbody\r\n".encode())
            sent.append(tok)
    wait_for(lambda: held(gw) == N, 30, interval=0.3, what=f"{N} held")
    stop = time.time()
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: gw.cli("continuity", "status").stdout.split()[1] == "normal", 120, interval=0.3,
             what="replay finished")
    files = sorted(sink.dir.glob("*.json"))
    got = [re.search(rb"^Subject: (\S+)", f.with_suffix(".eml").read_bytes(), re.M).group(1).decode()
           for f in files]
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)
    stamps = sorted(r[0] for r in db.execute("SELECT released_at FROM messages WHERE released_at IS NOT NULL"))
    db.close()
    return sent, got, stamps, max(f.stat().st_mtime for f in files) - stop


def check(sent, got, stamps, rate, concurrency):
    assert sorted(got) == sorted(sent) and len(got) == len(set(got)) == N   # each once, none missing
    position = {tok: i for i, tok in enumerate(got)}
    late = [(k, position[tok]) for k, tok in enumerate(sent) if position[tok] < k - (concurrency - 1)]
    assert not late, late[:5]                       # never more than replay_concurrency in flight
    assert len(stamps) == N
    burst = max(rate * TICK, 1.0)                   # the bucket: one tick's worth saved up
    for i, t in enumerate(stamps):                  # releases in any 1 s: at most rate + burst
        j = i
        while j < len(stamps) and stamps[j] < t + 1.0:
            j += 1
        assert j - i <= rate * 1.0 + burst, (t, j - i)


def test_replay_at_a_high_rate_is_exactly_once_in_order_within_the_concurrency(peers, tmp_path):
    sent, got, stamps, secs = replay(peers, tmp_path, rate=1000, concurrency=20)
    print(f"replay of {N}: {secs:.2f} s = {N / secs:.0f} msg/s (replay_rate 1000, concurrency 20, tick 1 s)")
    check(sent, got, stamps, rate=1000, concurrency=20)


def test_replay_rate_and_concurrency_are_respected(peers, tmp_path):
    sent, got, stamps, secs = replay(peers, tmp_path, rate=50, concurrency=5)
    print(f"replay of {N}: {secs:.2f} s = {N / secs:.0f} msg/s (replay_rate 50, concurrency 5)")
    check(sent, got, stamps, rate=50, concurrency=5)
