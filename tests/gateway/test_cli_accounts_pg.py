"""`mailgate users ...` and `mailgate admins ...` as processes on a PostgreSQL spool (a real
PostgreSQL 15, a fresh database per test): the changes land in the shared tables, with their
audit rows (actor "cli"), and a running gateway's PgSpool sees them at once (its sessions are
revoked). An unreachable database is exit 1 with one line naming host:port/dbname."""
from __future__ import annotations

import re
import subprocess
import sys

from spool.pg import PgSpool
from tests.support.cli import ROOT, mailgate, pg_config

ALICE = "alice@example.com"


def run_in(cfg, *argv, stdin: str = ""):
    """`mailgate ARGV...` with ``stdin`` as its input."""
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(cfg), *argv],
                          input=stdin, cwd=ROOT, capture_output=True, text=True, timeout=60)


async def test_users_commands_change_the_shared_accounts(pg_dsn, tmp_path):
    cfg = pg_config(tmp_path, pg_dsn)
    gw = await PgSpool.open(pg_dsn, node="gw-a")
    try:
        sid, _ = await gw.create_session(ALICE, lifetime=3600.0)
        r = run_in(cfg, "users", "set-password", "Alice@Example.COM", stdin="a long enough password\n")
        assert r.returncode == 0, r.stderr
        assert (await gw.get_user(ALICE))["password_hash"].startswith("$argon2id$")
        assert await gw.get_session(sid, idle=600.0) is None          # revoked on the cluster
        r = run_in(cfg, "users", "login-link", ALICE)
        assert r.returncode == 0, r.stderr
        [token] = re.findall(r"/login/link/(\S+)$", r.stdout, re.M)
        assert (await gw.peek_token(token, "link"))["address"] == ALICE
        assert run_in(cfg, "users", "disable", ALICE).returncode == 0
        assert (await gw.get_user(ALICE))["disabled"] is True
        assert await gw.peek_token(token, "link") is None
        assert run_in(cfg, "users", "login-link", ALICE).returncode == 1   # disabled
        assert run_in(cfg, "users", "enable", ALICE).returncode == 0
        await gw.update_user(ALICE, totp_secret="ABC")
        assert run_in(cfg, "users", "reset-totp", ALICE).returncode == 0
        assert (await gw.get_user(ALICE))["totp_secret"] == ""
        listing = run_in(cfg, "users", "list")
        assert listing.returncode == 0 and ALICE in listing.stdout
        trail = run_in(cfg, "users", "audit", ALICE)
        assert trail.returncode == 0
        assert [line.split()[2] for line in trail.stdout.splitlines()] == [
            "password_set", "login_link_issued", "user_disabled", "user_enabled", "totp_reset"]
        rows = await gw.list_audit(ALICE)
        assert {(a["actor"], a["client"], a["node"]) for a in rows} == {("cli", "cli", "cli")}
    finally:
        await gw.close()
    assert not (tmp_path / "data" / "spool.db").exists()      # no SQLite spool beside it


async def test_admins_commands_change_the_shared_admins(pg_dsn, tmp_path):
    cfg = pg_config(tmp_path, pg_dsn)
    r = run_in(cfg, "admins", "add", "Ops")
    assert r.returncode == 0, r.stderr
    [token] = re.findall(r"/admin/enrol/(\S+)$", r.stdout, re.M)
    assert run_in(cfg, "admins", "add", "ops").returncode == 0        # not enrolled yet: a new link
    gw = await PgSpool.open(pg_dsn, node="gw-a")
    try:
        assert (await gw.peek_token(token, "admin_enrol"))["address"] == "admin:ops"
        assert await gw.enrol_admin(token, password_hash="ph", totp_secret="SECRET")
        assert run_in(cfg, "admins", "add", "ops").returncode == 1    # enrolled
        sid, _ = await gw.create_session("admin:ops", lifetime=3600.0, mfa=True)
        r = run_in(cfg, "admins", "set-password", "ops", stdin="another long password\n")
        assert r.returncode == 0, r.stderr
        assert (await gw.get_admin("ops"))["password_hash"].startswith("$argon2id$")
        assert await gw.get_session(sid, idle=600.0) is None
        assert run_in(cfg, "admins", "set-password", "ghost", stdin="x" * 20 + "\n").returncode == 1
        assert run_in(cfg, "admins", "disable", "ops").returncode == 0
        assert (await gw.get_admin("ops"))["disabled"] is True
        assert run_in(cfg, "admins", "enable", "ops").returncode == 0
        assert run_in(cfg, "admins", "disable", "ghost").returncode == 1
        r = run_in(cfg, "admins", "reset-totp", "ops")
        assert r.returncode == 0 and "/admin/enrol/" in r.stdout
        row = await gw.get_admin("ops")
        assert (row["password_hash"], row["totp_secret"]) == ("", "")
        listing = run_in(cfg, "admins", "list")
        assert listing.returncode == 0 and "ops " in listing.stdout
        assert [a["action"] for a in await gw.list_audit("admin:ops")] == [
            "admin_totp_reset", "admin_enabled", "admin_disabled", "admin_password_set",
            "admin_added", "admin_added"]
    finally:
        await gw.close()


def test_an_unreachable_database_is_one_line_and_exit_1(tmp_path):
    cfg = pg_config(tmp_path, "host=127.0.0.1 port=1 dbname=mail user=gw password=s3cret")
    for argv in (("users", "list"), ("admins", "disable", "ops")):
        out = mailgate(cfg, *argv)
        assert out.returncode == 1, (out.stdout, out.stderr)
        assert len(out.stderr.strip().splitlines()) == 1
        assert "127.0.0.1:1/mail" in out.stderr and "s3cret" not in out.stderr
    assert not (tmp_path / "data").exists()
