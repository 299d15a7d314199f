"""Admin console, the users pages, against a real gateway and real chromium: the list; disable
blocks the user's login and logs out their sessions, enable lets them in again; a login link
issued from the console logs a browser in once; resetting the password clears the hash and
revokes every session; the user's audit trail shows each change with actor admin:NAME; a
cross-site POST changes nothing."""
from __future__ import annotations

import re

from tests.webmail.admin_pages import admin_page, csp_violations
from tests.webmail.conftest import (Client, Recorder, audit_rows, browser_page, open_session,
                                    session_row, set_password, spool_rows, start_webmail)

ALICE, BOB, PASSWORD = "alice@example.com", "bob@example.com", "correct horse battery"


def user_row(gw, address):
    rows = spool_rows(gw.spool_path, "SELECT * FROM webmail_users WHERE address=?", address)
    return rows[0] if rows else None


def can_log_in(gw, address=ALICE, password=PASSWORD) -> bool:
    c = Client(gw.base)
    status, _, _ = c.login(address, password)
    return status == 303 and "mailgate" in c.cookies


def test_users_disable_enable_link_reset_and_audit(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    set_password(gw, ALICE, PASSWORD)
    set_password(gw, BOB, PASSWORD)
    assert can_log_in(gw)
    alice_session = open_session(gw.spool_path, ALICE)
    page, cookie = admin_page(browser, gw, "ops")
    rec = Recorder(page, gw.base)
    csp = csp_violations(page)

    page.goto(gw.base + "/admin/users")
    rows = page.locator("#users tbody tr[data-address]")
    assert rows.evaluate_all("rs => rs.map(r => [r.dataset.address, r.dataset.state])") == \
        [[ALICE, "enabled"], [BOB, "enabled"]]
    page.fill("#q", "bob")
    page.click("form[role=search] button")
    assert page.locator("#users tbody tr[data-address]").count() == 1

    # disable: login refused, live sessions revoked
    page.goto(gw.base + f"/admin/users/{ALICE}")
    page.click("#disable")
    page.wait_for_url(re.compile(r"done=disabled"))
    assert page.text_content("#user-state").strip() == "disabled"
    assert user_row(gw, ALICE)["disabled"] == 1
    assert session_row(gw.spool_path, alice_session)["revoked"] == 1
    assert not can_log_in(gw)
    assert can_log_in(gw, BOB)                      # only Alice
    # no login link for a disabled user
    assert page.locator("#issue-link").count() == 0
    page.click("#enable")
    page.wait_for_url(re.compile(r"done=enabled"))
    assert user_row(gw, ALICE)["disabled"] == 0 and can_log_in(gw)

    # a login link from the console: shown once, logs a browser in once
    page.click("#issue-link")
    url = page.text_content("#login-link").strip()
    assert url.startswith(gw.base + "/login/link/"), url
    assert [(t["address"], t["kind"], t["used_at"]) for t in
            spool_rows(gw.spool_path, "SELECT * FROM webmail_tokens WHERE kind='link'")] == [(ALICE, "link", 0)]
    user = browser_page(browser, gw)
    user.goto(url)
    with user.expect_navigation():
        user.click("button[type=submit]")
    assert user.url == gw.base + "/mail/inbox"
    sid = next(c["value"] for c in user.context.cookies() if c["name"] == "mailgate")
    assert session_row(gw.spool_path, sid)["address"] == ALICE
    assert user.goto(url).status == 410           # used
    user.context.close()

    # reset password: a confirmation step; the hash is cleared and every session revoked
    page.goto(gw.base + f"/admin/users/{ALICE}")
    page.click("#reset-password")
    assert user_row(gw, ALICE)["password_hash"] != ""
    page.click("#confirm-reset")
    page.wait_for_url(re.compile(r"done=reset"))
    assert user_row(gw, ALICE)["password_hash"] == ""
    assert session_row(gw.spool_path, sid)["revoked"] == 1
    assert not can_log_in(gw)

    # the audit trail, in the spool and on the page
    want = ["user_disabled", "user_enabled", "login_link_issued", "password_reset"]
    mine = [(r["action"], r["actor"]) for r in audit_rows(gw.spool_path, address=ALICE)
            if r["actor"].startswith("admin:")]
    assert mine == [(a, "admin:ops") for a in want], mine
    page.goto(gw.base + f"/admin/users/{ALICE}")
    shown = page.locator("#user-audit tbody tr[data-action]").evaluate_all(
        "rs => rs.map(r => [r.dataset.action, r.dataset.actor])")
    assert [a for a, actor in shown if actor == "admin:ops"] == list(reversed(want))
    assert "login_link_used" in [a for a, _ in shown]
    assert rec.foreign == [] and rec.dialogs == [] and csp == []

    # cross-site: refused, nothing changes; an unknown user is 404
    cl = Client(gw.base)
    cl.cookies["mailgate-admin"] = cookie
    status, _, _ = cl.post(f"/admin/users/{BOB}/disable", {"csrf": "x"},
                           headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.test"})
    assert status == 403 and user_row(gw, BOB)["disabled"] == 0
    assert cl.get("/admin/users/mallory@elsewhere.test")[0] == 404
    # a webmail user's session is not an admin's
    u = Client(gw.base)
    u.cookies["mailgate"] = open_session(gw.spool_path, BOB)
    for path in ("/admin/users", f"/admin/users/{BOB}", "/admin/queue", "/admin/timeline"):
        assert u.get(path)[0] == 403, path
