"""The admin console's verbs (spool.console_verbs.ConsoleVerbs, spool.pg.console.PgConsoleVerbs) on
both backends: a real SQLite spool and a real PostgreSQL 15 (fresh database per test). State is
read back through the verbs. (First cut: the queue page, the timeline and a drill's life.)"""
from __future__ import annotations

import time


from spool import NewMessage


async def test_queue_search_hold_release_flush_delete(cspool):
    qid = await cspool.commit(NewMessage("a@remote.test", ["Erin@example.org"], b"Subject: x\r\n\r\nx\r\n"))
    rows, total = await cspool.search_queue(text="erin@")
    assert total == 1 and rows[0]["queue_id"] == qid and rows[0]["first_rcpt"] == "Erin@example.org"
    assert (await cspool.search_queue(text="nobody"))[1] == 0
    assert await cspool.hold_message(qid) == "incoming"
    assert (await cspool.get(qid)).state.value == "hold"
    await cspool.release_message(qid)
    assert (await cspool.get(qid)).state.value == "incoming"
    assert await cspool.flush_queue(qid) == 1
    assert await cspool.delete_message(qid) is True
    assert await cspool.get(qid) is None


async def test_timeline_and_a_drill(cspool):
    now = time.time()
    await cspool.record_probe("smtp", True, now, 0.01, "ok", True)
    t = await cspool.timeline(now - 60, now + 60)
    assert t["probes"] == ["smtp"] and len(t["results"]) == 1 and t["total"] == 0
    await cspool.request_drill("DR-1", ["erin@example.org"], "cli")
    assert (await cspool.get_drill("DR-1"))["state"] == "requested"
    cid = await cspool.queue_command("drill-start", "DR-1", "cli")
    row = await cspool.start_drill("DR-1", command_id=cid, mode="normal", event_id="", actor="cli")
    assert row["state"] == "running" and row["recipients"] == ["erin@example.org"]
    assert (await cspool.running_drill())["id"] == "DR-1"
    assert (await cspool.get_command(cid))["result"] == "ok: drill DR-1 running"
    assert await cspool.end_drill("DR-1", "ended by cli", actor="cli") == 0
    assert (await cspool.get_drill("DR-1"))["state"] == "ended"
    assert [r["action"] for r in await cspool.drill_audit_rows("DR-1")] == ["drill_start", "drill_end"]
    assert await cspool.count_drill_held() == 0
    assert [d["id"] for d in await cspool.recent_drills()] == ["DR-1"]
