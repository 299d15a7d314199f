"""`mailgate admins ...` as a process on a real spool file: add prints a one-time enrolment
link (only its hash stored), list, set-password from stdin, disable (revokes sessions) / enable,
reset-totp (both factors cleared, a new link), the reserved name, bad names, and the audit
trail (actor "cli", address "admin:NAME"). Also the [admin] alert_link_ttl key's validation."""
from __future__ import annotations

import re
import sqlite3
import subprocess
import sys

import pytest

from gateway import config as config_mod
from spool import accounts, admins, db
from tests.conftest import ROOT


def config(tmp_path, extra: str = ""):
    path = tmp_path / "mailgate.toml"
    path.write_text("\n".join(["[server]", f'data_dir = "{tmp_path / "data"}"', "[relay]",
                               'accepted_domains = ["example.com"]', "[webmail]",
                               'public_url = "https://continuity.example.com/"', extra]) + "\n")
    return path


def admins_cli(cfg, *args, stdin: str = ""):
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(cfg), "admins", *args],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def rows(tmp_path, sql, *params):
    c = sqlite3.connect(tmp_path / "data" / "spool.db")
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql, params)]
    finally:
        c.close()


def test_add_list_password_disable_enable_reset(tmp_path):
    cfg = config(tmp_path)
    r = admins_cli(cfg, "add", "Ops")
    assert r.returncode == 0, r.stderr
    [token] = re.findall(r"^https://continuity\.example\.com/admin/enrol/(\S+)$", r.stdout, re.M)
    [tok] = rows(tmp_path, "SELECT * FROM webmail_tokens WHERE kind='admin_enrol'")
    assert tok["token_hash"] == accounts.token_hash(token) and tok["address"] == "admin:ops"
    assert tok["expires_at"] - tok["created_at"] == 86400.0
    assert "ops " in admins_cli(cfg, "list").stdout
    assert admins_cli(cfg, "add", "token").returncode == 1          # reserved
    assert admins_cli(cfg, "add", "bad name").returncode == 1
    assert admins_cli(cfg, "set-password", "nobody", stdin="x" * 12 + "\n").returncode == 1
    assert admins_cli(cfg, "set-password", "ops", stdin="short\n").returncode == 1
    r = admins_cli(cfg, "set-password", "ops", stdin="a long admin passphrase\n")
    assert r.returncode == 0, r.stderr
    [row] = rows(tmp_path, "SELECT * FROM admin_users")
    assert row["password_hash"].startswith("$argon2id$") and row["totp_secret"] == ""
    assert admins_cli(cfg, "add", "ops").returncode == 1             # already enrolled

    conn = db.connect(tmp_path / "data" / "spool.db")
    try:
        sid = db.transaction(conn, lambda: accounts.create_session(
            conn, admins.session_address("ops"), lifetime=60, mfa=True)[0])
    finally:
        conn.close()
    assert admins_cli(cfg, "disable", "ops").returncode == 0
    assert rows(tmp_path, "SELECT revoked FROM webmail_sessions")[0]["revoked"] == 1
    assert "disabled" in admins_cli(cfg, "list").stdout
    assert admins_cli(cfg, "enable", "ops").returncode == 0
    assert rows(tmp_path, "SELECT disabled FROM admin_users")[0]["disabled"] == 0
    r = admins_cli(cfg, "reset-totp", "ops")
    assert r.returncode == 0 and "/admin/enrol/" in r.stdout
    [row] = rows(tmp_path, "SELECT * FROM admin_users")
    assert (row["password_hash"], row["totp_secret"]) == ("", "")
    assert admins_cli(cfg, "reset-totp", "nobody").returncode == 1
    actions = [(a["action"], a["actor"], a["address"]) for a in
               rows(tmp_path, "SELECT * FROM webmail_audit ORDER BY id")]
    assert actions == [("admin_added", "cli", "admin:ops"), ("admin_password_set", "cli", "admin:ops"),
                       ("admin_disabled", "cli", "admin:ops"), ("admin_enabled", "cli", "admin:ops"),
                       ("admin_totp_reset", "cli", "admin:ops")]
    assert sid


def test_alert_link_ttl_is_validated(tmp_path):
    assert config_mod.load(config(tmp_path)).admin.alert_link_ttl == 3600.0
    assert config_mod.load(config(tmp_path, "[admin]\nalert_link_ttl = 60")).admin.alert_link_ttl == 60.0
    with pytest.raises(config_mod.ConfigError, match="alert_link_ttl"):
        config_mod.load(config(tmp_path, "[admin]\nalert_link_ttl = 0"))
