"""The deployment files of deploy/ keep their promises (docs/deploy.md).

- the systemd unit has the hardening the issue asks for, ``systemd-analyze verify`` reports
  nothing about it (run on a copy whose ExecStart is a stub: the real path exists only once
  installed), and its TimeoutStopSec outlasts the gateway's drain;
- the Dockerfile's RUN lines are valid shell (``bash -n``; hadolint is not in Debian), it runs as
  a non-root user with the data directory as a VOLUME, EXPOSEs exactly the ports the baked-in
  configuration listens on, and its HEALTHCHECK command, run against a real gateway process,
  exits 0 while the gateway is up and non-zero once it is gone;
- compose.yaml scrapes the admin listener the container configuration sets, and mounts files
  that exist;
- the Grafana dashboard only queries metrics the gateway exports.
"""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway import config
from tests.conftest import config_toml
from tests.support.peers import free_port

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "systemd" / "mailgate.service"


def unit_keys() -> dict[str, str]:
    keys = {}
    for line in UNIT.read_text().splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            k, _, v = line.partition("=")
            keys[k.strip()] = v.strip()
    return keys


def test_systemd_unit_hardening():
    k = unit_keys()
    assert k["User"] == "mailgate" and k["Group"] == "mailgate"
    assert k["AmbientCapabilities"] == k["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert (k["ProtectSystem"], k["ReadWritePaths"], k["NoNewPrivileges"]) == \
        ("strict", "/var/lib/mailgate", "yes")
    assert k["PrivateTmp"] == k["ProtectHome"] == "yes"
    assert k["Restart"] == "on-failure"
    assert k["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert k["ExecStart"].endswith("mailgate serve")


def test_systemd_stop_timeout_outlasts_the_drain():
    import inspect
    from gateway.admin.server import GRACE
    from gateway.delivery.qmgr import QueueManager
    drain = inspect.signature(QueueManager.drain).parameters["timeout"].default
    assert float(unit_keys()["TimeoutStopSec"]) > drain + GRACE + 10


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_systemd_analyze_verify_is_silent(tmp_path):
    stub = tmp_path / "mailgate"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / "mailgate.service"
    copy.write_text(UNIT.read_text().replace("/opt/mailgate/venv/bin/mailgate", str(stub)))
    p = subprocess.run(["systemd-analyze", "verify", str(copy)], capture_output=True, text=True, timeout=60)
    assert (p.returncode, p.stderr, p.stdout) == (0, "", "")
    bad = tmp_path / "bad.service"          # the check itself sees a typo
    bad.write_text(copy.read_text().replace("ProtectSystem=strict", "ProtectSystem=strictt"))
    p = subprocess.run(["systemd-analyze", "verify", str(bad)], capture_output=True, text=True, timeout=60)
    assert "ProtectSystem" in p.stderr or "protect system" in p.stderr


def dockerfile() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            word, _, rest = line.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_run_lines_are_valid_shell():
    runs = [args for word, args in dockerfile() if word == "RUN"]
    assert runs
    for args in runs:
        p = subprocess.run(["bash", "-n", "-c", args], capture_output=True, text=True)
        assert p.returncode == 0, (args, p.stderr)


def test_dockerfile_non_root_volume_and_ports_match_the_container_config():
    ins = dockerfile()
    first = {w: a for w, a in reversed(ins)}
    assert first["FROM"].startswith(("python:3.11-slim-bookworm", "debian:bookworm-slim"))
    users = [a for w, a in ins if w == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert json.loads(first["VOLUME"]) == ["/var/lib/mailgate"]
    cfg = config.load(DEPLOY / "container.toml", check_files=False)
    assert str(cfg.server.data_dir) == "/var/lib/mailgate"
    ports = {config.parse_listen(s)[1] for s in cfg.smtp.listen}
    ports |= {config.parse_listen(cfg.admin.listen)[1], config.parse_listen(cfg.webmail.listen)[1]}
    assert {int(p) for p in first["EXPOSE"].split()} == ports
    assert "/healthz" in first["HEALTHCHECK"]


def healthcheck_argv(admin_port: int) -> list[str]:
    args = dict(dockerfile())["HEALTHCHECK"]
    cmd = json.loads(args[args.index("CMD") + 3:].strip())
    cmd = [sys.executable if c == "python" else c for c in cmd]
    return [c.replace("127.0.0.1:8025", f"127.0.0.1:{admin_port}") for c in cmd]


def test_healthcheck_command_against_a_real_gateway(peers, tmp_path):
    port, admin = free_port(), free_port()
    gw = peers.gateway(config_toml(port=port, data_dir=tmp_path / "data", smarthost="[127.0.0.1]:9",
                                   extra=f'[admin]\nlisten = "127.0.0.1:{admin}"\n'), port)
    argv = healthcheck_argv(admin)
    assert f"127.0.0.1:{admin}/healthz" in " ".join(argv)
    assert subprocess.run(argv, capture_output=True, timeout=10).returncode == 0
    gw.stop()
    assert subprocess.run(argv, capture_output=True, timeout=10).returncode != 0


def test_compose_scrapes_the_admin_listener_and_mounts_existing_files():
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    prom = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    cfg = config.load(DEPLOY / "container.toml", check_files=False)
    [job] = [j for j in prom["scrape_configs"] if j["job_name"] == "mailgate"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"mailgate:{config.parse_listen(cfg.admin.listen)[1]}"]
    assert set(compose["services"]) >= {"mailgate", "prometheus"}
    assert compose["services"]["mailgate"]["build"]["dockerfile"] == "deploy/Dockerfile"
    for svc in compose["services"].values():
        for vol in svc.get("volumes", []):
            src = vol.split(":")[0]
            if src.startswith("./") and src != "./mailgate.toml":     # the user's own config
                assert (DEPLOY / src).exists(), src
    rules = yaml.safe_load((DEPLOY / "mailgate-alerts.yml").read_text())
    assert all(r["expr"] for g in rules["groups"] for r in g["rules"])


def exported_metrics() -> set[str]:
    """Sample names gateway/admin/metrics.py exposes (a counter family NAME exposes NAME_total)."""
    src = (ROOT / "gateway" / "admin" / "metrics.py").read_text()
    out = set()
    for kind, name in re.findall(r'(Counter|Gauge)MetricFamily\(\s*"(mailgate_\w+)"', src):
        out.add(name + "_total" if kind == "Counter" and not name.endswith("_total") else name)
    return out


def test_grafana_dashboard_queries_only_exported_metrics():
    dash = json.loads((DEPLOY / "grafana" / "mailgate-dashboard.json").read_text())
    exported = exported_metrics()
    assert len(exported) >= 10
    used = set()
    for panel in dash["panels"]:
        for t in panel["targets"]:
            used |= set(re.findall(r"\bmailgate_\w+", t["expr"]))
    assert used and used <= exported, used - exported
    for family in ("mailgate_continuity_state", "mailgate_probe_ok", "mailgate_probe_latency_seconds",
                   "mailgate_queue_messages", "mailgate_recipients_total",
                   "mailgate_replay_remaining_messages"):
        assert family in used, family
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
