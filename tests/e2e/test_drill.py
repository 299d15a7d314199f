"""`mailgate drill` end to end (issue 8 item 3): a real gateway process, a real sink as Exchange,
the CLI as a process. The drill recipient's mail (the drill's own test message and production mail
sent to it meanwhile) is held, filed into its continuity mailbox and replayed once after the
drill; another recipient's mail in the same minutes is delivered at once (the sink had it while
the drill mail was still held); a message to both is split per recipient. The report's phases
and the audit rows are checked. A drill is refused during a real event; a real event starting
during a drill wins (the drill ends, its held mail is replayed with the event's).

Measured here (printed): the drill's timings (hold, visible in webmail, replay)."""
import os
import smtplib
import sqlite3
import subprocess
import sys
import time
import uuid

from tests.conftest import ROOT, config_toml, fast_continuity
from tests.support.peers import free_port, wait_for

DRILL = "drill@example.com"


def start(peers, tmp_path, **continuity):
    sink = peers.sink(name="exchange")
    port = free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}",
                                   continuity=None, extra=fast_continuity("postmaster@example.com",
                                                                          **continuity)), port)
    return sink, gw


def db(tmp_path):
    return sqlite3.connect(f"file:{tmp_path / 'data' / 'spool.db'}?mode=ro", uri=True)


def q(tmp_path, sql, *args):
    c = db(tmp_path)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def drill_proc(gw, *args):
    return subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(gw.config), "drill", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)


def send(port, rcpts, tag):
    tok = f"{tag}-{uuid.uuid4().hex[:10]}"
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        c.sendmail("alice@remote.test", rcpts, f"Subject: {tok}\r\n\r\nbody {tok}\r\n".encode())
    return tok


def received(sink):
    """[(rcpts, subject, mtime of the sink's record)] in arrival order."""
    out = []
    for meta in sorted(sink.dir.glob("*.json")):
        data = meta.with_suffix(".eml").read_bytes()
        subject = next((l[9:].decode() for l in data.split(b"\r\n") if l.startswith(b"Subject: ")), "")
        import json
        out.append((json.loads(meta.read_text())["rcpt_tos"], subject, os.stat(meta).st_mtime))
    return out


def drill_held(tmp_path):
    return q(tmp_path, "SELECT count(*) FROM messages WHERE state='hold' AND hold_reason='drill'")[0][0]


def test_drill_holds_only_the_drill_recipient_and_replays_once(peers, tmp_path):
    sink, gw = start(peers, tmp_path)
    wait_for(lambda: "ok" in gw.cli("probes").stdout, 15, what="a passing probe")
    cli = drill_proc(gw, "--rcpt", DRILL, "--hold", "4", "--timeout", "60")
    try:
        wait_for(lambda: drill_held(tmp_path) == 1, 20, what="the drill's test message held")
        for_drill = send(gw.port, [DRILL], "production-for-drill")
        normal = send(gw.port, ["bob@example.com"], "normal")
        mixed = send(gw.port, [DRILL, "carol@example.com"], "mixed")
        # everyone else's mail flows at once, while the drill's is still held
        wait_for(lambda: len(received(sink)) == 2, 15, what="bob's and carol's mail delivered")
        assert drill_held(tmp_path) == 3
        assert sorted((r, s) for r, s, _ in received(sink)) == [
            (["bob@example.com"], normal), (["carol@example.com"], mixed)]
        assert q(tmp_path, "SELECT mode FROM continuity_state") in ([], [("normal",)])
        out, _ = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
    print(out)
    assert cli.returncode == 0, out
    assert "detection            skipped" in out and "result: PASS" in out
    for label in ("hold", "visible in webmail", "replay"):
        assert any(line.strip().startswith(label) and " ok " in line for line in out.splitlines()), label
    drill_id = q(tmp_path, "SELECT id FROM drills")[0][0]
    assert q(tmp_path, "SELECT state, end_reason, released FROM drills") == [("ended", "ended by cli", 3)]

    # the sink got each drill message exactly once, after the hold; nobody's mail twice
    wait_for(lambda: len(received(sink)) == 5, 15, what="the replay")
    got = received(sink)
    to_drill = [(s, t) for r, s, t in got if r == [DRILL]]
    assert sorted(s for s, _ in to_drill) == sorted([for_drill, mixed, f"[mailgate drill {drill_id}] continuity"
                                                     " drill test message"])
    assert sorted(s for r, s, _ in got if r != [DRILL]) == sorted([normal, mixed])
    released = q(tmp_path, "SELECT min(released_at) FROM messages WHERE replay_id=?", drill_id)[0][0]
    assert all(t >= released for _, t in to_drill)
    assert q(tmp_path, "SELECT count(*) FROM recipients WHERE address=? AND state='delivered' AND attempts=1",
             DRILL)[0][0] == 3
    assert q(tmp_path, "SELECT count(*) FROM messages WHERE state <> 'delivered'")[0][0] == 0

    # filed into the drill recipient's continuity mailbox (the webmail's rows), no one else's held
    filed = q(tmp_path, "SELECT mailbox, event_id FROM mailbox_messages WHERE event_id <> ''")
    assert filed == [(DRILL, drill_id)] * 3
    assert q(tmp_path, "SELECT count(*) FROM mailbox_messages WHERE mailbox=?", DRILL)[0][0] == 3   # not twice
    status = gw.cli("drill", "status").stdout
    assert "drill:     none running" in status and f"{drill_id}  ended" in status, status
    assert f"drill {drill_id} started for {DRILL}" in gw.cli("continuity", "status").stdout

    # the audit trail: the gateway's start and end, the CLI's phases and report
    audit = q(tmp_path, "SELECT action, actor, address, result FROM webmail_audit WHERE action LIKE 'drill%'"
                        " ORDER BY id")
    assert audit == [("drill_start", "cli", "", "ok"), ("drill_held", "cli", DRILL, "ok"),
                     ("drill_visible", "cli", DRILL, "ok"), ("drill_end", "cli", "", "ok"),
                     ("drill_replayed", "cli", DRILL, "ok"), ("drill_report", "cli", "", "ok")], audit
    commands = q(tmp_path, "SELECT c.command, c.result, a.src, a.dst FROM continuity_commands c JOIN"
                           " continuity_audit a ON a.command_id = c.id ORDER BY c.id")
    assert commands == [("drill-start", f"ok: drill {drill_id} running", "normal", "normal"),
                        ("drill-end", f"ok: drill {drill_id} ended, 3 message(s) released", "normal", "normal")]


def test_a_drill_is_refused_during_a_continuity_event(peers, tmp_path):
    sink, gw = start(peers, tmp_path)
    assert gw.cli("continuity", "start", "--reason", "real").stdout.strip() == "ok: continuity"
    out = gw.cli("drill", "--rcpt", DRILL, check=False)
    assert out.returncode == 1, out
    assert "refused: continuity mode is continuity" in out.stdout
    assert q(tmp_path, "SELECT state FROM drills") == [("refused",)]
    assert q(tmp_path, "SELECT action, result FROM webmail_audit WHERE action LIKE 'drill%'") == [
        ("drill_start", "refused")]
    assert sink.count() == 0


def test_a_real_event_during_a_drill_wins(peers, tmp_path):
    sink, gw = start(peers, tmp_path)
    cli = drill_proc(gw, "--rcpt", DRILL, "--hold", "60", "--timeout", "90")
    try:
        wait_for(lambda: drill_held(tmp_path) == 1, 20, what="the drill's test message held")
        assert gw.cli("continuity", "start", "--reason", "real outage").stdout.strip() == "ok: continuity"
        out, _ = cli.communicate(timeout=30)
    finally:
        if cli.poll() is None:
            cli.kill()
    assert cli.returncode == 1, out
    assert "superseded by continuity event CE-" in out, out
    (state, why), = q(tmp_path, "SELECT state, end_reason FROM drills")
    assert state == "ended" and why.startswith("superseded by continuity event CE-"), why
    assert q(tmp_path, "SELECT actor, result FROM webmail_audit WHERE action='drill_end' ORDER BY id") == [
        ("drill", "ok"), ("cli", "refused")]
    assert q(tmp_path, "SELECT hold_reason FROM messages WHERE state='hold'") == [("continuity",)]
    bob = send(gw.port, ["bob@example.com"], "during-event")
    wait_for(lambda: q(tmp_path, "SELECT count(*) FROM messages WHERE state='hold'")[0][0] == 2, 10,
             what="the event holds everyone's mail")
    assert sink.count() == 0
    assert gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: sink.count() == 2, 15, what="the event's replay")
    time.sleep(1)
    got = received(sink)
    assert sorted(r[0] for r, _s, _t in got) == ["bob@example.com", DRILL] and bob in [s for _r, s, _t in got]


def test_bad_drill_arguments_are_usage_errors(tmp_path):
    cfg = tmp_path / "m.toml"
    cfg.write_text(config_toml(port=free_port(), data_dir=tmp_path / "data", smarthost="[127.0.0.1]:1",
                               continuity="automatic"))

    def drill(*a):
        return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(cfg), "drill", *a],
                              capture_output=True, text=True, cwd=ROOT, timeout=60)
    out = drill()
    assert out.returncode == 2 and "no drill recipient" in out.stderr and "Traceback" not in out.stderr
    out = drill("--rcpt", "someone@elsewhere.org")
    assert out.returncode == 2 and "not in relay.accepted_domains" in out.stderr
    out = drill("--rcpt", "not an address")
    assert out.returncode == 2 and "is not an address" in out.stderr


def test_a_drill_nobody_ends_ends_by_itself(peers, tmp_path):
    """drill_max_duration (2 s here): the gateway ends a drill the CLI keeps open (--hold 60)
    and replays its mail; a drill hold left without a drill (written here as an attempt recorded
    just after its drill ended would leave it) is released at the next tick."""
    sink, gw = start(peers, tmp_path, drill_max_duration=2.0)
    out = gw.cli("drill", "--rcpt", DRILL, "--hold", "60", "--timeout", "30", check=False)
    assert out.returncode == 0, out.stdout
    assert "note: ended by the gateway after drill_max_duration 2 s" in out.stdout
    assert q(tmp_path, "SELECT actor FROM webmail_audit WHERE action='drill_end' ORDER BY id") == [
        ("drill",), ("cli",)]
    wait_for(lambda: sink.count() == 1, 10, what="the replay")
    # a leftover drill hold, no drill running: released by the gateway, delivered once
    send(gw.port, ["bob@example.com"], "leftover")
    wait_for(lambda: sink.count() == 2, 10, what="bob's mail")
    qid = q(tmp_path, "SELECT queue_id FROM messages ORDER BY seq DESC LIMIT 1")[0][0]
    c = sqlite3.connect(tmp_path / "data" / "spool.db")
    with c:
        c.execute("UPDATE messages SET state='hold', hold_reason='drill', held_at=? WHERE queue_id=?",
                  (time.time(), qid))
        c.execute("UPDATE recipients SET state='pending', attempts=0 WHERE queue_id=?", (qid,))
    c.close()
    wait_for(lambda: sink.count() == 3, 10, what="the leftover released")
    assert q(tmp_path, "SELECT state, replay_id FROM messages WHERE queue_id=?", qid) == [
        ("delivered", "drill-leftover")]
