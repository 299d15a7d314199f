"""The alert link in a real gateway (alert-only mode, a dead downstream) and Debian's chromium:
the alert that asks for a confirmation carries a signed single-use link to the console's confirm
page; a logged-out admin opens it, logs in (password + TOTP), lands back on it and confirms; the
event starts. The link does not work a second time, nor after it expired. The time from opening
the link to the confirmed state in the spool is measured (printed: ``-s`` shows it)."""
from __future__ import annotations

import re
import time

from spool import accounts
from spool import db as spool_db
from tests.conftest import fast_continuity
from tests.support.peers import wait_for
from tests.webmail.admin_support import browser_login, hashed, make_admin, state_row
from tests.webmail.conftest import audit_rows, fetch, open_admin_session, spool_rows, start_webmail

PASSWORD = "a long admin passphrase"
LINK = re.compile(r"(http://\S+/admin/confirm\?t=([A-Za-z0-9_-]+))")


class AlertSink:
    """A real HTTP server taking the gateway's apprise ``json://`` alerts: ``bodies`` holds the
    raw request bodies received."""

    def __init__(self):
        import http.server
        import threading
        self.bodies: list[str] = []
        sink = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                n = int(self.headers.get("content-length") or 0)
                sink.bodies.append(self.rfile.read(n).decode("utf-8", "replace"))
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a):
                pass
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def test_the_alert_link_confirms_once_after_login_and_not_after_expiry(peers, tmp_path, browser):
    sink = AlertSink()
    toml = fast_continuity("postmaster@example.com", mode="alert-only",
                           alert_urls=[f"json://127.0.0.1:{sink.port}/alert"])
    gw = start_webmail(peers, tmp_path, continuity=None,
                       extra=toml + '[admin]\nlisten = "127.0.0.1:0"\nalert_link_ttl = 900.0\n')
    secret = make_admin(gw.spool_path, "ops", PASSWORD)
    wait_for(lambda: state_row(gw.spool_path).get("awaiting_confirm") == 1, 30,
             what="the engine waits for a confirmation")
    wait_for(lambda: any(LINK.search(b) for b in sink.bodies), 15, what="the alert with its link")
    [(url, token)] = {m.groups() for b in sink.bodies for m in LINK.finditer(b)}
    assert url.startswith(gw.base + "/admin/confirm?t=")
    [tok] = spool_rows(gw.spool_path, "SELECT * FROM webmail_tokens WHERE kind='admin_alert'")
    assert tok["token_hash"] == hashed(token) and token not in str(tok)     # stored hashed
    assert tok["expires_at"] - tok["created_at"] == 900.0                  # [admin] alert_link_ttl

    # a logged-out admin: the link → login → TOTP → back on the confirm page → confirmed
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    t0 = time.monotonic()
    page.goto(url)
    assert page.url.startswith(gw.base + "/admin/login?next=")
    t_login = time.monotonic()
    browser_login(page, gw.base, "ops", PASSWORD, secret)
    t_logged = time.monotonic()
    assert page.url == url                               # landed back on the link
    assert "Holds mail for 1 domain: example.com" in page.inner_text("#effect")
    with page.expect_navigation():
        page.click("button.danger")
    wait_for(lambda: state_row(gw.spool_path).get("mode") == "continuity", 15, what="confirmed")
    elapsed = time.monotonic() - t0
    print(f"\nalert link -> confirmed event: {elapsed:.2f} s (scripted: open {t_login - t0:.2f} s,"
          f" password + TOTP {t_logged - t_login:.2f} s, confirm {time.monotonic() - t_logged:.2f} s)")
    assert page.inner_text("#st-mode") == "continuity"
    [ca] = spool_rows(gw.spool_path, "SELECT * FROM continuity_audit WHERE dst='continuity'")
    assert ca["actor"] == "admin:ops"
    [wa] = audit_rows(gw.spool_path, "admin_command")
    assert (wa["actor"], wa["result"], wa["detail"][:22]) == ("admin:ops", "ok", "confirm via alert link")
    assert spool_rows(gw.spool_path, "SELECT used_at FROM webmail_tokens WHERE kind='admin_alert'"
                      )[0]["used_at"] > 0

    # not a second time (the page, and a replayed POST)
    page.goto(url)
    assert "already used or has expired" in page.content()
    cookie = next(c for c in context.cookies() if c["name"] == "mailgate-admin")["value"]
    from tests.webmail.conftest import csrf_of
    status, _, body = fetch(gw.base + "/admin/confirm", method="POST",
                            data={"csrf": csrf_of(gw.spool_path, cookie), "t": token},
                            headers={"Cookie": f"mailgate-admin={cookie}", "Sec-Fetch-Site": "same-origin"})
    assert status == 410 and b"already used" in body
    assert [a["result"] for a in audit_rows(gw.spool_path, "admin_command")] == ["ok", "refused"]

    # not after expiry: a link issued an hour ago with a 900 s lifetime
    conn = spool_db.connect(gw.spool_path)
    try:
        old = spool_db.transaction(conn, lambda: accounts.issue_token(
            conn, "admin:*", "admin_alert", ttl=900.0, now=time.time() - 3600))
    finally:
        conn.close()
    admin = open_admin_session(gw.spool_path, "ops")
    status, _, body = fetch(f"{gw.base}/admin/confirm?t={old}", headers={"Cookie": f"mailgate-admin={admin}"})
    assert status == 410 and b"expired" in body
    status, _, _ = fetch(gw.base + "/admin/confirm", method="POST",
                         data={"csrf": csrf_of(gw.spool_path, admin), "t": old},
                         headers={"Cookie": f"mailgate-admin={admin}", "Sec-Fetch-Site": "same-origin"})
    assert status == 410
    assert state_row(gw.spool_path)["mode"] == "continuity"
    context.close()
    sink.close()
