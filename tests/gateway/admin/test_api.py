"""The admin Starlette app in process, over httpx's ASGI transport, backed by the gateway's real
objects: a spool in tmp_path, the queue manager, and the continuity controller and probe runner
from gateway.continuity.wiring (its SMTP probe aims at a closed port, so it really fails)."""
from __future__ import annotations

import io

import httpx
import pytest

from gateway.admin import AdminContext, build_app
from gateway.admin.api import CONTINUITY_OFF, NO_TOKEN
from gateway.app import build_resolver
from gateway.config import parse
from gateway.continuity import wiring
from gateway.delivery.qmgr import QueueManager
from gateway.delivery.transport import SmtpTransport
from gateway.logs import make_logger
from gateway.router import Router
from spool import Spool
from spool.commit import NewMessage
from tests.support.peers import free_port

TOKEN = "s3cret-admin-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


class Gateway:
    """The live objects the admin API reads, built as gateway.app builds them."""

    def __init__(self, tmp_path, mode: str, token: str):
        self.dead_port = free_port()
        self.cfg = parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                          "routing": {"default_smarthost": f"[127.0.0.1]:{self.dead_port}"},
                          "probes": {"smtp_timeout": 2.0}, "continuity": {"mode": mode},
                          "admin": {"token": token}}, "test")
        self.token, self.listening = token, True

    async def __aenter__(self):
        cfg, log = self.cfg, make_logger(stream=io.StringIO())
        self.spool = await Spool.open(cfg.spool_path)
        self.transport = SmtpTransport("gw.test")
        self.qmgr = QueueManager(cfg, self.spool, Router(cfg), build_resolver(cfg), self.transport, log)
        self.controller = self.runner = None
        if cfg.continuity.mode != "off":
            self.controller, self.runner = wiring.build(cfg, self.spool, self.qmgr, self.qmgr.resolver, log)
            await self.controller.start()
        ctx = AdminContext(token=self.token, spool=self.spool, qmgr=self.qmgr,
                           listening=lambda: self.listening, controller=self.controller, runner=self.runner)
        self.http = httpx.AsyncClient(transport=httpx.ASGITransport(build_app(ctx)), base_url="http://admin")
        return self

    async def __aexit__(self, *exc):
        await self.http.aclose()
        await self.transport.close()
        await self.spool.close()


@pytest.fixture
async def gw(tmp_path):
    async with Gateway(tmp_path, "alert-only", TOKEN) as g:
        yield g


async def test_api_refuses_missing_or_wrong_token(gw):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"},
                    {"Authorization": f"Bearer {TOKEN}x"}):
        for path in ("/api/queue", "/api/probes", "/api/continuity"):
            r = await gw.http.get(path, headers=headers)
            assert r.status_code == 401, (path, headers)
            assert r.headers["www-authenticate"] == "Bearer"
        r = await gw.http.post("/api/continuity/start", headers=headers, json={"reason": "x"})
        assert r.status_code == 401
    assert gw.controller.state.mode.value == "normal"
    r = await gw.http.get("/api/queue", headers=AUTH)
    assert r.status_code == 200
    assert r.json() == {s: 0 for s in ("incoming", "active", "deferred", "hold", "delivered",
                                       "bounced", "corrupt")}


async def test_empty_token_refuses_api_but_serves_healthz_and_metrics(tmp_path):
    async with Gateway(tmp_path, "automatic", "") as g:
        for headers in ({}, {"Authorization": "Bearer "}):
            r = await g.http.get("/api/continuity", headers=headers)
            assert (r.status_code, r.json()) == (503, {"error": NO_TOKEN})
        r = await g.http.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "mode": "normal"})
        assert (await g.http.get("/metrics")).status_code == 200


async def test_continuity_commands_change_state_or_are_refused_with_409(gw):
    r = await gw.http.get("/api/continuity", headers=AUTH)
    assert r.status_code == 200 and r.json()["mode"] == "normal"
    r = await gw.http.post("/api/continuity/confirm", headers=AUTH, json={})
    assert (r.status_code, r.json()) == (409, {"error": "nothing awaits confirmation"})
    r = await gw.http.post("/api/continuity/stop", headers=AUTH)
    assert (r.status_code, r.json()) == (409, {"error": "no continuity event to stop (mode normal)"})

    r = await gw.http.post("/api/continuity/start", headers=AUTH,
                           json={"reason": "exchange patching", "actor": "alice"})
    assert r.status_code == 200
    s = r.json()
    assert (s["mode"], s["origin"], s["reason"]) == ("continuity", "admin", "exchange patching")
    assert s["event_id"] and gw.qmgr.hold_downstream is True
    r = await gw.http.post("/api/continuity/start", headers=AUTH, json={"reason": "again"})
    assert (r.status_code, r.json()) == (409, {"error": "a continuity event (admin) is already running"})

    r = await gw.http.post("/api/continuity/stop", headers=AUTH, json={"actor": "alice"})
    assert r.status_code == 200 and r.json()["mode"] == "recovering"
    assert gw.qmgr.hold_downstream is False

    r = await gw.http.post("/api/continuity/maintenance/start", headers=AUTH, json={"reason": "CU23"})
    assert r.status_code == 200
    assert (r.json()["mode"], r.json()["origin"]) == ("continuity", "maintenance")
    r = await gw.http.post("/api/continuity/maintenance/stop", headers=AUTH)
    assert r.status_code == 200 and r.json()["mode"] == "recovering"
    r = (await gw.http.get("/api/continuity", headers=AUTH)).json()
    assert r["mode"] == "recovering" and r["replay"]["released"] == 0


async def test_bad_commands_and_bodies(gw):
    for path in ("/api/continuity/reboot", "/api/continuity/maintenance/confirm"):
        r = await gw.http.post(path, headers=AUTH, json={})
        assert r.status_code == 404, path
    r = await gw.http.post("/api/continuity/start", headers=AUTH, content=b"{not json")
    assert (r.status_code, r.json()) == (400, {"error": "body must be JSON"})
    r = await gw.http.post("/api/continuity/start", headers=AUTH, json={"reason": 5})
    assert r.status_code == 400
    assert (await gw.http.get("/api/continuity/start", headers=AUTH)).status_code == 405
    assert gw.controller.state.mode.value == "normal"


async def test_continuity_off_answers_404(tmp_path):
    async with Gateway(tmp_path, "off", TOKEN) as g:
        for method, path in (("GET", "/api/continuity"), ("POST", "/api/continuity/start"),
                             ("POST", "/api/continuity/maintenance/start")):
            r = await g.http.request(method, path, headers=AUTH)
            assert (r.status_code, r.json()) == (404, {"error": CONTINUITY_OFF}), path
            assert (await g.http.request(method, path)).status_code == 401
        assert (await g.http.get("/api/probes", headers=AUTH)).json() == {}
        assert (await g.http.get("/healthz")).json() == {"status": "ok", "mode": "off"}
        text = (await g.http.get("/metrics")).text
        assert "mailgate_queue_messages" in text and "mailgate_continuity_state" not in text


async def test_probes_latest_and_history(gw):
    assert (await gw.http.get("/api/probes", headers=AUTH)).json() == {}
    await gw.runner.run_once()
    await gw.runner.run_once()
    name = f"smtp:[127.0.0.1]:{gw.dead_port}"
    latest = (await gw.http.get("/api/probes", headers=AUTH)).json()
    assert list(latest) == [name]
    assert latest[name]["ok"] is False and latest[name]["critical"] is True
    # the API reports what the probe measured (the runner's latest result), whatever the speed
    measured = gw.runner.latest()[name]
    assert (latest[name]["latency"], latest[name]["at"]) == (measured.latency, measured.at), latest
    hist = (await gw.http.get("/api/probes?history=1", headers=AUTH)).json()
    assert [h["probe"] for h in hist] == [name, name]
    assert hist[0]["at"] <= hist[1]["at"] == latest[name]["at"]


async def test_healthz_503_when_listener_down_or_spool_closed(gw):
    assert (await gw.http.get("/healthz")).status_code == 200
    gw.listening = False
    r = await gw.http.get("/healthz")
    assert r.status_code == 503
    assert r.json() == {"status": "unavailable", "mode": "normal", "problems": ["smtp listener down"]}
    gw.listening = True
    await gw.spool.close()
    r = await gw.http.get("/healthz")
    assert r.status_code == 503 and r.json()["problems"][0].startswith("spool: ")
    gw.spool = await Spool.open(gw.cfg.spool_path)   # for the fixture's teardown


async def test_metrics_report_live_values(gw):
    gw.qmgr.stats.update(delivered=7, deferred=3, bounced=1, held=4, dsn=2)
    await gw.runner.run_once()
    await gw.http.post("/api/continuity/start", headers=AUTH, json={"reason": "test"})
    r = await gw.http.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=")
    lines = set(r.text.splitlines())
    for want in ('mailgate_continuity_state{mode="continuity"} 1.0',
                 'mailgate_continuity_state{mode="normal"} 0.0',
                 'mailgate_continuity_awaiting_confirm 0.0',
                 'mailgate_recipients_total{outcome="delivered"} 7.0',
                 'mailgate_recipients_total{outcome="deferred"} 3.0',
                 'mailgate_recipients_total{outcome="bounced"} 1.0',
                 'mailgate_recipients_total{outcome="held"} 4.0',
                 'mailgate_dsn_sent_total 2.0',
                 'mailgate_queue_messages{state="hold"} 0.0',
                 'mailgate_replay_released_messages 0.0', 'mailgate_replay_remaining_messages 0.0',
                 'mailgate_replay_rate_limit_messages_per_second 50.0',
                 f'mailgate_probe_ok{{critical="true",probe="smtp:[127.0.0.1]:{gw.dead_port}"}} 0.0'):
        assert want in lines, want
    assert any(l.startswith("mailgate_probe_latency_seconds{") for l in lines)
    gw.qmgr.stats["delivered"] += 1            # read at scrape time, not counted twice
    assert 'mailgate_recipients_total{outcome="delivered"} 8.0' in (await gw.http.get("/metrics")).text


async def test_metrics_report_the_journal(gw):
    """Journal filings and failures from the queue manager, and the indexer's backlog from the
    spool (an entry filed at delivery waits for the indexer)."""
    from spool import journal
    from spool.commit import NewMessage, insert_message
    gw.qmgr.stats.update(journaled=5, journal_failed=1)
    qid = await gw.spool.write(insert_message, NewMessage("p@remote.test", ("erin@example.org",), b"x"))
    await gw.spool.write(journal.file_delivered, journal.JournalEntry(
        qid, {"erin@example.org": "erin@example.org"}, "p@remote.test", 1))
    lines = set((await gw.http.get("/metrics")).text.splitlines())
    for want in ("mailgate_journal_filed_messages_total 5.0", "mailgate_journal_failed_messages_total 1.0",
                 "mailgate_journal_pending_messages 1.0"):
        assert want in lines, want


async def test_replay_is_not_finished_while_released_mail_is_still_queued(gw):
    """Product bug (fixed): the controller counted messages in flight before releasing held mail,
    so a replay releasing everything in one tick ended at once: "normal" with the mail unsent."""
    ids = [await gw.spool.commit(NewMessage("a@remote.test", ("bob@example.com",), b"Subject: x\r\n\r\nx\r\n"))
           for _ in range(3)]
    await gw.spool.write(lambda c: c.executemany(
        "UPDATE messages SET state='hold', hold_reason='continuity', held_at=0 WHERE queue_id=?",
        [(q,) for q in ids]))
    assert (await gw.http.post("/api/continuity/start", headers=AUTH)).status_code == 200
    assert (await gw.http.post("/api/continuity/stop", headers=AUTH)).json()["mode"] == "recovering"
    c = gw.controller    # one step of the replay a full tick later: tokens for all 3 (qmgr not running)
    await c._replay_step(c.clock() + c.cfg.tick)
    s = (await gw.http.get("/api/continuity", headers=AUTH)).json()
    assert (await gw.http.get("/api/queue", headers=AUTH)).json()["incoming"] == 3
    assert (s["replay"]["released"], s["replay"]["remaining"]) == (3, 0)
    assert s["mode"] == "recovering"
