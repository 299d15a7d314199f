"""Helpers for the admin console tests: admins made in the spool, the `mailgate admins` CLI,
the console's routes enumerated from the app's /admin Mount, and a browser login."""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pyotp

from spool import accounts, admins
from spool import db as spool_db
from tests.conftest import ROOT
from tests.webmail.conftest import spool_rows


def make_admin(spool_path: Path, name: str, password: str) -> str:
    """An enrolled admin made directly in the spool; returns its TOTP secret."""
    from webmail import auth
    secret = pyotp.random_base32()
    hashed = auth.hash_password(password)
    conn = spool_db.connect(spool_path)
    try:
        def tx():
            admins.ensure_admin(conn, name)
            admins.update_admin(conn, name, password_hash=hashed, totp_secret=secret)
        spool_db.transaction(conn, tx)
    finally:
        conn.close()
    return secret


def admins_cli(gw, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(gw.gw.config),
                           "admins", *args], input=stdin, capture_output=True, text=True, cwd=ROOT,
                          timeout=60)


def continuity_cli(gw, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(gw.gw.config),
                           "continuity", *args], capture_output=True, text=True, cwd=ROOT, timeout=60)


def admin_routes() -> list[tuple[str, str]]:
    """[(method, path with each {param} replaced by "x")] of every route under the app's /admin
    Mount (so routes another part adds are covered too); HEAD is left out (it mirrors GET)."""
    import re

    from starlette.routing import Mount
    from webmail.app import build_app
    from webmail.context import WebmailContext

    class Cfg:
        class webmail:
            public_url, tls_cert, listen = "http://127.0.0.1:1", None, "127.0.0.1:1"
    app = build_app(WebmailContext(cfg=Cfg, spool=None, directory=lambda: (None, False)))
    [mount] = [r for r in app.routes if isinstance(r, Mount) and r.path == "/admin"]
    out = []
    for r in mount.routes:
        path = "/admin" + re.sub(r"\{[^}]*\}", "x", r.path)
        for m in sorted(r.methods or ()):
            if m != "HEAD":
                out.append((m, path))
    return out


def totp_now(secret: str, after_step: int = -1) -> str:
    """A current code of ``secret``, waiting for the next step if this step is ``after_step``."""
    t = pyotp.TOTP(secret)
    while int(time.time() // t.interval) <= after_step:
        time.sleep(0.2)
    return t.now()


def browser_login(page, base: str, name: str, password: str, secret: str) -> None:
    """On the admin login page (already open): name, password, then the TOTP code."""
    page.fill("#name", name)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url.startswith(base + "/admin/login/totp"), page.url
    page.fill("#code", totp_now(secret))
    with page.expect_navigation():
        page.click("button[type=submit]")


def state_row(spool_path: Path) -> dict:
    rows = spool_rows(spool_path, "SELECT * FROM continuity_state WHERE id=1")
    return rows[0] if rows else {}


def hashed(token: str) -> str:
    return accounts.token_hash(token)
