"""`mailgate drill` on PostgreSQL with two real gateway processes (issue 9, drills in a cluster).

gw1 leads (the continuity lease), gw2 follows; the CLI runs with gw2's configuration (its
listener takes the test mail, the commands are applied by the leader). The drill recipient's mail
accepted by either node, claimed by either node's queue manager, is held (hold_reason 'drill')
and filed into its continuity mailbox; everyone else's mail in the same seconds is delivered at
once (a message to both is split per recipient); after the drill's end each held message reaches
the sink exactly once, after its release. The drill's start and end are the leader's writes at
its epoch; `mailgate drill status` reads the shared state. Assertions are on the sink's messages
and the database's rows.

Measured here (printed): the drill's timings (hold, visible in webmail, replay).
"""
from __future__ import annotations

import re
import smtplib
import subprocess
import sys
import uuid
from collections import Counter

import pytest

from tests.conftest import ROOT
from tests.e2e.test_pg_continuity import one, rows, start_pair
from tests.support import postgres as pg
from tests.support.peers import wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

DRILL = "drill@example.com"


def send(port: int, rcpts: list[str], tag: str) -> str:
    tok = f"{tag}-{uuid.uuid4().hex[:8]}"
    with smtplib.SMTP("127.0.0.1", port, local_hostname="client.test", timeout=30) as c:
        c.sendmail("alice@remote.test", rcpts, f"Subject: {tok}\r\n\r\nbody {tok}\r\n".encode())
    return tok


def at_sink(sink) -> list[tuple[tuple[str, ...], str]]:
    """[(rcpts, subject)] of what the sink got, in arrival order."""
    return [(tuple(env["rcpt_tos"]), m.group(1).decode() if (m := re.search(rb"Subject: ([^\r]+)", data))
             else "") for env, data in sink.messages()]


def drill_held(dsn: str) -> int:
    return one(dsn, "SELECT count(*) FROM messages WHERE state='hold' AND hold_reason='drill'")[0]


def test_a_drill_on_two_nodes_holds_only_its_recipient_and_replays_once(peers, tmp_path, pg_dsn):
    dsn = pg_dsn
    sink, gws = start_pair(peers, tmp_path, dsn)
    gw1, gw2 = gws["gw1"], gws["gw2"]
    wait_for(lambda: one(dsn, "SELECT count(DISTINCT node) FROM probe_results WHERE ok")[0] == 2, 20,
             what="both nodes probe ok")
    cli = subprocess.Popen([sys.executable, "-m", "gateway.cli", "--config", str(gw2.config), "drill",
                            "--rcpt", DRILL, "--hold", "4", "--timeout", "60"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    try:
        wait_for(lambda: drill_held(dsn) == 1, 30, what="the drill's test message held")
        # both nodes follow the drill: their queue managers hold its recipient's mail
        wait_for(lambda: "drill_followed" in gw2.log_text(), 10, what="gw2 follows the drill")
        for_drill = [send(gw1.port, [DRILL], "for-drill-1"), send(gw2.port, [DRILL], "for-drill-2")]
        normal = send(gw1.port, ["bob@example.com"], "normal")
        mixed = send(gw2.port, [DRILL, "carol@example.com"], "mixed")
        wait_for(lambda: len(at_sink(sink)) == 2, 20, what="bob's and carol's mail delivered")
        assert sorted(at_sink(sink)) == [(("bob@example.com",), normal), (("carol@example.com",), mixed)]
        wait_for(lambda: drill_held(dsn) == 4, 10, what="the drill recipient's mail held")
        assert one(dsn, "SELECT coalesce(max(mode), 'normal') FROM continuity_state") == ("normal",)
        out, _ = cli.communicate(timeout=90)
    finally:
        if cli.poll() is None:
            cli.kill()
    print(out)
    assert cli.returncode == 0, out
    assert "detection            skipped" in out and "result: PASS" in out
    (drill_id, state, why, released, node), = rows(dsn, "SELECT id, state, end_reason, released, node FROM drills")
    assert (state, why, released, node) == ("ended", "ended by cli", 4, "gw1")

    # each drill message at the sink exactly once, after its release; nobody's mail twice
    wait_for(lambda: len(at_sink(sink)) == 6, 20, what="the replay")
    got = Counter(at_sink(sink))
    assert all(n == 1 for n in got.values()), got
    to_drill = sorted(s for r, s in got if r == (DRILL,))
    assert to_drill == sorted([*for_drill, mixed, f"[mailgate drill {drill_id}] continuity drill test message"])
    replayed = rows(dsn, "SELECT r.state, r.attempts, m.replay_id, m.released_at IS NOT NULL FROM recipients r"
                         " JOIN messages m USING (queue_id) WHERE r.address = %s", DRILL)
    assert replayed == [("delivered", 1, drill_id, True)] * 4, replayed
    assert rows(dsn, "SELECT DISTINCT state FROM messages") == [("delivered",)]

    # filed into the drill recipient's continuity mailbox once each (the webmail's rows)
    assert rows(dsn, "SELECT mailbox, event_id, count(*) FROM mailbox_messages WHERE event_id <> ''"
                     " GROUP BY 1, 2") == [(DRILL, drill_id, 4)]
    assert one(dsn, "SELECT count(*) FROM mailbox_messages WHERE mailbox = %s", DRILL) == (4,)
    # the leader's writes at its epoch; the CLI's phases and report
    commands = rows(dsn, "SELECT c.command, c.result, a.src, a.dst, a.node, a.epoch FROM continuity_commands c"
                         " JOIN continuity_audit a ON a.command_id = c.id ORDER BY c.id")
    assert commands == [("drill-start", f"ok: drill {drill_id} running", "normal", "normal", "gw1", 1),
                        ("drill-end", f"ok: drill {drill_id} ended, 4 message(s) released", "normal",
                         "normal", "gw1", 1)], commands
    audit = rows(dsn, "SELECT action, actor, address, result, node FROM webmail_audit"
                      " WHERE action LIKE 'drill%%' ORDER BY id")
    assert audit == [("drill_start", "cli", "", "ok", "gw1"), ("drill_held", "cli", DRILL, "ok", "cli"),
                     ("drill_visible", "cli", DRILL, "ok", "cli"), ("drill_end", "cli", "", "ok", "gw1"),
                     ("drill_replayed", "cli", DRILL, "ok", "cli"), ("drill_report", "cli", "", "ok", "cli")], audit
    held_by = {n: g.log_text().count("reason='continuity drill'") for n, g in gws.items()}
    assert sum(held_by.values()) >= 4, held_by
    print(f"drill holds taken by each node's queue manager: {held_by}")
    status = gw1.cli("drill", "status").stdout
    assert "drill:     none running" in status and f"{drill_id}  ended" in status, status
    assert f"drill {drill_id} started for {DRILL}" in gw2.cli("continuity", "status").stdout
