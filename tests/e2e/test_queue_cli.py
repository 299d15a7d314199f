"""`mailgate queue ...` against a running gateway whose smarthost is down: list, show, hold,
release, flush, delete, and unknown IDs. The CLI works on the spool database beside the running
queue manager (gateway/cli_queue.py); a long minimal_backoff (300 s) makes sure that whatever is
delivered here went because of a command, not because of a retry."""
from __future__ import annotations

import json
import re
import smtplib
import time

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as (\w+)$")
TOKEN = re.compile(rb"^X-Test-Token: (\S+)", re.M)
NOT_FOUND, REFUSED = 1, 1           # exit statuses documented in gateway/cli.py


def send_all(port: int, tokens) -> list[str]:
    """Send one message per token; return the queue IDs from the 250 replies."""
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.ehlo()
        for t in tokens:
            smtp.mail("alice@remote.test")
            smtp.rcpt("bob@example.com")
            code, text = smtp.data(f"Subject: queue {t}\r\nX-Test-Token: {t}\r\n\r\nbody\r\n".encode())
            m = QUEUED.match(text.decode())
            assert code == 250 and m, (code, text)
            ids.append(m.group(1))
    return ids


def states(gw) -> dict[str, str]:
    return {m["queue_id"]: m["state"] for m in json.loads(gw.cli("queue", "list", "--json").stdout)}


def tokens(sink) -> list[str]:
    return sorted(t.decode() for _env, data in sink.messages() for t in TOKEN.findall(data))


def start(peers, tmp_path, sink):
    port = free_port()
    return peers.gateway(config_toml(port=port, data_dir=tmp_path / "data",
                                     smarthost=f"[127.0.0.1]:{sink.port}",
                                     minimal_backoff=300.0, maximal_backoff=600.0), port)


def test_list_show_hold_delete_flush_release(peers, tmp_path):
    sink = peers.sink(name="exchange")
    sink.stop()
    gw = start(peers, tmp_path, sink)
    held, q1, q2, gone = send_all(gw.port, ["held", "q1", "q2", "gone"])
    wait_for(lambda: set(states(gw).values()) == {"deferred"} and len(states(gw)) == 4, 15,
             what="four deferred messages")

    listing = gw.cli("queue", "list").stdout
    for qid in (held, q1, q2, gone):
        assert re.search(rf"^{qid}\s+deferred\s", listing, re.M), listing
    assert f"4.4.1 connect to 127.0.0.1[127.0.0.1]:{sink.port}" in listing, listing
    assert "deferred: 4" in listing

    show = gw.cli("queue", "show", held).stdout
    assert f"queue_id:     {held}\nstate:        deferred\nmail_from:    <alice@remote.test>" in show
    assert re.search(r"^rcpt:\s+bob@example\.com \[pending\]", show, re.M), show
    assert re.search(rf"^last_error:\s+4\.4\.1 connect to .*{sink.port}", show, re.M), show
    assert "X-Test-Token: held" in show                       # the stored headers

    out = gw.cli("queue", "hold", held)
    assert out.returncode == 0 and out.stdout.strip() == f"{held}: held (hold)", out
    out = gw.cli("queue", "delete", gone)
    assert out.returncode == 0 and out.stdout.strip() == f"{gone}: deleted", out
    gone_show = gw.cli("queue", "show", gone, check=False)
    assert gone_show.returncode == NOT_FOUND and "no such message" in gone_show.stderr
    assert states(gw) == {held: "hold", q1: "deferred", q2: "deferred"}

    sink.start()                       # downstream back: nothing moves before the 300 s backoff
    time.sleep(3)
    assert sink.count() == 0

    t0 = time.monotonic()
    out = gw.cli("queue", "flush")
    assert out.returncode == 0 and out.stdout.strip() == "flushed 2 message(s)", out
    wait_for(lambda: sink.count() == 2, 10, what="the flushed messages")
    print(f"flush: 2 deferred messages delivered {time.monotonic() - t0:.2f}s after `queue flush`")
    assert tokens(sink) == ["q1", "q2"]
    time.sleep(2)                      # the held one stays held, sink up and flush or not
    assert states(gw) == {held: "hold"} and sink.count() == 2

    out = gw.cli("queue", "release", held)
    assert out.returncode == 0 and out.stdout.strip() == f"{held}: released (incoming)", out
    wait_for(lambda: sink.count() == 3, 10, what="the released message")
    assert tokens(sink) == ["held", "q1", "q2"]              # "gone" never left
    wait_for(lambda: states(gw) == {}, 5, what="an empty queue")
    assert "deferred: 0" in gw.cli("queue", "list").stdout


def test_unknown_ids_and_refused_moves_exit_1_with_a_message(peers, tmp_path):
    sink = peers.sink(name="exchange")
    sink.stop()
    gw = start(peers, tmp_path, sink)
    (qid,) = send_all(gw.port, ["x"])
    wait_for(lambda: states(gw) == {qid: "deferred"}, 15, what="a deferred message")
    for cmd in ("show", "hold", "release", "delete"):         # errors on stderr, like postsuper
        out = gw.cli("queue", cmd, "NOSUCHID", check=False)
        assert out.returncode == NOT_FOUND, (cmd, out)
        assert out.stderr == "mailgate: NOSUCHID: no such message\n" and out.stdout == "", (cmd, out)
    out = gw.cli("queue", "flush", "NOSUCHID", check=False)
    assert out.returncode == NOT_FOUND and out.stdout.strip() == "flushed 0 message(s)", out
    out = gw.cli("queue", "release", qid, check=False)      # not held
    assert out.returncode == REFUSED, out
    assert out.stderr == f"mailgate: {qid}: cannot release: message is deferred\n", out
    bad = gw.cli("queue", "show", check=False)                # usage error
    assert bad.returncode == 2 and "queue_id" in bad.stderr
    assert states(gw) == {qid: "deferred"}


CONTINUITY = """
[continuity]
mode = "automatic"
tick = 0.2
[probes]
smtp_interval = 0.5
canary_rcpt = "postmaster@example.com"
"""


def hold_row(tmp_path, qid):
    import sqlite3
    db = sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT state, hold_reason, held_at IS NOT NULL, held_seconds FROM messages"
                          " WHERE queue_id=?", (qid,)).fetchone()
    finally:
        db.close()


def test_operator_hold_survives_a_replay_and_release_keeps_held_seconds(peers, tmp_path):
    """`queue hold` writes hold_reason='operator' (a message on continuity hold too), so the
    replay after the event leaves it held; `queue release` delivers it with its time on hold
    added to held_seconds (it does not count against the queue lifetime)."""
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", continuity=None,
                                   smarthost=f"[127.0.0.1]:{sink.port}", extra=CONTINUITY), port)
    assert gw.cli("continuity", "start").stdout.strip() == "ok: continuity"
    kept, replayed = send_all(gw.port, ["kept", "replayed"])
    wait_for(lambda: states(gw) == {kept: "hold", replayed: "hold"}, 10, what="two on continuity hold")
    out = gw.cli("queue", "hold", kept)
    assert out.returncode == 0 and out.stdout.strip() == f"{kept}: held (hold)", out
    assert hold_row(tmp_path, kept)[:3] == ("hold", "operator", 1)
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: gw.cli("continuity", "status").stdout.split()[1] == "normal", 15, what="replay done")
    wait_for(lambda: sink.count() == 1, 10, what="the replayed message")
    assert tokens(sink) == ["replayed"] and states(gw) == {kept: "hold"}
    time.sleep(1.0)
    out = gw.cli("queue", "release", kept)
    assert out.returncode == 0 and out.stdout.strip() == f"{kept}: released (incoming)", out
    wait_for(lambda: sink.count() == 2, 10, what="the released message")
    # the sink stores the message before its 250; the gateway records the outcome after it
    wait_for(lambda: hold_row(tmp_path, kept)[0] != "active", 10, what="the delivery recorded")
    state, reason, has_held_at, held_seconds = hold_row(tmp_path, kept)
    assert (state, reason, has_held_at) == ("delivered", "", 0) and held_seconds >= 1.0
