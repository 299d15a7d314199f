"""The webmail's foundation in a real gateway and a real browser: it listens, sends the security
headers on every page, refuses to be framed, shows errors without internals, and loads the
logged-in user's session from the spool."""
from __future__ import annotations

from tests.webmail.conftest import Recorder, browser_page, fetch, open_session, start_webmail


def test_pages_carry_the_security_headers_and_errors_show_no_internals(peers, tmp_path):
    gw = start_webmail(peers, tmp_path)
    status, h, body = fetch(gw.base + "/no/such/page")
    assert status == 404
    assert b"Traceback" not in body and b"There is nothing here." in body
    assert "default-src 'none'" in h["content-security-policy"]
    assert "frame-ancestors 'none'" in h["content-security-policy"]
    assert h["x-frame-options"] == "DENY"
    assert h["x-content-type-options"] == "nosniff"
    assert h["referrer-policy"] == "no-referrer"
    assert h["cache-control"] == "no-store"
    # not logged in: the home page sends the visitor to the login page
    status, headers, _ = fetch(gw.base + "/")
    assert status == 303 and headers["location"] == "/login"


def test_a_session_in_the_spool_logs_the_browser_in_and_a_revoked_one_does_not(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    cookie = open_session(gw.spool_path, "alice@example.com")
    status, headers, _ = fetch(gw.base + "/", cookie)
    assert status == 303 and headers["location"] == "/mail/inbox"
    status, headers, _ = fetch(gw.base + "/", "not-a-session")
    assert headers["location"] == "/login"
    page = browser_page(browser, gw, cookie)
    rec = Recorder(page, gw.base)
    page.goto(gw.base + "/no/such/page")
    assert "alice@example.com" in page.content()     # the header shows who is logged in
    assert not rec.foreign and not rec.dialogs
    page.context.close()
