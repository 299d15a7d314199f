"""The drill in the continuity controller (gateway/continuity/drill.py) over a real spool and the
stepped clocks of test_controller.py: a drill starts only in normal mode and one at a time; a
real event (the engine's own) supersedes it and turns its held mail into continuity holds that
the event's replay releases; drill_max_duration ends a forgotten drill, also after a restart;
drill holds left without a drill are released, or made continuity holds during an event; each
command is audited exactly once."""
from __future__ import annotations

import io

import pytest

from gateway.config import parse
from gateway.continuity.alerts import Alerter
from gateway.continuity.controller import ContinuityController
from gateway.continuity.engine import Mode
from gateway.logs import make_logger
from spool import Spool
from spool import continuity as store
from spool import drill as drills
from spool.commit import NewMessage, insert_message
from spool.transitions import claim_due, record_attempt
from tests.gateway.continuity.test_controller import Clocks, Probe, QmgrDouble, steps

DRILL = "drill@example.com"


def controller(cfg, spool, clocks, probe, qmgr=None):
    log = make_logger(stream=io.StringIO())
    alerter = Alerter(urls=[], mail_to=[], spool=spool, hostname="gw.test", log=log,
                      clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    qmgr = qmgr or QmgrDouble()
    qmgr.drill_rcpts = frozenset()
    return ContinuityController(cfg, spool, qmgr, probe, alerter, log,
                                clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)


@pytest.fixture
async def ctl(tmp_path):
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "routing": {"default_smarthost": "[127.0.0.1]:2"},
                 "continuity": {"mode": "automatic", "enter_after": 10.0, "hold_down": 10.0,
                                "tick": 1.0, "drill_max_duration": 60.0}}, "test")
    spool = await Spool.open(cfg.spool_path)
    clocks = Clocks()
    probe = Probe(clocks)
    c = controller(cfg, spool, clocks, probe)
    await c.start()
    c.cfg_all, c.clocks, c.probe = cfg, clocks, probe
    yield c
    await spool.close()


async def drill(c, command="drill-start", drill_id=None):
    """Queue a drill command as the CLI does (the drills row with the start), apply it in one
    step; returns (drill id, the command's result)."""
    w = c.clocks.wall
    if drill_id is None:
        drill_id = drills.new_drill_id(w)
        await c.spool.write(lambda conn: drills.request(conn, drill_id, [DRILL], "tester", now=w))
    cid = await c.spool.write(lambda conn: store.queue_command(conn, command, drill_id, "cli", w))
    await c.step()
    return drill_id, (await c.spool.read(store.get_command, cid))["result"]


def held_for_drill(conn, tag, now, reason="drill"):
    q = insert_message(conn, NewMessage("a@remote.test", (DRILL,), b"x", queue_id=tag), now=now)
    claim_due(conn, 10, now=now)
    record_attempt(conn, q, [], next_attempt_at=now, now=now, hold=True, hold_reason=reason)
    return q


def rows(sql):
    return lambda conn: [tuple(r) for r in conn.execute(sql).fetchall()]


def reasons(conn):
    return dict(conn.execute("SELECT queue_id, hold_reason FROM messages WHERE state='hold'").fetchall())


async def test_one_drill_at_a_time_and_only_in_normal_mode(ctl):
    first, result = await drill(ctl)
    assert result == f"ok: drill {first} running" and ctl.qmgr.drill_rcpts == {DRILL}
    second, result = await drill(ctl)
    assert result == f"refused: drill {first} is already running"
    assert (await ctl.spool.read(drills.get, second))["state"] == "refused"
    _, result = await drill(ctl, "drill-end", first)
    assert result == f"ok: drill {first} ended, 0 message(s) released" and not ctl.qmgr.drill_rcpts
    ctl.probe.ok = False
    await steps(ctl, 2)
    assert ctl.state.mode is Mode.DEGRADED
    _, result = await drill(ctl)
    assert result.startswith("refused: continuity mode is degraded")
    rows = await ctl.spool.read(lambda conn: conn.execute(
        "SELECT command_id, src, dst FROM continuity_audit WHERE command_id IS NOT NULL ORDER BY id").fetchall())
    assert [tuple(r) for r in rows] == [(1, "normal", "normal"), (2, "normal", "normal"),
                                        (3, "normal", "normal"), (4, "degraded", "degraded")]


async def test_an_engine_event_supersedes_the_drill_and_replays_its_mail(ctl):
    drill_id, _ = await drill(ctl)
    w = ctl.clocks.wall
    await ctl.spool.write(lambda conn: held_for_drill(conn, "D1", w))
    ctl.probe.ok = False
    await steps(ctl, 12)                               # enter_after 10 s: a real event
    assert ctl.state.mode is Mode.CONTINUITY and not ctl.qmgr.drill_rcpts
    row = await ctl.spool.read(drills.get, drill_id)
    assert row["state"] == "ended" and row["end_reason"] == f"superseded by continuity event {ctl.state.event_id}"
    assert row["released"] == 1
    assert await ctl.spool.read(reasons) == {"D1": "continuity"}
    _, result = await drill(ctl, "drill-end", drill_id)   # the CLI's own end comes too late
    assert result == f"refused: drill {drill_id} is not running"
    ctl.probe.ok = True
    await steps(ctl, 13)                               # hold_down 10 s: the event's replay
    assert await ctl.spool.read(reasons) == {}
    assert await ctl.spool.read(rows("SELECT state, replay_id LIKE 'CE-%' FROM messages")) == [("incoming", 1)]
    audit = await ctl.spool.read(lambda conn: drills.audit_rows(conn, drill_id))
    assert [(a["action"], a["actor"], a["result"]) for a in audit] == [
        ("drill_start", "cli", "ok"), ("drill_end", "drill", "ok"), ("drill_end", "cli", "refused")]


async def test_a_forgotten_drill_ends_after_drill_max_duration_also_across_a_restart(ctl):
    drill_id, _ = await drill(ctl)
    w = ctl.clocks.wall
    await ctl.spool.write(lambda conn: held_for_drill(conn, "D1", w))
    await steps(ctl, 30)
    again = controller(ctl.cfg_all, ctl.spool, ctl.clocks, ctl.probe)      # a restart
    await again.start()
    again.clocks = ctl.clocks
    assert again.qmgr.drill_rcpts == {DRILL} and again.status()["drill"]["id"] == drill_id
    await steps(again, 29)
    assert (await again.spool.read(drills.get, drill_id))["state"] == "running"
    await steps(again, 2)                              # 60 s after started_at
    row = await again.spool.read(drills.get, drill_id)
    assert row["state"] == "ended" and row["end_reason"].startswith("ended by the gateway after drill_max_duration 60")
    assert not again.qmgr.drill_rcpts
    assert await again.spool.read(rows("SELECT state, replay_id FROM messages")) == [("incoming", drill_id)]


async def test_drill_holds_left_without_a_drill_are_released_or_join_an_event(ctl):
    w = ctl.clocks.wall
    await ctl.spool.write(lambda conn: held_for_drill(conn, "L1", w))
    await ctl.step()
    assert await ctl.spool.read(rows("SELECT state, replay_id FROM messages")) == [("incoming", "drill-leftover")]
    await ctl.command("start", "real", "alice")
    await ctl.spool.write(lambda conn: held_for_drill(conn, "L2", w))
    await ctl.step()
    assert await ctl.spool.read(reasons) == {"L2": "continuity"}
