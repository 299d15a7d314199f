"""The admin console's verbs not covered by test_console_contract.py, on both backends (a real
SQLite spool, a real PostgreSQL 15 with a fresh database per test): probe history, the timeline's
audit_limit, replay progress, and the drills' refusals, cancellation, held mail and message
facts; on PostgreSQL, a drill write at an epoch whose lease was taken over is refused by the
fence (LeaseLost, counted, nothing written). State is read back through the verbs."""
from __future__ import annotations

import time
from itertools import pairwise

import pytest

from spool import NewMessage, RcptState
from spool.mailbox import FilingEntry
from spool.transitions import RcptOutcome

DRILL = "erin@example.org"


async def _held(spool, n: int, hold_reason: str = "drill", filing: bool = False) -> list[str]:
    """``n`` messages to DRILL put on hold for ``hold_reason`` as the queue manager does (the
    recipient left pending; with ``filing``, filed into DRILL's inbox with the hold)."""
    ids = []
    for i in range(n):
        m = NewMessage("a@remote.test", (DRILL,), b"Subject: h%d\r\n\r\nbody\r\n" % i,
                       queue_id=spool.new_queue_id())
        await spool.commit(m)
        [claim] = await spool.claim_due(1)
        entry = FilingEntry(queue_id=m.queue_id, data=m.data, mailboxes={DRILL: DRILL}, subject=f"h{i}",
                            event_id="DR-1") if filing else None
        await spool.record_attempt(m.queue_id, [], time.time() + 60, hold=True, token=claim.token,
                                   hold_reason=hold_reason, filing=entry)
        ids.append(m.queue_id)
    return ids


async def test_probe_history_latest_per_probe_or_the_newest(cspool):
    now = time.time()
    await cspool.record_probe("smtp", True, now - 2, 0.01, "250 ok", True)
    await cspool.record_probe("smtp", False, now - 1, 1.0, "refused", True)
    await cspool.record_probe("http", True, now, 0.02, "200", False)
    latest = await cspool.probe_history()
    assert [(r["probe"], bool(r["ok"]), r["detail"], bool(r["critical"])) for r in latest] == [
        ("http", True, "200", False), ("smtp", False, "refused", True)]
    assert latest[1]["latency"] == pytest.approx(1.0) and latest[1]["at"] == pytest.approx(now - 1)
    newest = await cspool.probe_history(latest_only=False, limit=2)
    assert [(r["probe"], bool(r["ok"])) for r in newest] == [("http", True), ("smtp", False)]
    assert len(await cspool.probe_history(latest_only=False)) == 3


async def test_timeline_audit_limit_keeps_the_newest_oldest_first(cspool):
    path = ["normal", "degraded", "continuity", "recovering", "normal"]
    for src, dst in pairwise(path):
        await cspool.save_transition(mode=dst, since=time.time(), origin="engine", reason=f"to {dst}",
                                     awaiting_confirm=False, event_id="CE-1", src=src, actor="engine")
    now = time.time()
    t = await cspool.timeline(now - 60, now + 60, audit_limit=2)
    assert [(a["src"], a["dst"]) for a in t["audit"]] == [("continuity", "recovering"), ("recovering", "normal")]
    assert t["total"] == 4 and [(c["src"], c["dst"]) for c in t["changes"]] == list(pairwise(path))
    assert t["before"] == "normal"
    assert len((await cspool.timeline(now - 60, now + 60))["audit"]) == 4       # no limit: all


async def test_replay_progress_counts_what_the_replay_released(cspool):
    since = time.time() - 10
    held = await _held(cspool, 3, hold_reason="continuity")
    released = await cspool.release_held(2, "R-1")
    assert sorted(released) == sorted(held[:2])               # oldest first
    [claim] = await cspool.claim_due(1)
    await cspool.record_attempt(claim.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx")],
                                time.time(), token=claim.token)
    p = await cspool.replay_progress("R-1", since)
    assert (p["done"], p["deferred"], p["in_flight"], p["remaining"]) == (1, 0, 1, 1)
    assert 0 < p["rate"] < 1 and p["eta_seconds"] == pytest.approx(2 / p["rate"])
    none = await cspool.replay_progress("R-other", since)
    assert (none["done"], none["in_flight"], none["rate"], none["eta_seconds"]) == (0, 0, 0, None)


async def test_a_refused_drill_command_is_audited_once_and_ends_the_request(cspool):
    await cspool.request_drill("DR-1", [DRILL], "ops")
    cid = await cspool.queue_command("drill-start", "DR-1", "cli")
    result = await cspool.refuse_drill_command("DR-1", "continuity mode is continuity", command="drill-start",
                                               command_id=cid, mode="continuity", event_id="CE-1", actor="cli")
    assert result == "refused: continuity mode is continuity"
    d = await cspool.get_drill("DR-1")
    assert (d["state"], d["end_reason"]) == ("refused", "continuity mode is continuity")
    assert (await cspool.get_command(cid))["result"] == result
    assert await cspool.pending_commands() == []
    # a drill-end for a drill that is not running: audited, the drill row left as it is
    end = await cspool.queue_command("drill-end", "DR-1", "cli")
    await cspool.refuse_drill_command("DR-1", "drill DR-1 is not running", command="drill-end",
                                      command_id=end, mode="normal", event_id="", actor="cli")
    assert (await cspool.get_drill("DR-1"))["state"] == "refused"
    assert [(r["action"], r["result"], r["detail"]) for r in await cspool.drill_audit_rows("DR-1")] == [
        ("drill_start", "refused", "DR-1 continuity mode is continuity"),
        ("drill_end", "refused", "DR-1 drill DR-1 is not running")]
    audit = await cspool.continuity_audit(10)
    assert sorted((a["src"], a["dst"], a["command_id"]) for a in audit) == [
        ("continuity", "continuity", cid), ("normal", "normal", end)]


async def test_cancel_drill_refuses_a_request_and_leaves_a_running_drill(cspool):
    await cspool.request_drill("DR-1", [DRILL], "ops")
    await cspool.cancel_drill("DR-1", "not started: the gateway did not answer")
    d = await cspool.get_drill("DR-1")
    assert (d["state"], d["end_reason"]) == ("refused", "not started: the gateway did not answer")
    assert d["ended_at"] is not None
    await cspool.request_drill("DR-2", [DRILL], "ops")
    cid = await cspool.queue_command("drill-start", "DR-2", "cli")
    await cspool.start_drill("DR-2", command_id=cid, mode="normal", event_id="", actor="cli")
    await cspool.cancel_drill("DR-2", "late")
    assert (await cspool.get_drill("DR-2"))["state"] == "running"
    with pytest.raises(ValueError):                    # refused: it is not waiting to start
        await cspool.start_drill("DR-1", command_id=cid, mode="normal", event_id="", actor="cli")


async def test_release_drill_holds_releases_or_hands_them_to_an_event(cspool):
    ids = await _held(cspool, 2)
    assert await cspool.count_drill_held() == 2 and await cspool.count_held() == 0
    assert await cspool.release_drill_holds("drill-leftover", to_continuity=True) == 2
    assert await cspool.count_drill_held() == 0 and await cspool.count_held() == 2
    for qid in ids:
        m = await cspool.get(qid)
        assert (m.state.value, m.hold_reason) == ("hold", "continuity")
    more = await _held(cspool, 1)
    assert await cspool.release_drill_holds("drill-leftover") == 1
    m = await cspool.get(more[0])
    assert (m.state.value, m.hold_reason) == ("incoming", "")
    facts = await cspool.drill_message(more[0], DRILL)
    assert facts["replay_id"] == "drill-leftover" and facts["released_at"] is not None
    assert facts["held_at"] is None
    assert await cspool.count_held() == 2                 # the continuity holds stay


async def test_drill_message_reports_each_phase_of_a_test_message(cspool):
    assert await cspool.drill_message("NOSUCHQUEUEID", DRILL) is None
    [qid] = await _held(cspool, 1, filing=True)
    f = await cspool.drill_message(qid, DRILL)
    assert (f["state"], f["hold_reason"], f["replay_id"], f["released_at"]) == ("hold", "drill", "", None)
    assert f["arrived_at"] <= f["held_at"] <= time.time() + 1
    assert (f["rcpt"]["state"], f["rcpt"]["attempts"]) == ("pending", 0)
    assert f["inbox"]["id"] and f["inbox"]["filed_at"] == pytest.approx(time.time(), abs=30)
    shown = await cspool.get_mailbox_message(DRILL, f["inbox"]["id"], folder="inbox", include_deleted=False)
    assert shown["data"].startswith(b"Subject: h0")
    assert (await cspool.drill_message(qid, "someone@example.org"))["inbox"] is None
    await cspool.release_drill_holds("DR-1")
    [claim] = await cspool.claim_due(1)
    await cspool.record_attempt(qid, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx.example.org")],
                                time.time(), token=claim.token)
    f = await cspool.drill_message(qid, DRILL)
    assert (f["state"], f["replay_id"], f["rcpt"]["state"], f["rcpt"]["attempts"]) == ("delivered", "DR-1",
                                                                                      "delivered", 1)
    assert f["rcpt"]["remote_host"] == "mx.example.org" and f["rcpt"]["updated_at"] >= f["released_at"]


async def test_a_drill_write_at_a_taken_over_epoch_is_fenced(pg_dsn):
    from spool.pg import LeaseLost, PgSpool
    a = await PgSpool.open(pg_dsn, node="node-a")
    b = await PgSpool.open(pg_dsn, node="node-b")
    try:
        e1 = await a.acquire_lease(ttl=30)
        await a.request_drill("DR-1", [DRILL], "ops")
        cid = await a.queue_command("drill-start", "DR-1", "cli")
        await a.transaction(lambda c: c.execute(
            "UPDATE leases SET expires_at = clock_timestamp() - interval '1 second'"))
        e2 = await b.acquire_lease(ttl=30)
        assert e2 == e1 + 1
        kw = {"command_id": cid, "mode": "normal", "event_id": "", "actor": "cli"}
        with pytest.raises(LeaseLost):
            await a.start_drill("DR-1", epoch=e1, **kw)
        with pytest.raises(LeaseLost):
            await a.refuse_drill_command("DR-1", "x", command="drill-start", epoch=e1, **kw)
        await _held(a, 1)
        with pytest.raises(LeaseLost):
            await a.release_drill_holds("drill-leftover", epoch=e1)
        assert a.fenced_refused == 3
        assert (await a.get_drill("DR-1"))["state"] == "requested"          # nothing written
        assert (await a.get_command(cid))["done_at"] is None
        assert await a.continuity_audit(10) == [] and await a.drill_audit_rows("DR-1") == []
        assert await a.count_drill_held() == 1
        row = await b.start_drill("DR-1", epoch=e2, **kw)                    # the leader's write
        assert row["state"] == "running" and row["node"] == "node-b" and row["age"] == 0.0
        with pytest.raises(LeaseLost):
            await a.end_drill("DR-1", "stale", actor="cli", epoch=e1)
        assert a.fenced_refused == 4 and (await a.running_drill())["id"] == "DR-1"
        assert [(r["node"], r["epoch"]) for r in await b.continuity_audit(10)] == [("node-b", e2)]
        assert await b.end_drill("DR-1", "ended by cli", actor="cli", epoch=e2) == 1
    finally:
        await a.close()
        await b.close()
