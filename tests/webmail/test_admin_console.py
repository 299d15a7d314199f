"""The admin console in a real gateway and Debian's chromium: enrolment through the CLI's link,
login with password + TOTP (codes used once), the button (start with a reason), what the status
page shows and how it follows the state without a reload, 403 for a webmail user on every admin
URL and a refused cross-site POST to every admin action (routes enumerated from the app's /admin
Mount). Assertions on the spool: continuity_state, continuity_audit, webmail_audit,
webmail_sessions."""
from __future__ import annotations

import re
import time

from tests.support.peers import wait_for
from webmail.admin.views_auth import ROUTES as AUTH_ROUTES
from tests.webmail.admin_support import (admin_routes, admins_cli, browser_login, continuity_cli,
                                         make_admin, state_row, totp_now)
from tests.webmail.conftest import (Client, audit_rows, csrf_of, fetch, open_admin_session,
                                    open_session, spool_rows, start_webmail)

PASSWORD = "a long admin passphrase"
#: the login part's pages work without an admin session (a webmail user may log in as an admin)
PUBLIC = {"/admin" + re.sub(r"\{[^}]*\}", "x", path) for path, _, _ in AUTH_ROUTES
          if path != "/logout"}


def test_enrol_login_with_totp_start_an_event_and_see_it(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path, continuity="alert-only")
    r = admins_cli(gw, "add", "Root")
    assert r.returncode == 0, r.stderr
    [link] = re.findall(r"http://\S+/admin/enrol/\S+", r.stdout)
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.goto(link)
    page.fill("#password", PASSWORD)
    page.fill("#password2", PASSWORD)
    with page.expect_navigation():
        page.click("button[type=submit]")
    secret = page.inner_text("#totp-secret").strip()
    assert page.inner_text("#totp-uri").startswith("otpauth://totp/")
    [row] = spool_rows(gw.spool_path, "SELECT * FROM admin_users")
    assert row["name"] == "root" and row["password_hash"].startswith("$argon2id$")
    assert row["totp_secret"] == secret
    page.goto(link)                                     # the enrolment link works once
    assert "already used" in page.content()

    page.goto(gw.base + "/admin")                       # logged out: to the login page
    assert page.url.startswith(gw.base + "/admin/login")
    browser_login(page, gw.base, "root", PASSWORD, secret)
    assert page.url.rstrip("/") == gw.base + "/admin"
    assert page.inner_text("#st-mode") in ("normal", "degraded")   # the smarthost is dead
    cookie = next(c for c in context.cookies() if c["name"] == "mailgate-admin")
    assert (cookie["httpOnly"], cookie["sameSite"]) == (True, "Strict")
    [login] = [a for a in audit_rows(gw.spool_path, "admin_login") if a["result"] == "ok"]
    assert (login["actor"], login["detail"]) == ("admin:root", "method=password+totp")
    # readable on a phone: nothing wider than the 360 px viewport
    assert page.evaluate("document.documentElement.scrollWidth") <= 360

    # the same TOTP code is not accepted twice (a second browser, same time step)
    step = int(time.time() // 30)
    code = totp_now(secret)
    c = Client(gw.base)
    status, _, _ = c.post("/admin/login", {"pre": c.pre("/admin/login"), "name": "root",
                                           "password": PASSWORD, "next": "/admin"})
    assert status == 303
    pre = re.search(r'name="pre" value="([^"]*)"', c.get("/admin/login/totp")[2]).group(1)
    status, _, text = c.post("/admin/login/totp", {"pre": pre, "code": code})
    if int(time.time() // 30) == step:     # the browser's login used this step's code
        assert status == 401 and "already used" in text

    # the button: start with a reason; the confirmation page says what it will do
    page.click("text=Start a continuity event")
    assert page.url == gw.base + "/admin/start"
    assert "Holds mail for 1 domain: example.com" in page.inner_text("#effect")
    page.fill("#reason", "Exchange upgrade went wrong")
    with page.expect_navigation():
        page.click("button.danger")
    assert page.inner_text("#st-mode") == "continuity"
    assert page.inner_text("#st-reason") == "Exchange upgrade went wrong"
    assert page.inner_text("#st-who").startswith("admin:root")
    st = state_row(gw.spool_path)
    assert (st["mode"], st["origin"], st["reason"]) == ("continuity", "admin", "Exchange upgrade went wrong")
    [ca] = spool_rows(gw.spool_path, "SELECT * FROM continuity_audit WHERE dst='continuity'")
    assert ca["src"] in ("normal", "degraded") and ca["actor"] == "admin:root"
    [wa] = audit_rows(gw.spool_path, "admin_command")
    assert (wa["actor"], wa["result"]) == ("admin:root", "ok")
    assert wa["detail"] == "start via console: Exchange upgrade went wrong"

    # the numbers follow the spool without a reload: a message arrives and is held
    assert page.inner_text("#st-held") == "0"
    page.evaluate("window.__notReloaded = true")
    import smtplib
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as smtp:
        smtp.sendmail("sender@remote.test", ["alice@example.com"],
                      b"From: <sender@remote.test>\r\nSubject: held\r\n\r\nheld during the event\r\n")
    wait_for(lambda: page.inner_text("#st-held") == "1", 20, what="held count updated by the script")
    assert page.evaluate("window.__notReloaded") is True
    assert page.locator("#queue td[data-state=hold]").inner_text() == "1"

    # a second start is refused, clearly
    page.goto(gw.base + "/admin/start")
    page.fill("#reason", "again")
    with page.expect_navigation():
        page.click("button.danger")
    assert "The gateway refused" in page.content()

    # the page follows the state without a reload: the CLI ends the event
    page.goto(gw.base + "/admin")
    r = continuity_cli(gw, "stop", "--reason", "fixed")
    assert r.returncode == 0, r.stderr
    # (recovering, then normal, then degraded again at once: the smarthost is still dead)
    wait_for(lambda: page.inner_text("#st-mode") in ("recovering", "normal", "degraded"), 15,
             what="status page updated by its script")

    # logout revokes the session
    with page.expect_navigation():
        page.click("text=Log out")
    sess = spool_rows(gw.spool_path, "SELECT revoked FROM webmail_sessions WHERE address='admin:root'")
    assert sess and all(s["revoked"] == 1 for s in sess)
    context.close()


def test_a_webmail_user_gets_403_everywhere_and_cross_site_posts_are_refused(peers, tmp_path):
    gw = start_webmail(peers, tmp_path, continuity="alert-only", extra='[admin]\nlisten = "127.0.0.1:0"\ntoken = "s3cret-token-value"\n')
    routes = admin_routes()
    assert ("GET", "/admin/") in routes and ("POST", "/admin/start") in routes
    assert len([p for m, p in routes if m == "POST"]) >= 9
    user = open_session(gw.spool_path, "alice@example.com")
    admin = open_admin_session(gw.spool_path, "root")
    admin_csrf = csrf_of(gw.spool_path, admin)
    user_csrf = csrf_of(gw.spool_path, user)
    both = f"mailgate={user}; mailgate-admin={admin}"
    for method, path in routes:
        url = gw.base + path
        if path not in PUBLIC:
            status, _, _ = fetch(url, user, method=method,
                                 data={"csrf": user_csrf, "reason": "x"} if method == "POST" else None,
                                 headers={"Sec-Fetch-Site": "same-origin"})
            assert status == 403, (method, path, status)
        if method == "POST":
            for h in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.test"}, {}):
                status, _, _ = fetch(url, method="POST", data={"csrf": admin_csrf, "reason": "x",
                                                               "t": "x", "pre": "x"},
                                     headers={"Cookie": both, **h})
                assert status == 403, (path, h, status)
    assert state_row(gw.spool_path).get("mode", "normal") in ("normal", "degraded")   # nothing done
    assert not spool_rows(gw.spool_path, "SELECT * FROM continuity_audit WHERE actor LIKE 'admin:%'")
    assert not audit_rows(gw.spool_path, "admin_command")

    # no enumeration: an unknown name, an unenrolled admin and a wrong password look the same
    make_admin(gw.spool_path, "ops", PASSWORD)
    answers = set()
    for name, password in (("nobody", PASSWORD), ("root", PASSWORD), ("ops", "wrong password!")):
        c = Client(gw.base)
        status, _, text = c.post("/admin/login", {"pre": c.pre("/admin/login"), "name": name,
                                                  "password": password, "next": "/admin"})
        answers.add((status, "Wrong name or password." in text, "mailgate-admin-mfa" in c.cookies))
    assert answers == {(401, True, False)}
    details = [a["detail"] for a in audit_rows(gw.spool_path, "admin_login")]
    assert details == ["method=password unknown", "method=password not_enrolled",
                       "method=password wrong_password"]

    # the admin token exchanged for a session (audited); a wrong token is not
    c = Client(gw.base)
    status, _, _ = c.post("/admin/login/token", {"pre": c.pre("/admin/login/token"),
                                                 "token": "wrong", "next": "/admin"})
    assert status == 401
    status, h, _ = c.post("/admin/login/token", {"pre": c.pre("/admin/login/token"),
                                                 "token": "s3cret-token-value", "next": "/admin"})
    assert status == 303 and "mailgate-admin" in c.cookies
    assert c.get("/admin/")[0] == 200
    results = [(a["actor"], a["result"], a["detail"]) for a in audit_rows(gw.spool_path, "admin_login")]
    assert ("admin:token", "failed", "method=token wrong_token") in results
    assert ("admin:token", "ok", "method=token") in results


def test_the_replay_progress_bar_moves_without_a_reload(peers, tmp_path, browser):
    import smtplib
    sink = peers.sink()
    gw = start_webmail(peers, tmp_path, smarthost=f"[127.0.0.1]:{sink.port}", continuity=None,
                       extra='[continuity]\nmode = "automatic"\ntick = 0.2\nreplay_rate = 1.0\n'
                             'replay_concurrency = 1\n')
    secret = make_admin(gw.spool_path, "ops", PASSWORD)
    context = browser.new_context(viewport={"width": 360, "height": 740})
    page = context.new_page()
    page.goto(gw.base + "/admin/start")
    browser_login(page, gw.base, "ops", PASSWORD, secret)
    assert page.url == gw.base + "/admin/start"
    page.fill("#reason", "replay test")
    with page.expect_navigation():
        page.click("button.danger")
    n = 10
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as smtp:
        for i in range(n):
            smtp.sendmail("sender@remote.test", ["alice@example.com"],
                          f"From: <sender@remote.test>\r\nSubject: m{i}\r\n\r\nbody {i}\r\n".encode())
    wait_for(lambda: page.inner_text("#st-held") == str(n), 20, what="all held")
    page.goto(gw.base + "/admin/stop")
    assert f"the {n} held messages are delivered" in page.inner_text("#effect")
    with page.expect_navigation():
        page.click("button.primary")
    assert page.inner_text("#st-mode") == "recovering"
    assert page.is_visible("#rp-bar")
    page.evaluate("window.__notReloaded = true")
    seen = set()

    def progressed():
        seen.add(int(page.inner_text("#rp-done")))
        return len(seen) >= 3 and page.evaluate("window.__notReloaded") is True
    wait_for(progressed, 30, what="the bar moves while the page stays")
    value = float(page.get_attribute("#rp-bar", "value"))
    assert 0 < value < 100
    wait_for(lambda: sink.count() == n, 30, what="replayed")
    context.close()
