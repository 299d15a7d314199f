"""`mailgate doctor`'s spool check on a real PostgreSQL 15 (gateway/doctor_spool.py): each
finding against a database set up to cause it, and the check as a process through `mailgate
doctor --json`."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg

from gateway.config import parse
from gateway.doctor_spool import check_spool
from spool.pg.db import migrations

ROOT = Path(__file__).resolve().parents[2]
LATEST = migrations()[-1][0]


def cfg_for(dsn: str, tmp_path):
    return parse({"server": {"hostname": "gw1.test", "data_dir": str(tmp_path / "d")},
                  "spool": {"backend": "postgresql", "dsn": dsn, "node": "gw1"},
                  "continuity": {"mode": "off"}, "webmail": {"enabled": False}}, "t.toml")


def dbname(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def test_sqlite_has_no_spool_check(tmp_path):
    assert check_spool(parse({"server": {"data_dir": str(tmp_path)}}, "t.toml")) == []


def test_a_migrated_durable_database_is_ok_and_says_it_has_no_synchronous_standby(
        pg_dsn, tmp_path):
    [c] = check_spool(cfg_for(pg_dsn, tmp_path))
    assert (c.level, c.check) == ("OK", "spool"), c
    assert f"schema {LATEST}" in c.detail and "no synchronous standby" in c.detail
    assert "synchronous_commit = on" in c.detail and "0 node(s) registered" in c.detail


def test_synchronous_commit_off_fails(pg_cluster, pg_dsn, tmp_path):
    pg_cluster.sql(f"ALTER DATABASE {dbname(pg_dsn)} SET synchronous_commit = off")
    [c] = check_spool(cfg_for(pg_dsn, tmp_path))
    assert c.level == "FAIL" and "synchronous_commit = off" in c.detail, c
    assert "250 can be lost" in c.detail


def test_an_unmigrated_database_warns_that_the_start_migrates_it(pg_cluster, tmp_path):
    pg_cluster.sql("CREATE DATABASE doctor_fresh")
    try:
        [c] = check_spool(cfg_for(pg_cluster.dsn("doctor_fresh"), tmp_path))
    finally:
        pg_cluster.sql("DROP DATABASE doctor_fresh WITH (FORCE)")
    assert c.level == "WARN" and f"schema 0, this mailgate migrates it to {LATEST}" in c.detail, c


def test_a_newer_schema_fails(pg_dsn, tmp_path):
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (%s, 'future')",
                     (LATEST + 1,))
    [c] = check_spool(cfg_for(pg_dsn, tmp_path))
    assert c.level == "FAIL" and "newer than this mailgate" in c.detail, c


def test_unreachable_fails_without_the_password_and_doctor_exits_2(tmp_path):
    dsn = "host=127.0.0.1 port=9 dbname=mailgate user=mailgate password=s3cr3t connect_timeout=2"
    [c] = check_spool(cfg_for(dsn, tmp_path))
    assert c.level == "FAIL" and "127.0.0.1:9/mailgate" in c.detail, c
    assert "s3cr3t" not in c.detail + c.fix
    f = tmp_path / "mailgate.toml"
    f.write_text(f'[server]\nhostname = "gw1.test"\ndata_dir = "{tmp_path / "d"}"\n'
                 f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\n'
                 '[continuity]\nmode = "off"\n[webmail]\nenabled = false\n'
                 '[dns]\nnameservers = ["127.0.0.1"]\nport = 9\ntimeout = 0.5\nlifetime = 1.0\n')
    run = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(f), "doctor",
                          "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert run.returncode == 2, run.stdout + run.stderr
    out = json.loads(run.stdout)
    [spool] = [c for c in out["checks"] if c["check"] == "spool"]
    assert spool["level"] == "FAIL" and "s3cr3t" not in run.stdout
