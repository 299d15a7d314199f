"""Metric names against Prometheus' naming conventions (prometheus.io/docs/practices/naming),
checked on what a running gateway process actually exposes at /metrics (prometheus_client adds
``_total`` to counters itself, so the source names alone would mislead).

The gateway runs with continuity on and a live sink as Exchange, so the continuity, replay and
probe families are present. Rules: the ``mailgate_`` prefix; snake_case names and labels; HELP on
every family; counter samples end in ``_total`` and nothing else does; a family whose HELP speaks
of a duration ends in ``_seconds``, of a point in time in ``_timestamp_seconds``, of a size in
``_bytes``; no non-base unit (milliseconds, minutes, kilobytes, percent) anywhere; a gauge says its
unit in its last word (``_seconds``, ``_bytes``, ``_messages``, ``_per_second``, ...) unless its
HELP says it is a 0/1 flag (it starts with "1 ")."""
from __future__ import annotations

import re

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import config_toml, fast_continuity
from tests.support.peers import free_port, wait_for

pytestmark = pytest.mark.e2e

SNAKE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")
UNITS = ("_seconds", "_bytes", "_messages", "_recipients", "_per_second", "_ratio", "_info")
NON_BASE = re.compile(r"_(milli|micro|nano)?(ms|us|minutes?|hours?|days?|kb|mb|gb|kilobytes|"
                      r"megabytes|percent|millis|milliseconds|microseconds)(_|$)")


def problems(families) -> list[str]:
    """Every rule a family breaks, as "NAME: rule" lines (empty: all good)."""
    out = []
    for f in families:
        name, help_ = f.name, (f.documentation or "").lower()
        samples = {s.name for s in f.samples}
        if not name.startswith("mailgate_"):
            out.append(f"{name}: no mailgate_ prefix")
        if not SNAKE.match(name):
            out.append(f"{name}: not snake_case")
        if not help_.strip():
            out.append(f"{name}: no HELP")
        if NON_BASE.search(name):
            out.append(f"{name}: not a base unit")
        for s in f.samples:
            for label in s.labels:
                if not SNAKE.match(label):
                    out.append(f"{name}: label {label!r} not snake_case")
        if f.type == "counter":
            if any(not s.endswith("_total") for s in samples if not s.endswith("_created")):
                out.append(f"{name}: counter sample without _total: {sorted(samples)}")
        elif any(s.endswith("_total") for s in samples):
            out.append(f"{name}: a {f.type} ends in _total")
        base = name.removesuffix("_total")
        if re.search(r"\b(duration|latency|how long|took)\b", help_) and not base.endswith("_seconds"):
            out.append(f"{name}: a duration without _seconds")
        if re.search(r"\b(unix time|timestamp|when)\b", help_) and not base.endswith("_timestamp_seconds"):
            out.append(f"{name}: a point in time without _timestamp_seconds")
        if re.search(r"\b(bytes|size)\b", help_) and not base.endswith("_bytes"):
            out.append(f"{name}: a size without _bytes")
        if f.type == "gauge" and not help_.startswith("1 ") and not base.endswith(UNITS):
            out.append(f"{name}: a gauge without its unit ({', '.join(UNITS)})")
    return out


def test_rules_catch_bad_names():
    """The rules themselves: each bad name below is caught, the good ones pass."""
    text = "\n".join([
        "# HELP mailgate_replay_rate Current replay rate limit (messages/s)", "# TYPE mailgate_replay_rate gauge",
        "mailgate_replay_rate 50.0",
        "# HELP mailgate_probe_latency Duration of the last check", "# TYPE mailgate_probe_latency gauge",
        "mailgate_probe_latency 0.1",
        "# HELP mailgate_deliveries_total Deliveries", "# TYPE mailgate_deliveries_total gauge",
        "mailgate_deliveries_total 1",
        "# HELP mailgate_age_ms How long", "# TYPE mailgate_age_ms gauge", "mailgate_age_ms 1",
        "# HELP mailgate_ok_messages 1 if ok", "# TYPE mailgate_ok_messages gauge", "mailgate_ok_messages 1",
        "# HELP mailgate_sent_total Sent", "# TYPE mailgate_sent_total counter", "mailgate_sent_total 1",
    ]) + "\n"
    found = problems(text_string_to_metric_families(text))
    for name in ("mailgate_replay_rate: a gauge without", "mailgate_probe_latency: a duration",
                 "mailgate_deliveries_total: a gauge ends in _total", "mailgate_age_ms: not a base unit"):
        assert any(p.startswith(name) for p in found), (name, found)
    assert not any(p.startswith(("mailgate_ok_messages", "mailgate_sent")) for p in found), found


def test_exposed_metric_names_follow_prometheus_conventions(peers, tmp_path):
    sink = peers.sink(name="exchange")
    port, admin = free_port(), free_port()
    extra = fast_continuity("postmaster@example.com") + f'[admin]\nlisten = "127.0.0.1:{admin}"\n'
    peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost=f"[127.0.0.1]:{sink.port}",
                              continuity=None, extra=extra), port)
    with httpx.Client(base_url=f"http://127.0.0.1:{admin}", timeout=10) as http:
        def scrape():
            t = http.get("/metrics").text
            return t if "mailgate_probe_ok{" in t else None
        text = wait_for(scrape, 15, what="probe results in /metrics")
    families = list(text_string_to_metric_families(text))
    names = {f.name for f in families}
    assert {"mailgate_queue_messages", "mailgate_recipients", "mailgate_continuity_state",
            "mailgate_probe_latency_seconds", "mailgate_probe_last_check_timestamp_seconds"} <= names, names
    assert "mailgate_recipients_total{" in text             # the sample, as Prometheus stores it
    assert problems(families) == []
