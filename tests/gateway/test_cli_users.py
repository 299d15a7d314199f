"""`mailgate users ...` as a process on a real spool file: who counts as a user (directory
mailboxes, or any accepted-domain address without a directory), set-password from stdin (never
argv), login links, disable/enable (revoking sessions of a running gateway), import of alternate
contacts (all or nothing), and the audit trail with actor "cli"."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys

from spool import accounts, db
from tests.conftest import ROOT

ALICE = "alice@example.com"


def config(tmp_path, directory: bool = False):
    lines = ["[server]", f'data_dir = "{tmp_path / "data"}"', "[relay]",
             'accepted_domains = ["example.com"]', "[webmail]",
             'public_url = "https://continuity.example.com/"']
    if directory:
        d = tmp_path / "recipients.json"
        d.write_text(json.dumps({"mailboxes": [
            {"address": ALICE, "aliases": ["a.smith@example.com"], "alt_email": "alice@home.test",
             "phone": "+44 1632 960961"}, "bob@example.com"],
            "groups": [{"address": "team@example.com", "members": [ALICE]}]}))
        lines += ["[directory]", f'file = "{d}"']
    path = tmp_path / "mailgate.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def users(cfg, *args, stdin: str = ""):
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(cfg), "users", *args],
                          input=stdin, capture_output=True, text=True, cwd=ROOT, timeout=60)


def rows(tmp_path, sql, *params):
    c = sqlite3.connect(tmp_path / "data" / "spool.db")
    c.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in c.execute(sql, params)]
    finally:
        c.close()


def test_without_a_directory_any_accepted_domain_address_can_get_a_password_from_stdin(tmp_path):
    from argon2 import PasswordHasher
    cfg = config(tmp_path)
    r = users(cfg, "set-password", "Alice@Example.COM", stdin="a long enough password\n")
    assert r.returncode == 0, r.stderr
    [u] = rows(tmp_path, "SELECT * FROM webmail_users")
    assert u["address"] == ALICE and u["password_hash"].startswith("$argon2id$")
    assert PasswordHasher().verify(u["password_hash"], "a long enough password")
    assert users(cfg, "set-password", ALICE, stdin="short\n").returncode == 1
    r = users(cfg, "set-password", "bob@elsewhere.test", stdin="a long enough password\n")
    assert r.returncode == 1 and "not a webmail user" in r.stderr
    r = users(cfg, "login-link", ALICE)
    assert r.returncode == 0 and r.stdout.startswith("https://continuity.example.com/login/link/")
    r = users(cfg, "login-link", ALICE, "--enrol")
    assert r.stdout.startswith("https://continuity.example.com/enrol/")
    out = users(cfg, "list").stdout
    assert f"{ALICE:<36}yes" in out
    audit = rows(tmp_path, "SELECT action, actor, address FROM webmail_audit ORDER BY id")
    assert audit == [{"action": a, "actor": "cli", "address": ALICE}
                     for a in ("password_set", "login_link_issued", "enrol_link_issued")]
    text = users(cfg, "audit", ALICE).stdout
    assert "password_set" in text and "enrol_link_issued" in text


def test_with_a_directory_only_mailboxes_are_users_and_aliases_resolve(tmp_path):
    cfg = config(tmp_path, directory=True)
    assert users(cfg, "login-link", "team@example.com").returncode == 1          # a group
    assert users(cfg, "login-link", "carol@example.com").returncode == 1         # not listed
    assert users(cfg, "login-link", "A.Smith@example.com").returncode == 0       # alias → alice
    assert [u["address"] for u in rows(tmp_path, "SELECT address FROM webmail_users")] == [ALICE]
    out = users(cfg, "list").stdout.splitlines()
    assert any(line.startswith(ALICE) and "alice@home.test" in line and "+441632960961" in line
               for line in out)
    assert any(line.startswith("bob@example.com") for line in out)              # listed, no account yet


def test_import_contacts_is_all_or_nothing(tmp_path):
    cfg = config(tmp_path, directory=True)
    bad = tmp_path / "bad.csv"
    bad.write_text("address,alt_email,phone\nbob@example.com,bob@home.test,+44 20 7946 0000\n"
                   "alice@example.com,alice@example.com,\n"            # her own domain: refused
                   "team@example.com,x@home.test,\n"                   # a group
                   "bob@example.com,,12345\n")                         # not E.164
    r = users(cfg, "import-contacts", str(bad))
    assert r.returncode == 1
    assert "line 3" in r.stderr and "line 4" in r.stderr and "line 5" in r.stderr
    assert not rows(tmp_path, "SELECT * FROM webmail_users")
    good = tmp_path / "good.csv"
    good.write_text("bob@example.com,bob@home.test,+44 20 7946 0000\nalice@example.com,,+15551234567\n")
    r = users(cfg, "import-contacts", str(good))
    assert r.returncode == 0, r.stderr
    got = {u["address"]: (u["alt_email"], u["phone"])
           for u in rows(tmp_path, "SELECT * FROM webmail_users")}
    assert got == {"bob@example.com": ("bob@home.test", "+442079460000"), ALICE: ("", "+15551234567")}
    assert len(rows(tmp_path, "SELECT * FROM webmail_audit WHERE action='contacts_set' AND actor='cli'")) == 2


def test_disable_revokes_sessions_and_links_and_enable_lets_the_user_back(tmp_path):
    cfg = config(tmp_path)
    conn = db.connect(tmp_path / "data" / "spool.db")
    try:
        sid = db.transaction(conn, lambda: (accounts.ensure_user(conn, ALICE),
                                            accounts.create_session(conn, ALICE, lifetime=3600.0))[1][0])
        token = db.transaction(conn, lambda: accounts.issue_token(conn, ALICE, "link", ttl=3600.0))
        r = users(cfg, "disable", ALICE)
        assert r.returncode == 0 and "1 session(s) logged out" in r.stdout
        assert accounts.get_session(conn, sid, idle=3600.0) is None
        assert accounts.peek_token(conn, token, "link") is None
        assert users(cfg, "login-link", ALICE).returncode == 1                   # disabled
        assert users(cfg, "enable", ALICE).returncode == 0
        assert accounts.get_user(conn, ALICE)["disabled"] == 0
        assert accounts.get_session(conn, sid, idle=3600.0) is None              # still revoked
    finally:
        conn.close()
    actions = [(r["action"], r["actor"]) for r in rows(tmp_path, "SELECT * FROM webmail_audit ORDER BY id")]
    assert actions == [("user_disabled", "cli"), ("user_enabled", "cli")]
