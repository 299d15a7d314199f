"""The CLI on a PostgreSQL spool: `mailgate queue list|show` read the shared queue (as processes,
against messages committed and moved by PgSpool), `mailgate mailbox list|search` read the
shared continuity mailboxes, none of them creating a spool.db (the queue's changes run on
PostgreSQL: tests/gateway/test_cli_queue_pg.py). Also doctor's disk check,
which must not open a SQLite spool beside a cluster."""
from __future__ import annotations

import asyncio
import json
import time

from gateway import config as config_mod
from gateway.doctor_local import check_disk
from spool import NewMessage, QueueState, RcptState
from spool.mailbox import FilingEntry
from spool.pg import PgSpool
from spool.transitions import RcptOutcome
from tests.support.cli import mailgate, pg_config


async def seed(dsn: str) -> dict[str, str]:
    """Three messages by node gw-a: 'queued' (incoming, 2 recipients), 'deferred' (one soft
    failure), 'delivered'. Returns {name: queue ID}."""
    a = await PgSpool.open(dsn, node="gw-a")
    try:
        ids = {"queued": await a.commit(NewMessage(
                   mail_from="alice@remote.test", rcpt_tos=("bob@example.com", "carol@example.com"),
                   data=b"Subject: first\r\nFrom: alice@remote.test\r\n\r\nbody one\r\n",
                   client_addr="192.0.2.7", client_helo="mx.remote.test"))}
        for name in ("deferred", "delivered"):
            ids[name] = await a.commit(NewMessage(mail_from="", rcpt_tos=(f"{name}@example.com",),
                                                  data=f"Subject: {name}\r\n\r\nx\r\n".encode()))
        claims = {c.queue_id: c for c in await a.claim_due(10)}
        soft = RcptOutcome(0, RcptState.PENDING, 451, "4.4.1 try later", "mx.example.com")
        await a.record_attempt(ids["deferred"], [soft], time.time() + 3600,
                               token=claims[ids["deferred"]].token)
        ok = RcptOutcome(0, RcptState.DELIVERED, 250, "ok", "mx.example.com")
        await a.record_attempt(ids["delivered"], [ok], time.time(),
                               token=claims[ids["delivered"]].token)
        await a.move(ids["queued"], QueueState.ACTIVE, QueueState.INCOMING,
                     token=claims[ids["queued"]].token)
        return ids
    finally:
        await a.close()


def test_queue_list_and_show_read_the_postgresql_queue(pg_dsn, tmp_path):
    ids = asyncio.run(seed(pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    out = mailgate(cfg, "queue", "list", "--json")
    assert out.returncode == 0, out.stderr
    listed = {m["queue_id"]: m for m in json.loads(out.stdout)}
    assert set(listed) == {ids["queued"], ids["deferred"]}          # terminal ones left out
    q = listed[ids["queued"]]
    assert (q["state"], q["mail_from"], q["attempts"]) == ("incoming", "alice@remote.test", 0)
    assert q["recipients"] == [{"address": "bob@example.com", "state": "pending"},
                               {"address": "carol@example.com", "state": "pending"}]
    d = listed[ids["deferred"]]
    assert (d["state"], d["attempts"], d["last_error"]) == ("deferred", 1, "451 4.4.1 try later")
    assert abs(q["arrived_at"] - time.time()) < 60

    every = json.loads(mailgate(cfg, "queue", "list", "--all", "--json").stdout)
    assert [m["queue_id"] for m in every] == [ids["queued"], ids["deferred"], ids["delivered"]]
    assert every[2]["state"] == "delivered"

    text = mailgate(cfg, "queue", "list")
    assert text.returncode == 0
    assert ids["queued"] in text.stdout and "<alice@remote.test>" in text.stdout
    assert f"{ids['deferred']} deferred " in text.stdout, text.stdout
    assert text.stdout.splitlines()[-1].startswith("-- ")
    assert "incoming: 1" in text.stdout and "deferred: 1" in text.stdout \
        and "delivered: 1" in text.stdout

    show = mailgate(cfg, "queue", "show", ids["queued"])
    assert show.returncode == 0, show.stderr
    assert f"queue_id:     {ids['queued']}" in show.stdout
    assert "client:       192.0.2.7 (mx.remote.test)" in show.stdout
    assert "rcpt:         carol@example.com [pending]" in show.stdout
    assert "Subject: first" in show.stdout and "body one" not in show.stdout   # headers only
    gone = mailgate(cfg, "queue", "show", "NOSUCHID0000000")
    assert gone.returncode == 1 and "no such message" in gone.stderr
    assert not (tmp_path / "data").exists()          # no SQLite spool was made beside it


# queue flush|hold|release|delete run on PostgreSQL now: tests/gateway/test_cli_queue_pg.py;
# users and admins too: tests/gateway/test_cli_accounts_pg.py; drill below and tests/e2e/test_pg_drill.py


async def file_two(dsn: str) -> None:
    s = await PgSpool.open(dsn, node="gw-a")
    try:
        for qid, subject, body in (("MBXQ1", "Quarterly figures", "the numbers"),
                                   ("MBXQ2", "Lunch", "pizza on friday")):
            await s.file_message(FilingEntry(
                queue_id=qid, data=f"Subject: {subject}\r\n\r\n{body}\r\n".encode(),
                mailboxes={"bob@example.com": "bob@example.com"}, envelope_from="a@remote.test",
                from_header="Alice <a@remote.test>", subject=subject, body_text=body))
    finally:
        await s.close()


def test_mailbox_list_and_search_read_the_postgresql_mailboxes(pg_dsn, tmp_path):
    asyncio.run(file_two(pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    out = mailgate(cfg, "mailbox", "list", "Bob@Example.com")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert [ln.split()[3] for ln in lines[:-1]] == ["MBXQ2", "MBXQ1"]       # newest first
    assert "Quarterly figures" in lines[1] and lines[-1] == "-- 2 message(s) in bob@example.com"
    found = mailgate(cfg, "mailbox", "search", "bob@example.com", "pizza")
    assert found.returncode == 0, found.stderr
    assert "MBXQ2" in found.stdout and "MBXQ1" not in found.stdout
    assert found.stdout.splitlines()[-1] == "-- 1 message(s) in bob@example.com"
    assert not (tmp_path / "data").exists()          # no SQLite spool was made beside it


def test_mailbox_list_says_so_when_postgresql_is_unreachable(tmp_path):
    cfg = pg_config(tmp_path, "host=127.0.0.1 port=1 dbname=mail user=gw connect_timeout=2")
    out = mailgate(cfg, "mailbox", "list", "bob@example.com")
    assert out.returncode == 1 and "cannot reach the PostgreSQL spool" in out.stderr
    assert "Traceback" not in out.stderr


def test_doctor_disk_check_opens_no_sqlite_spool_on_postgresql(tmp_path):
    (tmp_path / "data").mkdir()
    cfg = config_mod.load(pg_config(tmp_path, "host=127.0.0.1 port=1 dbname=mail user=gw"),
                          check_files=False)
    [c] = check_disk(cfg)
    assert 'spool volume not checked: spool.backend = "postgresql"' in c.detail
    assert list((tmp_path / "data").iterdir()) == []


async def _probes_and_state(dsn: str) -> None:
    s = await PgSpool.open(dsn, node="node-a")
    try:
        await s.record_probe("smtp-exchange", False, time.time(), 0.02, "connection refused", True)
        await s.save_transition(mode="degraded", since=time.time(), origin="engine", reason="probe failed",
                                awaiting_confirm=False, event_id="", src="normal", actor="engine")
    finally:
        await s.close()


def test_continuity_status_probes_and_a_queued_command_run_on_postgresql(pg_dsn, tmp_path):
    asyncio.run(_probes_and_state(pg_dsn))
    cfg = pg_config(tmp_path, pg_dsn)
    out = mailgate(cfg, "probes")
    assert out.returncode == 0, out.stderr
    assert "FAIL" in out.stdout and "smtp-exchange (critical)  [node-a]" in out.stdout
    out = mailgate(cfg, "continuity", "status")
    assert out.returncode == 0, out.stderr
    assert "mode:      degraded" in out.stdout and "normal -> degraded" in out.stdout
    out = mailgate(cfg, "continuity", "start", "--reason", "test", "--wait", "0.5")
    assert out.returncode == 1 and "queued as command" in out.stdout, out.stderr   # no gateway runs
    out = mailgate(cfg, "continuity", "status")
    assert "start by" in out.stdout and "pending, valid until" in out.stdout
    assert not (tmp_path / "spool.db").exists()


async def _drills(dsn: str) -> None:
    """An ended drill DR-OLD and a running one DR-NOW (for drill@example.com), as a leader
    writes them, with one message on drill hold."""
    s = await PgSpool.open(dsn, node="node-a")
    try:
        for drill_id in ("DR-OLD", "DR-NOW"):
            await s.request_drill(drill_id, ["drill@example.com"], "tester")
            cid = await s.queue_command("drill-start", drill_id, "cli")
            await s.start_drill(drill_id, command_id=cid, mode="normal", event_id="", actor="cli")
            if drill_id == "DR-OLD":
                await s.end_drill(drill_id, "ended by cli", actor="cli")
        await s.commit(NewMessage("a@remote.test", ("drill@example.com",), b"Subject: d\r\n\r\nd\r\n"))
        [claim] = await s.claim_due(1)
        await s.record_attempt(claim.queue_id, [], time.time(), hold=True, token=claim.token,
                               hold_reason="drill")
    finally:
        await s.close()


def test_drill_status_and_stop_run_on_postgresql(pg_dsn, tmp_path):
    cfg = pg_config(tmp_path, pg_dsn)
    out = mailgate(cfg, "drill", "status")
    assert out.returncode == 0, out.stderr
    assert "drill:     none running" in out.stdout and "held:      0 message(s)" in out.stdout
    out = mailgate(cfg, "drill", "stop")
    assert out.returncode == 1 and out.stdout.strip() == "no drill is running", out
    asyncio.run(_drills(pg_dsn))
    out = mailgate(cfg, "drill", "status")
    assert out.returncode == 0, out.stderr
    assert "drill:     DR-NOW for drill@example.com, since " in out.stdout, out.stdout
    assert "held:      1 message(s) on drill hold" in out.stdout
    assert "DR-NOW  running" in out.stdout and "DR-OLD  ended     ended by cli" in out.stdout
    out = mailgate(cfg, "drill", "stop", "--wait", "0.5")         # no gateway applies it
    assert out.returncode == 1 and "not applied: the gateway did not answer" in out.stdout, out
    out = mailgate(cfg, "continuity", "status")
    assert "drill-end by cli" in out.stdout and "pending, valid until" in out.stdout, out.stdout
    assert not (tmp_path / "data").exists()


def test_drill_on_an_unreachable_postgresql_is_one_line(tmp_path):
    cfg = pg_config(tmp_path, "host=127.0.0.1 port=1 dbname=mail user=gw")
    out = mailgate(cfg, "drill", "status")
    assert out.returncode == 1 and "cannot reach the PostgreSQL spool at 127.0.0.1:1/mail" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
