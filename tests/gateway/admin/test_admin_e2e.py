"""The admin API on the gateway as a process: uvicorn in the gateway's own loop on a real port,
beside the SMTP listener, a real downstream sink. An admin starts an event over HTTP, mail is
held (seen in /metrics and /api/queue), stops it, the held mail is replayed; SIGTERM still goes
through the gateway's own shutdown path (uvicorn must not take the signal)."""
from __future__ import annotations

import json
import smtplib
import time
import uuid

import httpx
import pytest

from tests.conftest import config_toml
from tests.support.peers import free_port, wait_for

pytestmark = pytest.mark.e2e

TOKEN = "e2e-admin-token"
ADMIN = """
[admin]
listen = "127.0.0.1:{port}"
token = "{token}"
[continuity]
mode = "automatic"
enter_after = 30.0
hold_down = 30.0
tick = 0.2
replay_rate = 200.0
[probes]
smtp_interval = 0.5
smtp_timeout = 1.0
canary_rcpt = "postmaster@example.com"
"""


def metric(text: str, line_start: str) -> float:
    for line in text.splitlines():
        if line.startswith(line_start + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{line_start} not in /metrics:\n{text}")


def send(port: int, n: int) -> list[str]:
    tokens = []
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as c:
        for _ in range(n):
            tok = f"adm-{uuid.uuid4().hex}"
            c.sendmail("alice@remote.test", ["bob@example.com"], f"Subject: {tok}\r\n\r\n{tok}\r\n".encode())
            tokens.append(tok)
    return tokens


def test_admin_api_drives_an_event_on_the_real_port(peers, tmp_path):
    sink = peers.sink(name="exchange")
    port, admin_port = free_port(), free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}",
                                   continuity=None, extra=ADMIN.format(port=admin_port, token=TOKEN)), port)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{admin_port}", timeout=10) as http:
        r = http.get("/healthz")
        assert (r.status_code, r.json()) == (200, {"status": "ok", "mode": "normal"})
        assert http.get("/api/continuity").status_code == 401
        probe = f'mailgate_probe_ok{{critical="true",probe="smtp:[127.0.0.1]:{sink.port}"}}'
        wait_for(lambda: probe in http.get("/metrics").text, 10, what="first probe result in /metrics")
        assert metric(http.get("/metrics").text, probe) == 1.0

        r = http.post("/api/continuity/start", headers=auth, json={"reason": "e2e outage drill", "actor": "ops"})
        assert r.status_code == 200, r.text
        assert (r.json()["mode"], r.json()["origin"]) == ("continuity", "admin")
        assert http.post("/api/continuity/start", headers=auth, json={}).status_code == 409
        text = http.get("/metrics").text
        assert metric(text, 'mailgate_continuity_state{mode="continuity"}') == 1.0
        assert metric(text, 'mailgate_continuity_state{mode="normal"}') == 0.0

        tokens = send(port, 3)
        wait_for(lambda: http.get("/api/queue", headers=auth).json()["hold"] == 3, 15, what="3 held")
        text = http.get("/metrics").text
        assert metric(text, 'mailgate_queue_messages{state="hold"}') == 3.0
        assert metric(text, 'mailgate_recipients_total{outcome="held"}') == 3.0
        assert sink.count() == 0

        r = http.post("/api/continuity/stop", headers=auth, json={"actor": "ops"})
        assert r.status_code == 200 and r.json()["mode"] == "recovering"
        wait_for(lambda: http.get("/api/continuity", headers=auth).json()["mode"] == "normal", 20,
                 what="replay finished")
        # replay finished: nothing held or in flight, the live sink has every message
        assert sorted(t for _e, d in sink.messages() for t in tokens if t.encode() in d) == sorted(tokens)
        text = http.get("/metrics").text
        assert metric(text, 'mailgate_recipients_total{outcome="delivered"}') == 3.0
        assert metric(text, 'mailgate_replay_released_messages') == 3.0
        assert metric(text, 'mailgate_queue_messages{state="delivered"}') == 3.0

    t0 = time.monotonic()
    gw.p.terminate()
    # our shutdown path ran to its end: exit status 0 (uvicorn taking SIGTERM, or a crash on the
    # way out, exits otherwise) within the wait's bound, and the spool is left as it should be
    assert gw.p.wait(15) == 0
    print(f"gateway with admin server stopped in {time.monotonic() - t0:.2f}s after SIGTERM")
    assert "event='stopped'" in gw.log_text()
    listing = json.loads(gw.cli("queue", "list", "--all", "--json").stdout)
    assert sorted((m["state"], [r["state"] for r in m["recipients"]]) for m in listing) == \
        [("delivered", ["delivered"])] * 3, listing
