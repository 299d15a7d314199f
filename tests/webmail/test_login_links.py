"""Logging in to the webmail through one-time links (split from test_login.py): the admin-issued
login link and the enrolment link, each usable once, in a real gateway and a real chromium;
asserted on the spool's sessions, tokens and audit rows and on what the browser holds."""
from __future__ import annotations

import hashlib

from tests.webmail.conftest import (Client, audit_rows, browser_page, session_row,
                                    spool_rows, start_webmail, users_cli)
from tests.webmail.test_login import ALICE, PASSWORD, browser_cookie


def test_an_admin_login_link_logs_the_browser_in_once(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    r = users_cli(gw, "login-link", "Alice@EXAMPLE.com")
    assert r.returncode == 0, r.stderr
    url = r.stdout.strip()
    assert url.startswith(gw.base + "/login/link/")
    token = url.rsplit("/", 1)[1]
    stored = spool_rows(gw.spool_path, "SELECT * FROM webmail_tokens")
    assert [(t["address"], t["kind"], t["used_at"]) for t in stored] == [(ALICE, "link", 0)]
    assert stored[0]["token_hash"] == hashlib.sha256(token.encode()).hexdigest()   # never in clear
    assert stored[0]["expires_at"] - stored[0]["created_at"] == 86400.0
    page = browser_page(browser, gw)
    page.goto(url)                         # opening it (a link scanner, a preview) does not use it
    page.goto(url)
    assert f"Log in as {ALICE}" in page.content()
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == gw.base + "/mail/inbox"
    sid = browser_cookie(page)["value"]
    assert session_row(gw.spool_path, sid)["address"] == ALICE
    page.context.close()
    again = browser_page(browser, gw)
    resp = again.goto(url)
    assert resp.status == 410 and "already used or has expired" in again.content()
    # a POST with a valid form token but a used link: refused, no session
    c = Client(gw.base)
    status, _, body = c.post(f"/login/link/{token}", {"pre": c.pre()})
    assert status == 410 and "mailgate" not in c.cookies
    assert len(spool_rows(gw.spool_path, "SELECT * FROM webmail_sessions")) == 1
    again.context.close()
    [issued] = audit_rows(gw.spool_path, "login_link_issued")
    assert (issued["address"], issued["actor"]) == (ALICE, "cli")
    assert [r["result"] for r in audit_rows(gw.spool_path, "login_link_used")] == ["ok", "failed"]
    assert [r["detail"] for r in audit_rows(gw.spool_path, "login", ALICE)] == ["method=link"]
    # not a user (outside the accepted domains): no link
    r = users_cli(gw, "login-link", "bob@elsewhere.test")
    assert r.returncode == 1 and "not a webmail user" in r.stderr


def test_an_enrolment_link_lets_the_user_set_a_password_once(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    url = users_cli(gw, "login-link", ALICE, "--enrol").stdout.strip()
    assert "/enrol/" in url
    page = browser_page(browser, gw)
    page.goto(url)
    page.fill("#password", "short")
    page.fill("#password2", "short")
    page.evaluate("document.querySelectorAll('input').forEach(i => i.removeAttribute('minlength'))")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "at least 10 characters" in page.content()
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == gw.base + "/mail/inbox"
    page.context.close()
    [row] = spool_rows(gw.spool_path, "SELECT * FROM webmail_users")
    assert row["password_hash"].startswith("$argon2id$") and row["password_changed_at"] > 0
    assert Client(gw.base).login(ALICE, PASSWORD)[0] == 303
    again = browser_page(browser, gw)
    assert again.goto(url).status == 410
    again.context.close()
    [done] = audit_rows(gw.spool_path, "password_set", ALICE)
    assert (done["actor"], done["detail"]) == (ALICE, "enrolment link")
