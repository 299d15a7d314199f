"""Login to the webmail in a real gateway and a real chromium: password, admin-issued link,
enrolment link, TOTP, logout, password change, rate limits before argon2, cross-site POSTs,
and `available = "during_events"`. Every test asserts on the spool's state (webmail_sessions,
webmail_audit) and on what the browser holds (its cookie jar, the page it landed on)."""
from __future__ import annotations

import statistics
import time

import pyotp

from tests.webmail.conftest import (Client, audit_rows, browser_page, open_session, session_row,
                                    set_password, spool_rows, start_webmail)

ALICE, PASSWORD = "alice@example.com", "correct horse battery"
WRONG = "Wrong address or password."


def login_in_browser(page, base: str, address: str, password: str) -> None:
    page.goto(base + "/login")
    page.fill("#address", address)
    page.fill("#password", password)
    with page.expect_navigation():
        page.click("button[type=submit]")


def browser_cookie(page, name: str = "mailgate") -> dict | None:
    return next((c for c in page.context.cookies() if c["name"] == name), None)


def test_password_login_rotates_the_session_sets_strict_cookies_and_logout_revokes(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    set_password(gw, ALICE, PASSWORD)
    page = browser_page(browser, gw)
    # a cookie planted before login (session fixation) is never promoted
    page.context.add_cookies([{"name": "mailgate", "value": "planted-by-attacker", "url": gw.base}])
    page.goto(gw.base + "/login")
    pre = browser_cookie(page, "mailgate-pre")
    assert pre is not None and pre["httpOnly"] and pre["sameSite"] == "Strict"
    login_in_browser(page, gw.base, ALICE, PASSWORD)
    assert page.url == gw.base + "/mail/inbox"
    assert ALICE in page.content()
    c = browser_cookie(page)
    assert (c["httpOnly"], c["sameSite"], c["path"], c["secure"]) == (True, "Strict", "/", False)
    assert c["value"] not in ("planted-by-attacker", pre["value"])
    assert browser_cookie(page, "mailgate-pre") is None          # dropped at login
    row = session_row(gw.spool_path, c["value"])
    assert row["address"] == ALICE and row["revoked"] == 0 and row["mfa"] == 0
    assert session_row(gw.spool_path, "planted-by-attacker") is None
    assert row["user_agent"] and row["client"] == "127.0.0.1"
    assert row["expires_at"] - row["created_at"] == 30 * 86400.0   # session_absolute
    [ok] = audit_rows(gw.spool_path, "login", ALICE)
    assert (ok["result"], ok["detail"], ok["client"]) == ("ok", "method=password", "127.0.0.1")
    assert "Chrome" in ok["user_agent"]

    # logout (the nav's form) revokes; the old cookie is refused afterwards
    with page.expect_navigation():
        page.click("text=Log out")
    assert page.url == gw.base + "/login"
    assert session_row(gw.spool_path, c["value"])["revoked"] == 1
    old = Client(gw.base)
    old.cookies["mailgate"] = c["value"]
    status, headers, _ = old.get("/")
    assert status == 303 and headers["location"] == "/login"
    status, headers, _ = old.get("/settings")
    assert status == 303 and headers["location"] == "/login"
    assert [r["result"] for r in audit_rows(gw.spool_path, "logout", ALICE)] == ["ok"]
    page.context.close()


def test_a_password_change_revokes_the_other_sessions_only(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    set_password(gw, ALICE, PASSWORD)
    other = open_session(gw.spool_path, ALICE)           # e.g. the phone, logged in earlier
    page = browser_page(browser, gw)
    login_in_browser(page, gw.base, ALICE, PASSWORD)
    mine = browser_cookie(page)["value"]
    page.goto(gw.base + "/settings")
    page.fill("#current", PASSWORD)
    page.fill("#password", "a new long password")
    page.fill("#password2", "a new long password")
    with page.expect_navigation():
        page.click("text=Change password")
    assert "Your other sessions were logged out" in page.content()
    assert session_row(gw.spool_path, other)["revoked"] == 1
    assert session_row(gw.spool_path, mine)["revoked"] == 0
    c = Client(gw.base)
    c.cookies["mailgate"] = other
    assert c.get("/")[1]["location"] == "/login"
    [changed] = audit_rows(gw.spool_path, "password_changed", ALICE)
    assert (changed["result"], changed["detail"]) == ("ok", "other_sessions_revoked=1")
    # the new password works, the old one does not
    assert Client(gw.base).login(ALICE, "a new long password")[0] == 303
    assert Client(gw.base).login(ALICE, PASSWORD)[0] == 401
    # a wrong current password changes nothing
    page.goto(gw.base + "/settings")
    page.fill("#current", "not the password")
    page.fill("#password", "third long password")
    page.fill("#password2", "third long password")
    with page.expect_navigation():
        page.click("text=Change password")
    assert "The current password is wrong." in page.content()
    assert Client(gw.base).login(ALICE, "a new long password")[0] == 303
    page.context.close()


def test_unknown_users_look_like_wrong_passwords_and_the_limit_comes_before_any_hash(peers, tmp_path):
    gw = start_webmail(peers, tmp_path)
    set_password(gw, ALICE, PASSWORD)
    c = Client(gw.base)
    timings = {"wrong": [], "unknown": []}
    pages = {}
    for i in range(10):                       # IPv4 /32: 10 failures a minute
        kind = "wrong" if i % 2 else "unknown"
        address = ALICE if kind == "wrong" else f"nobody{i}@example.com"
        pre = c.pre()
        t0 = time.perf_counter()
        status, _, body = c.post("/login", {"pre": pre, "address": address, "password": "guess"})
        timings[kind].append(time.perf_counter() - t0)
        assert status == 401 and WRONG in body
        pages[kind] = body.replace(address, "ADDRESS")
    assert pages["wrong"] == pages["unknown"]          # the same page, byte for byte
    wrong, unknown = statistics.median(timings["wrong"]), statistics.median(timings["unknown"])
    assert 0.5 < unknown / wrong < 2.0, timings       # both cost one argon2 hash
    limited = []
    for _ in range(5):                        # even the right password is refused now, unhashed
        pre = c.pre()
        t0 = time.perf_counter()
        status, headers, body = c.post("/login", {"pre": pre, "address": ALICE, "password": PASSWORD})
        limited.append(time.perf_counter() - t0)
        assert status == 429 and headers["retry-after"] == "60" and "Too many attempts" in body
    print(f"failed login median {wrong * 1000:.0f} ms (unknown user {unknown * 1000:.0f} ms); "
          f"rate-limited {statistics.median(limited) * 1000:.1f} ms")
    assert max(limited) < min(timings["wrong"] + timings["unknown"]) / 2, (limited, timings)
    rows = audit_rows(gw.spool_path, "login")
    assert [r["result"] for r in rows] == ["failed"] * 10 + ["rate_limited"] * 5
    assert sum("unknown_user" in r["detail"] for r in rows) == 5
    assert not spool_rows(gw.spool_path, "SELECT * FROM webmail_sessions")

    # per account: failures from ten other addresses of the /26 lock the account, not the network
    for n in range(10):
        status, _, _ = Client(gw.base, source=f"127.0.0.{n + 2}").login("bob@example.com", "guess")
        assert status == 401
    assert Client(gw.base, source="127.0.0.40").login("bob@example.com", "guess")[0] == 429
    assert Client(gw.base, source="127.0.0.41").login("carol@example.com", "guess")[0] == 401


def test_cross_site_posts_to_login_and_logout_are_refused_and_change_nothing(peers, tmp_path):
    gw = start_webmail(peers, tmp_path)
    set_password(gw, ALICE, PASSWORD)
    c = Client(gw.base)
    form = {"pre": c.pre(), "address": ALICE, "password": PASSWORD}
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
                    {"Sec-Fetch-Site": None, "Origin": "http://evil.test"},
                    {"Sec-Fetch-Site": None, "Origin": "null"}, {"Sec-Fetch-Site": None}):
        status, _, body = c.post("/login", form, headers=headers)
        assert status == 403, headers
        assert "Traceback" not in body
    status, _, _ = c.post("/login", {**form, "pre": "forged"})        # no valid pre-session token
    assert status == 403
    bare = Client(gw.base)                                            # no pre-session cookie at all
    assert bare.post("/login", form)[0] == 403
    assert not spool_rows(gw.spool_path, "SELECT * FROM webmail_sessions")
    assert not audit_rows(gw.spool_path, "login")
    # the Origin fallback (no Fetch-Metadata) of the same origin is accepted
    status, headers, _ = c.post("/login", form, headers={"Sec-Fetch-Site": None, "Origin": gw.base})
    assert status == 303 and headers["location"] == "/mail/inbox"
    sid = c.cookies["mailgate"]
    _, _, settings = c.get("/settings")
    from tests.webmail.conftest import CSRF_FIELD
    csrf = CSRF_FIELD.search(settings).group(1)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": None, "Origin": "http://evil.test"}):
        assert c.post("/logout", {"csrf": csrf}, headers=headers)[0] == 403
    assert c.post("/logout", {"csrf": "wrong"})[0] == 403
    assert session_row(gw.spool_path, sid)["revoked"] == 0
    assert c.get("/")[1]["location"] == "/mail/inbox"
    assert not audit_rows(gw.spool_path, "logout")
    assert c.post("/logout", {"csrf": csrf})[0] == 303
    assert session_row(gw.spool_path, sid)["revoked"] == 1


def test_with_totp_the_password_alone_does_not_log_in(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    set_password(gw, ALICE, PASSWORD)
    page = browser_page(browser, gw)
    login_in_browser(page, gw.base, ALICE, PASSWORD)
    page.goto(gw.base + "/settings")
    with page.expect_navigation():
        page.click("text=Set up two-step login")
    secret = page.inner_text("#totp-secret")
    assert page.inner_text("#totp-uri").startswith("otpauth://totp/")
    page.fill("#totp-code", pyotp.TOTP(secret).now())
    with page.expect_navigation():
        page.click("text=Turn on two-step login")
    assert "Two-step login is on" in page.content()
    assert spool_rows(gw.spool_path, "SELECT totp_secret FROM webmail_users")[0]["totp_secret"] == secret
    page.context.close()

    page = browser_page(browser, gw)
    login_in_browser(page, gw.base, ALICE, PASSWORD)
    assert page.url == gw.base + "/login/totp"
    assert browser_cookie(page) is None                     # no session yet
    page.goto(gw.base + "/settings")                        # nothing is reachable yet
    assert page.url == gw.base + "/login"
    page.goto(gw.base + "/login/totp")
    page.fill("#code", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert "That code is not right" in page.content()
    assert not spool_rows(gw.spool_path, "SELECT * FROM webmail_sessions WHERE revoked=0 AND mfa=1")
    code = pyotp.TOTP(secret).now()
    page.fill("#code", code)
    with page.expect_navigation():
        page.click("button[type=submit]")
    assert page.url == gw.base + "/mail/inbox"
    assert session_row(gw.spool_path, browser_cookie(page)["value"])["mfa"] == 1
    page.context.close()
    # the same TOTP code cannot be used twice
    c = Client(gw.base)
    status, headers, _ = c.login(ALICE, PASSWORD)
    assert headers["location"] == "/login/totp"
    status, _, _ = c.post("/login/totp", {"pre": c.pre("/login/totp"), "code": code})
    assert status == 401 and "mailgate" not in c.cookies
    results = [(r["result"], r["detail"]) for r in audit_rows(gw.spool_path, "login", ALICE)]
    assert results == [("ok", "method=password"), ("failed", "method=password+totp"),
                       ("ok", "method=password+totp"), ("failed", "method=password+totp")]
    assert [r["result"] for r in audit_rows(gw.spool_path, "totp_enrolled", ALICE)] == ["ok"]


def test_during_events_login_opens_with_an_event_and_its_sessions_outlive_it(peers, tmp_path):
    from tests.conftest import fast_continuity
    from tests.support.peers import wait_for
    exchange = peers.sink("127.0.0.1", None, "exchange")
    gw = start_webmail(peers, tmp_path, webmail_toml='available = "during_events"',
                       smarthost=f"[127.0.0.1]:{exchange.port}", continuity=None,
                       extra=fast_continuity("postmaster@example.com", mode="alert-only"))
    set_password(gw, ALICE, PASSWORD)
    c = Client(gw.base)
    status, _, body = c.get("/login")
    assert status == 503 and "not open now" in body
    assert c.get("/login/code")[0] == 503
    before = open_session(gw.spool_path, ALICE)       # opened during an earlier event
    s = Client(gw.base)
    s.cookies["mailgate"] = before
    assert s.get("/settings")[0] == 200

    def mode():
        return gw.gw.cli("continuity", "status").stdout.split()[1]
    assert gw.gw.cli("continuity", "start", "--reason", "drill").stdout.strip() == "ok: continuity"
    status, headers, _ = Client(gw.base).login(ALICE, PASSWORD)
    assert status == 303 and headers["location"] == "/mail/inbox"
    during = Client(gw.base)
    assert during.login(ALICE, PASSWORD)[0] == 303
    assert s.get("/settings")[0] == 200               # the session from before the event works
    assert gw.gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: mode() == "normal", 20, what="the end of the event")
    assert Client(gw.base).get("/login")[0] == 503
    assert during.get("/settings")[0] == 200 and s.get("/settings")[0] == 200   # sessions go on
    assert [r["result"] for r in audit_rows(gw.spool_path, "login")] == ["ok", "ok"]


def test_a_flood_of_logins_waits_for_a_bounded_number_of_hashes_then_gets_503(peers, tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    gw = start_webmail(peers, tmp_path, webmail_toml="max_concurrent_hashes = 1")
    clients = [Client(gw.base, source=f"127.0.0.{n + 2}") for n in range(24)]
    forms = [{"pre": c.pre(), "address": f"user{n}@example.com", "password": "guess"}
             for n, c in enumerate(clients)]
    with ThreadPoolExecutor(len(clients)) as pool:
        results = list(pool.map(lambda cf: cf[0].post("/login", cf[1]), zip(clients, forms)))
    statuses = sorted(r[0] for r in results)
    print("flood of 24 logins, 1 hash at a time:", {s: statuses.count(s) for s in set(statuses)})
    assert set(statuses) == {401, 503}, statuses
    assert 9 <= statuses.count(401) <= 20           # one hashing, at most 8 waiting, as they arrive
    assert all("Traceback" not in r[2] for r in results)
    assert all(r[1].get("retry-after") == "30" for r in results if r[0] == 503)
    assert len(audit_rows(gw.spool_path, "login")) == statuses.count(401)


def test_over_https_the_cookies_are_host_prefixed_and_secure(peers, tmp_path, browser):
    import ssl
    import urllib.request

    import trustme

    from tests.conftest import config_toml
    from tests.support.peers import free_port, wait_for
    from tests.webmail.conftest import WebmailGateway
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "web.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "web.key"))
    port, web = free_port(), free_port()
    toml = config_toml(port=port, data_dir=tmp_path / "data", smarthost="[127.0.0.1]:9",
                       extra=f'\n[webmail]\nlisten = "127.0.0.1:{web}"\ntls_cert = "{tmp_path / "web.pem"}"\n'
                             f'tls_key = "{tmp_path / "web.key"}"\n')
    proc = peers.gateway(toml, port)
    base = f"https://127.0.0.1:{web}"
    unverified = ssl._create_unverified_context()

    def up():
        try:
            return urllib.request.urlopen(base + "/healthz", timeout=2, context=unverified).status == 200
        except OSError:
            return False
    wait_for(up, 20, what="webmail over https")
    gw = WebmailGateway(proc, base, tmp_path / "data" / "spool.db", port)
    set_password(gw, ALICE, PASSWORD)
    context = browser.new_context(ignore_https_errors=True)
    page = context.new_page()
    page.goto(base + "/login")
    pre = browser_cookie(page, "__Host-mailgate-pre")
    assert pre["secure"] and pre["httpOnly"] and pre["path"] == "/"
    login_in_browser(page, base, ALICE, PASSWORD)
    assert page.url == base + "/mail/inbox"
    c = browser_cookie(page, "__Host-mailgate")
    assert (c["secure"], c["httpOnly"], c["sameSite"], c["path"]) == (True, True, "Strict", "/")
    assert not [k for k in context.cookies() if k["name"] == "mailgate"]
    assert session_row(gw.spool_path, c["value"])["address"] == ALICE
    context.close()


def test_malformed_and_oversized_login_forms_get_a_clear_400(peers, tmp_path):
    import http.client
    gw = start_webmail(peers, tmp_path)
    c = Client(gw.base)
    pre = c.pre()
    conn = http.client.HTTPConnection(c.host, c.port, timeout=10)       # a multipart body cut short
    conn.request("POST", "/login", body=b"--zzz\r\nContent-Disposition: form-data\r\n\r\n", headers={
        "Content-Type": "multipart/form-data; boundary=zzz", "Sec-Fetch-Site": "same-origin",
        "Cookie": "; ".join(f"{k}={v}" for k, v in c.cookies.items())})
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 400 and "The form could not be read." in text and "Traceback" not in text
    status, _, body = c.post("/login", {"pre": pre, "address": ALICE, "password": "x" * 20000})
    assert status == 400 and "Traceback" not in body                    # a field over 16 KiB
    status, _, body = c.post("/login", {"pre": pre, "address": "a\u202eb@example.com", "password": "x"})
    assert status == 400 and "Enter your full e-mail address" in body   # an RTL override
    assert not audit_rows(gw.spool_path, "login")                       # no hash, nothing to audit
