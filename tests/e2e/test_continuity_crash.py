"""A gateway that dies during a continuity replay resumes it from its persisted state.

Real processes: the gateway, an aiosmtpd sink as Exchange, the CLI. An admin event holds N
messages with unique tokens, `continuity stop` starts a throttled replay, and the gateway is
stopped when about half has reached the sink: by SIGKILL (the only duplicates allowed are the
messages that were ``active`` at the kill: the sink's 250 came before our commit, RFC 5321 §6.1),
or by SIGTERM (deliveries in flight finish and are committed: no duplicate at all). After the
restart the engine is still ``recovering``, finishes the replay and goes back to ``normal``.

Measured here (printed): messages released and delivered before the stop, active at the kill,
duplicates, and the replay's total time."""
import json
import re
import smtplib
import threading
import time
import uuid
from collections import Counter

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

REPLY_OK = 250
SESSIONS = 8                  # concurrent SMTP clients injecting the mail
CONF = """
[continuity]
mode = "automatic"
enter_after = 2.0
hold_down = 2.0
tick = 0.2
replay_rate = {rate}
replay_concurrency = 20
[probes]
smtp_interval = 0.5
smtp_timeout = 1.0
canary_rcpt = "postmaster@example.com"
"""


def inject(port, n):
    """n messages with unique Subject tokens over SESSIONS concurrent SMTP sessions."""
    tokens, errors = [], []
    lock = threading.Lock()

    def session(count):
        try:
            with smtplib.SMTP("127.0.0.1", port, timeout=60) as c:
                for _ in range(count):
                    tok = f"crash-{uuid.uuid4().hex}"
                    refused = c.sendmail("alice@remote.test", ["bob@example.com"],
                                         f"Subject: {tok}\r\nMessage-ID: <{tok}@remote.test>\r\n"
                                         f"\r\nbody {tok}\r\n".encode())
                    assert not refused, refused
                    with lock:
                        tokens.append(tok)
        except Exception as e:      # reported by the caller's assert
            errors.append(repr(e))

    threads = [threading.Thread(target=session, args=(n // SESSIONS + (i < n % SESSIONS),))
               for i in range(SESSIONS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors[:3]
    assert len(tokens) == n
    return tokens


def tokens_at(sink):
    out = []
    for _env, data in sink.messages():
        m = re.search(rb"^Subject: (\S+)", data, re.M)
        out.append(m.group(1).decode() if m else "")
    return out


def status(gw):
    return gw.cli("continuity", "status").stdout


def mode(gw):
    return status(gw).split()[1]


def held(gw):
    return int(re.search(r"held:\s+(\d+)", status(gw)).group(1))


def queue_states(gw):
    """Counter of message states, read by the CLI from the database (works with the gateway dead)."""
    return Counter(m["state"] for m in json.loads(gw.cli("queue", "list", "--all", "--json").stdout))


def hold_then_stop(peers, tmp_path, n, rate):
    """Gateway + sink; an admin event holds n messages; `continuity stop` starts the replay."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{sink.port}", extra=CONF.format(rate=rate)), port)
    assert gw.cli("continuity", "start", "--reason", "crash test").stdout.strip() == "ok: continuity"
    t0 = time.monotonic()
    tokens = inject(port, n)
    print(f"injected {n} in {time.monotonic() - t0:.1f} s over {SESSIONS} sessions")
    wait_for(lambda: held(gw) == n, 60, interval=0.3, what=f"{n} held")
    assert sink.count() == 0
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    return sink, gw, tokens


def finish(gw, sink, tokens, started):
    """After the restart: recovering is resumed, ends in normal; returns the sink's tokens.
    The resumed state is read from the restarted gateway's log, not from `continuity status`
    at once: the replay runs while the intake workers start, and on a loaded machine it can
    finish before the CLI gets to ask."""
    log = gw.log_text().split("event='spool_open'")[-1]            # since the restart
    assert "event='continuity_state' mode='recovering'" in log, log[-2000:]
    wait_for(lambda: mode(gw) == "normal", 90, interval=0.3, what="replay finished after the restart")
    wait_for(lambda: len(set(tokens_at(sink))) >= len(tokens), 15, what="every token at the sink")
    time.sleep(1.0)                                   # a late duplicate would show up here
    print(f"replay of {len(tokens)} with a restart: {time.monotonic() - started:.1f} s")
    got = tokens_at(sink)
    assert set(got) == set(tokens), f"missing: {len(set(tokens) - set(got))}"
    assert queue_states(gw)["hold"] == 0
    st = status(gw)
    assert "continuity -> recovering" in st and "recovering -> normal" in st, st
    assert re.search(r"recovering -> normal\s+engine: replay finished", st), st
    return got


def test_kill_9_during_replay_resumes_and_duplicates_only_what_was_active(peers, tmp_path):
    n = 1000
    sink, gw, tokens = hold_then_stop(peers, tmp_path, n, rate=100)
    started = time.monotonic()
    wait_for(lambda: sink.count() >= n // 2, 60, interval=0.001, what="half replayed")
    gw.kill()                                        # at once: likely between a 250 and our commit
    time.sleep(0.3)                                  # a DATA the sink had in full is stored by now
    at_sink = sink.count()
    states = queue_states(gw)                        # the database as the dead process left it
    active, released = states["active"], n - states["hold"]
    assert states["hold"] > 0, states                # killed mid-replay, not after it
    assert "mode:      recovering" in status(gw)     # the persisted state

    gw.start()
    log = gw.log_text()
    requeued = re.findall(r"event='spool_open'.* requeued=(\d+)", log)
    assert len(requeued) == 2 and int(requeued[-1]) == active, (requeued, active)  # all put back
    got = finish(gw, sink, tokens, started)
    dups = len(got) - len(set(got))
    print(f"kill -9 at {at_sink} delivered: released before the kill {released}, "
          f"active at the kill {active}, duplicates {dups}; states at kill {dict(states)}")
    assert dups <= active
    assert dups == at_sink - states["delivered"]     # exactly those the sink took but we had not committed


def test_sigterm_during_replay_resumes_without_duplicates(peers, tmp_path):
    n = 500
    sink, gw, tokens = hold_then_stop(peers, tmp_path, n, rate=100)
    started = time.monotonic()
    wait_for(lambda: sink.count() >= n // 2, 60, interval=0.05, what="half replayed")
    gw.stop()                                        # SIGTERM: deliveries in flight are committed
    at_sink = sink.count()
    states = queue_states(gw)
    assert states["active"] == 0 and states["hold"] > 0, states
    assert "mode:      recovering" in status(gw)
    gw.start()
    got = finish(gw, sink, tokens, started)
    dups = len(got) - len(set(got))
    print(f"SIGTERM at {at_sink} delivered: released before the stop {n - states['hold']}, "
          f"duplicates {dups}")
    assert dups == 0
