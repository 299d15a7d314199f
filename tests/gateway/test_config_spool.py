"""The [spool] section (gateway/config_spool.py): backends, the DSN, the node name, each bad
setting refused with the file and the key named; continuity and the webmail accepted on a
PostgreSQL spool; and ``mailgate check-config`` on such files as a process (exit 0, or 2 naming
the key, never a traceback)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from gateway.config import ConfigError, load, parse
from gateway.config_spool import node_name

ROOT = Path(__file__).resolve().parents[2]
PG_OK = {"spool": {"backend": "postgresql", "dsn": "host=db1 dbname=mailgate user=mailgate",
                   "node": "mx1"},
         "continuity": {"mode": "off"}, "webmail": {"enabled": False}}


def test_the_default_is_sqlite_named_by_hostname():
    cfg = parse({"server": {"hostname": "mx9.example.com"}}, "t.toml")
    assert cfg.spool.backend == "sqlite" and cfg.spool.dsn == ""
    assert node_name(cfg) == "mx9.example.com"


def test_a_complete_postgresql_spool_is_accepted():
    cfg = parse(PG_OK, "t.toml")
    assert (cfg.spool.backend, node_name(cfg), cfg.spool.pool_size) == ("postgresql", "mx1", 10)
    assert cfg.spool.worker_pool_size == 2


@pytest.mark.parametrize("change, key, words", [
    ({"spool": {"backend": "postgresql", "dsn": ""}}, "spool.dsn", "required"),
    ({"spool": {"backend": "postgresql", "dsn": "host=db1 ==="}}, "spool.dsn", "not a libpq"),
    ({"spool": {"backend": "mysql", "dsn": "x"}}, "spool.backend", "'sqlite' or 'postgresql'"),
    ({"spool": {"backend": "sqlite", "dsn": "host=db1"}}, "spool.dsn", "only used with"),
    ({"spool": {"backend": "postgresql", "dsn": "host=db1", "pool_size": 1}}, "spool.pool_size",
     "greater than or equal to 2"),
    ({"spool": {"backend": "postgresql", "dsn": "host=db1", "worker_pool_size": 0}},
     "spool.worker_pool_size", "greater than or equal to 1"),
    ({"delivery": {"claim_ttl": 1.0}}, "delivery.claim_ttl", "greater than or equal to 5"),
])
def test_a_bad_spool_setting_names_the_file_and_key(change, key, words):
    raw = {k: dict(v) for k, v in PG_OK.items()}
    for section, keys in change.items():
        raw[section] = {**raw.get(section, {}), **keys} if section != "spool" else dict(keys)
    with pytest.raises(ConfigError) as e:
        parse(raw, "deploy/mailgate.toml")
    line = next(ln for ln in str(e.value).splitlines() if f": {key}: " in ln)
    assert line.startswith(f"deploy/mailgate.toml: {key}: ") and words in line, str(e.value)


def test_the_password_of_a_bad_dsn_is_not_in_the_error():
    raw = {**PG_OK, "spool": {"backend": "postgresql", "dsn": "host=db1 password=s3cr3t ==="}}
    with pytest.raises(ConfigError) as e:
        parse(raw, "t.toml")
    assert "s3cr3t" not in str(e.value)


@pytest.mark.parametrize("mode", ["automatic", "alert-only"])
def test_continuity_and_the_webmail_run_on_a_postgresql_spool(mode):
    raw = {**PG_OK, "continuity": {"mode": mode}, "webmail": {"enabled": True}}
    cfg = parse(raw, "t.toml")
    assert (cfg.continuity.mode, cfg.webmail.enabled) == (mode, True)


def test_check_config_accepts_a_postgresql_spool_with_the_webmail_on(tmp_path):
    f = tmp_path / "mailgate.toml"      # webmail.enabled is true by default
    f.write_text('[spool]\nbackend = "postgresql"\ndsn = "host=127.0.0.1 dbname=x"\n'
                 '[continuity]\nmode = "automatic"\n')
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(f), "check-config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "webmail.enabled" not in run.stderr and "Traceback" not in run.stderr
    cfg = load(f)
    assert (cfg.spool.backend, cfg.webmail.enabled, cfg.continuity.mode) == \
        ("postgresql", True, "automatic")


@pytest.mark.parametrize("dsn", ["host=db1 dbname=m user=u password=s3cr3t",
                                 "postgresql://u:s3cr3t@db1:5432/m"])
def test_check_config_hides_the_dsn_password_and_the_sms_token(tmp_path, dsn):
    f = tmp_path / "mailgate.toml"
    f.write_text(f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\n[continuity]\nmode = "off"\n'
                 '[webmail]\nenabled = false\nsms_url = "twilio://SID:T0KEN@15551234/{phone}"\n')
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(f), "check-config"],
                         capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    assert "s3cr3t" not in run.stdout and "T0KEN" not in run.stdout and "SID" not in run.stdout
    assert "password=***" in run.stdout and "host=db1" in run.stdout and "dbname=m" in run.stdout
    assert '"sms_url": "twilio://***"' in run.stdout
