"""The continuity controller over a real spool (tmp_path) and a real Alerter (no channels): the
replay counts only its own unsettled releases, admin commands have one owner (applied in order,
each audited exactly once, expired after command_ttl), and durations run on the monotonic clock
(a wall-clock step neither starts nor delays an event). The queue manager is a small double:
its deliveries are played on the spool with spool.transitions, as the real one records them."""
from __future__ import annotations

import asyncio
import io

import pytest

from gateway.config import parse
from gateway.continuity.alerts import Alerter
from gateway.continuity.controller import ContinuityController
from gateway.continuity.engine import CommandRefused, Mode
from gateway.health import ProbeResult
from gateway.logs import make_logger
from spool import Spool
from spool import continuity as store
from spool.commit import NewMessage, insert_message
from spool.states import RcptState
from spool.transitions import RcptOutcome, claim_due, record_attempt

WALL0 = 1_800_000_000.0


class Clocks:
    """A monotonic and a wall clock the test steps; ``jump`` steps the wall clock only (NTP)."""

    def __init__(self):
        self.mono, self.wall = 1000.0, WALL0

    def tick(self, seconds: float) -> None:
        self.mono += seconds
        self.wall += seconds


class QmgrDouble:
    def __init__(self):
        self.stats = {"deferred": 0}
        self.hold_downstream = False
        self.notified = 0

    def notify(self) -> None:
        self.notified += 1


class Probe:
    """A critical probe whose next result is ``ok``: a new ProbeResult each step, as a runner's."""

    def __init__(self, clocks: Clocks):
        self.clocks, self.ok = clocks, True

    def __call__(self):
        return [ProbeResult("smtp:exchange", self.ok, self.clocks.wall, 0.01, "250" if self.ok else
                            "connect: refused", True)]


@pytest.fixture
async def ctl(tmp_path):
    cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                 "routing": {"default_smarthost": "[127.0.0.1]:2"},
                 "continuity": {"mode": "automatic", "enter_after": 10.0, "hold_down": 10.0,
                                "tick": 1.0, "replay_rate": 50.0, "replay_concurrency": 20,
                                "command_ttl": 300.0}}, "test")
    spool = await Spool.open(cfg.spool_path)
    clocks, log = Clocks(), make_logger(stream=io.StringIO())
    alerter = Alerter(urls=[], mail_to=[], spool=spool, hostname="gw.test", log=log,
                      clock=lambda: clocks.mono, wall=lambda: clocks.wall)
    probe = Probe(clocks)
    c = ContinuityController(cfg, spool, QmgrDouble(), probe, alerter, log,
                             clock=lambda: clocks.wall, monotonic=lambda: clocks.mono)
    await c.start()
    c.clocks, c.probe = clocks, probe
    yield c
    await spool.close()


async def steps(c, n, every=1.0, jump_at=None, jump=0.0):
    """n steps, ``every`` seconds apart; the wall clock jumps by ``jump`` before step jump_at.
    Returns the monotonic time of each transition: [(mono, mode)]."""
    seen, mode = [], c.state.mode
    for i in range(n):
        if i == jump_at:
            c.clocks.wall += jump
        await c.step()
        if c.state.mode is not mode:
            mode = c.state.mode
            seen.append((c.clocks.mono, mode))
        c.clocks.tick(every)
    return seen


@pytest.mark.parametrize("jump", [3600.0, -3600.0])
async def test_wall_clock_step_neither_starts_nor_delays_an_event(ctl, jump):
    ctl.probe.ok = False
    t0 = ctl.clocks.mono
    seen = await steps(ctl, 20, jump_at=3, jump=jump)
    assert seen == [(t0, Mode.DEGRADED), (t0 + 10.0, Mode.CONTINUITY)], seen
    st = await ctl.spool.read(store.load_state)
    assert st["mode"] == "continuity" and st["since"] == WALL0 + 10.0 + jump   # shown: the wall clock
    h = ctl.status()["health"]                # shown with wall-clock times, the run kept monotonic
    assert (h["now"], h["failing_since"]) == (ctl.clocks.wall - 1.0, ctl.clocks.wall - 20.0)
    ctl.probe.ok = True                      # recovery: hold_down on the monotonic clock too
    t1 = ctl.clocks.mono
    seen = await steps(ctl, 15, jump_at=2, jump=-jump)
    assert seen[0][0] == t1 + 10.0, seen      # recovering (and normal: nothing was held)
    assert [(r["src"], r["dst"]) for r in await audit_rows(ctl)][-2:] == [
        ("continuity", "recovering"), ("recovering", "normal")]


async def test_alert_rate_limit_is_not_fooled_by_a_wall_clock_step(ctl):
    a = ctl.alerter
    assert await a.send("k", "t", "b")
    ctl.clocks.wall += 3600.0                # NTP step forward: still inside min_interval
    ctl.clocks.mono += 1.0
    assert not await a.send("k", "t", "b")
    ctl.clocks.mono += a.min_interval
    ctl.clocks.wall -= 7200.0                # and backward: the interval has passed
    assert await a.send("k", "t", "b")


def hold(conn, n, tag, now):
    ids = [insert_message(conn, NewMessage("a@remote.test", ("bob@example.com",), b"%s%d" % (tag, i),
                                           queue_id=f"{tag.decode()}{i:03d}"), now=now) for i in range(n)]
    claim_due(conn, n, now=now)
    for q in ids:
        record_attempt(conn, q, [], next_attempt_at=now, now=now, hold=True)
    return ids


def attempt(conn, ids, state, now):
    """The queue manager's attempt of ``ids``: delivered, or deferred for an hour (a 4xx)."""
    claim_due(conn, len(ids) + 1000, now=now)
    for q in ids:
        o = RcptOutcome(0, state, 250 if state is RcptState.DELIVERED else 451, "x")
        record_attempt(conn, q, [o], next_attempt_at=now + 3600, now=now)


async def test_deferred_leftovers_and_deferred_replayed_mail_do_not_stall_the_replay(ctl):
    """25 messages of an earlier event, replayed and deferred by a 4xx (held_seconds > 0), used
    to count as in flight for ever: more than replay_concurrency (20), so nothing was released
    and recovering never reached normal. Now only this replay's unsettled releases count."""
    c, w = ctl, ctl.clocks.wall
    left = await c.spool.write(lambda conn: hold(conn, 25, b"L", w - 7200))
    await c.spool.write(lambda conn: store.release_held(conn, 25, now=w - 3600, replay_id="CE-old@1"))
    await c.spool.write(lambda conn: attempt(conn, left, RcptState.PENDING, w - 3600))
    new = await c.spool.write(lambda conn: hold(conn, 30, b"N", w - 60))
    await c.command("start", "drill", "alice")
    await c.command("stop", "", "alice")
    assert c.state.mode is Mode.RECOVERING
    for _ in range(40):                      # 0.1 s steps: the token bucket releases 5 a step
        await c.step()
        c.clocks.tick(0.1)
        released = [r[0] for r in await c.spool.read(lambda conn: conn.execute(
            "SELECT queue_id FROM messages WHERE state='incoming' ORDER BY seq").fetchall())]
        half = len(released) // 2            # the downstream takes some, defers the others
        await c.spool.write(lambda conn: attempt(conn, released[:half], RcptState.DELIVERED, c.clocks.wall))
        await c.spool.write(lambda conn: attempt(conn, released[half:], RcptState.PENDING, c.clocks.wall))
        if c.state.mode is Mode.NORMAL:
            break
    assert c.state.mode is Mode.NORMAL
    rows = await c.spool.read(lambda conn: conn.execute(
        "SELECT state, count(*) FROM messages WHERE queue_id LIKE 'N%' GROUP BY state").fetchall())
    assert sum(n for s, n in rows if s in ("delivered", "deferred")) == len(new)
    assert await c.spool.read(store.count_held) == 0
    audit = await c.spool.read(store.audit)
    assert audit[0]["src"] == "recovering" and audit[0]["dst"] == "normal"


async def audit_rows(c):
    return list(reversed(await c.spool.read(store.audit, 100)))


async def test_cli_and_api_commands_have_one_owner_applied_in_order_audited_once(ctl):
    """Commands queued by the CLI and sent through the API at the same moment as a controller
    tick: applied one at a time in the order they were queued, each audited exactly once, and
    the audit trail is one chain (each record starts where the one before ended)."""
    c = ctl
    cli = [await c.spool.write(store.queue_command, cmd, "", "cli", c.clocks.wall)
           for cmd in ("start", "stop", "maintenance-start")]
    results = await asyncio.gather(c.step(), c.command("maintenance-stop", "", "api"),
                                   c.command("stop", "", "api2"), c.step(), return_exceptions=True)
    assert isinstance(results[2], CommandRefused), results    # recovering: nothing to stop
    rows = await audit_rows(c)
    ids = [r["command_id"] for r in rows if r["command_id"] is not None]
    assert len(ids) == len(set(ids)) == 5 and ids == sorted(ids) and ids[:3] == cli
    for before, after in zip(rows, rows[1:]):
        assert after["src"] == before["dst"], rows
    assert [(r["src"], r["dst"], r["actor"]) for r in rows] == [
        ("normal", "continuity", "cli"), ("continuity", "recovering", "cli"),
        ("recovering", "continuity", "cli"), ("continuity", "recovering", "api"),
        ("recovering", "recovering", "api2"), ("recovering", "normal", "engine")]   # nothing held
    st = await c.spool.read(store.load_state)
    assert st["mode"] == c.state.mode.value == "normal"
    assert not await c.spool.read(store.pending_commands)


async def test_a_command_older_than_command_ttl_expires_audited_not_applied(ctl):
    """`mailgate continuity start` typed while the gateway was down must not fire at the next
    start days later: older than continuity.command_ttl when picked up, it is marked expired and
    audited once, and the state does not change."""
    c = ctl
    old = await c.spool.write(lambda conn: conn.execute(
        "INSERT INTO continuity_commands (at, command, reason, actor) VALUES (?,?,?,?)",
        (c.clocks.wall - 3 * 86400, "start", "typed on Friday", "bob")).lastrowid)
    fresh = await c.spool.write(store.queue_command, "maintenance-start", "", "carol", c.clocks.wall)
    await c.step()
    assert c.state.mode is Mode.CONTINUITY and c.state.origin == "maintenance"
    row = await c.spool.read(store.get_command, old)
    assert row["done_at"] is not None
    assert row["result"] == "expired: the gateway did not pick it up within 300 s"
    rows = await audit_rows(c)
    assert [(r["command_id"], r["src"], r["dst"], r["actor"]) for r in rows] == [
        (old, "normal", "normal", "bob"), (fresh, "normal", "continuity", "carol")]
    assert "expired" in rows[0]["reason"]
