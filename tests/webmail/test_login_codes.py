"""One-time login codes end to end: the gateway sends the code through its own internet MX path
(dnsmasq gives the alternate address' domain an MX that is a real SMTP sink; Exchange is a dead
port), the code is read from the delivered message and typed into chromium; a code works once,
is spent after login_code_tries wrong tries and refused once expired; the request page answers
the same for real, unknown and contact-less users; SMS codes go through apprise."""
from __future__ import annotations

import email
import email.policy
import json
import re
import statistics
import time

from tests.support.dnsserver import DnsServer
from tests.support.peers import wait_for
from tests.webmail.conftest import Client, audit_rows, browser_page, session_row, spool_rows, start_webmail

ALICE, ALT = "alice@example.com", "alice.home@home.test"
SENT = "If the address is registered, a code was sent"
WRONG = "The code is wrong, used or expired."


def directory(tmp_path, hook_port: int | None = None):
    path = tmp_path / "recipients.json"
    path.write_text(json.dumps({"mailboxes": [
        {"address": ALICE, "aliases": ["a.smith@example.com"], "alt_email": ALT},
        "bob@example.com",                                          # no alternate contact
        {"address": "dave@example.com", "phone": "+44 1632 960961"},
        {"address": "erin@example.com", "alt_email": "erin@example.com"},   # her own (down) mailbox
    ], "groups": [{"address": "team@example.com", "members": [ALICE]}]}))
    return path


def start(peers, tmp_path, webmail_toml: str = "", hook_port: int | None = None):
    mx = peers.sink("127.0.0.41", None, "home-mx")
    dns = DnsServer(mx={"home.test": [(10, "mx.home.test")]}, a={"mx.home.test": "127.0.0.41"}).start()
    if hook_port is not None:
        webmail_toml += f'\nsms_url = "json://127.0.0.1:{hook_port}/sms?:phone={{phone}}"\n'
    gw = start_webmail(peers, tmp_path, directory=directory(tmp_path), dns_port=dns.port,
                       mx_port=mx.port, smarthost="[127.0.0.1]:9", webmail_toml=webmail_toml)
    return gw, mx, dns


def ask_code(c: Client, address: str) -> tuple[int, str]:
    status, _, body = c.post("/login/code", {"pre": c.pre("/login/code"), "action": "send",
                                             "address": address})
    return status, body


def codes_at(mx) -> list[str]:
    out = []
    for env, data in mx.messages():
        msg = email.message_from_bytes(data, policy=email.policy.default)
        m = re.search(r"^\s+(\d{4}) (\d{4})\s*$", msg.get_content(), re.M)
        out.append(m.group(1) + m.group(2))
    return out


def test_a_code_to_the_alternate_address_logs_in_once_and_five_wrong_tries_spend_it(peers, tmp_path, browser):
    gw, mx, dns = start(peers, tmp_path)
    try:
        page = browser_page(browser, gw)
        page.goto(gw.base + "/login")
        with page.expect_navigation():
            page.click("text=Get a one-time code")
        page.fill("#address", "A.Smith@example.com")           # an alias: the code is alice's
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert SENT in page.content()
        wait_for(lambda: mx.count() == 1, 30, what="the code at the alternate address' MX")
        [(env, data)] = mx.messages()
        assert env["rcpt_tos"] == [ALT] and env["mail_from"] == "postmaster@example.com"
        msg = email.message_from_bytes(data, policy=email.policy.default)
        assert msg["Auto-Submitted"] == "auto-generated" and msg["To"].addresses[0].addr_spec == ALT
        [code] = codes_at(mx)
        assert len(code) == 8
        stored = spool_rows(gw.spool_path, "SELECT * FROM webmail_tokens WHERE kind='code'")
        assert [(t["address"], t["used_at"]) for t in stored] == [(ALICE, 0)]
        assert code not in json.dumps(stored)                  # only a hash is stored
        assert stored[0]["expires_at"] - stored[0]["created_at"] == 600.0
        page.fill("#code", f"{code[:4]} {code[4:]}")
        with page.expect_navigation():
            page.click("button[type=submit]")
        assert page.url == gw.base + "/mail/inbox"
        sid = next(c["value"] for c in page.context.cookies() if c["name"] == "mailgate")
        assert session_row(gw.spool_path, sid)["address"] == ALICE
        page.context.close()

        # single use
        c = Client(gw.base)
        status, _, body = c.post("/login/code", {"pre": c.pre(), "action": "verify", "address": ALICE,
                                                 "code": code})
        assert status == 401 and WRONG in body and "mailgate" not in c.cookies

        # a new code, five wrong tries: then even the right one is refused
        assert SENT in ask_code(c, ALICE)[1]
        wait_for(lambda: mx.count() == 2, 30, what="the second code")
        second = codes_at(mx)[1]
        wrong = f"{(int(second) + 1) % 10 ** 8:08d}"
        for _ in range(5):
            assert c.post("/login/code", {"pre": c.pre(), "action": "verify", "address": ALICE,
                                          "code": wrong})[0] == 401
        status, _, _ = c.post("/login/code", {"pre": c.pre(), "action": "verify", "address": ALICE,
                                              "code": second})
        assert status == 401 and "mailgate" not in c.cookies
        [first, spent] = spool_rows(gw.spool_path, "SELECT * FROM webmail_tokens ORDER BY id")
        assert spent["tries"] == 5 and spent["used_at"] > 0
        assert len(spool_rows(gw.spool_path, "SELECT * FROM webmail_sessions")) == 1
    finally:
        dns.stop()
    issued = audit_rows(gw.spool_path, "login_code_issued", ALICE)
    assert [r["result"] for r in issued] == ["ok", "ok"]
    assert issued[0]["detail"].startswith(f"channel=email to={ALT} queue_id=")
    used = [r["result"] for r in audit_rows(gw.spool_path, "login_code_used", ALICE)]
    assert used == ["ok", "none"] + ["wrong"] * 5 + ["none"]
    assert [r["detail"] for r in audit_rows(gw.spool_path, "login", ALICE)] == ["method=code"]


def test_the_request_page_is_the_same_for_real_unknown_and_contactless_users(peers, tmp_path):
    gw, mx, dns = start(peers, tmp_path)
    try:
        pages, timings = {}, {}
        ask_code(Client(gw.base), "warm-up@example.com")      # first request: templates compile
        for who in ("nobody@example.com", ALICE, "bob@example.com", "team@example.com",
                    "erin@example.com", "someone@elsewhere.test"):
            c = Client(gw.base)
            t0 = time.perf_counter()
            status, body = ask_code(c, who)
            timings[who] = time.perf_counter() - t0
            assert status == 200 and SENT in body
            pages[who] = re.sub(r'name="pre" value="[^"]*"', "PRE", body.replace(who, "ADDRESS"))
        assert len(set(pages.values())) == 1, "the answer tells users apart"
        print("code request answered in " + ", ".join(f"{k}: {v * 1000:.0f} ms" for k, v in timings.items()))
        others = statistics.median(v for k, v in timings.items() if k != ALICE)
        assert timings[ALICE] < 3 * others + 0.05, timings
        wait_for(lambda: len(audit_rows(gw.spool_path, "login_code_issued")) == 7, 20, what="audit rows")
        time.sleep(2)
        assert [env["rcpt_tos"] for env, _ in mx.messages()] == [[ALT]]   # one code, to alice's alt only
    finally:
        dns.stop()
    by = {r["address"]: (r["result"], r["detail"]) for r in audit_rows(gw.spool_path, "login_code_issued")}
    assert by["nobody@example.com"] == ("refused", "unknown_user")
    assert by["team@example.com"] == ("refused", "unknown_user")          # a group is not a user
    assert by["bob@example.com"] == ("no_contact", "")
    assert by["erin@example.com"] == ("no_contact", "")                   # never to her own mailbox
    assert by[ALICE][0] == "ok"
    # the fourth request for one account within 10 minutes is refused (codes sent: 3 per 10 min)
    c = Client(gw.base)
    assert [ask_code(c, "bob@example.com")[0] for _ in range(3)] == [200, 200, 429]


def test_an_expired_code_is_refused(peers, tmp_path):
    gw, mx, dns = start(peers, tmp_path, webmail_toml="login_code_ttl = 2.0")
    try:
        c = Client(gw.base)
        assert SENT in ask_code(c, ALICE)[1]
        wait_for(lambda: mx.count() == 1, 30, what="the code")
        [code] = codes_at(mx)
        time.sleep(2.5)
        status, _, body = c.post("/login/code", {"pre": c.pre(), "action": "verify", "address": ALICE,
                                                 "code": code})
        assert status == 401 and WRONG in body and "mailgate" not in c.cookies
    finally:
        dns.stop()
    assert [r["result"] for r in audit_rows(gw.spool_path, "login_code_used")] == ["expired"]
    assert not spool_rows(gw.spool_path, "SELECT * FROM webmail_sessions")


def test_a_code_by_sms_goes_through_apprise_to_the_phone(peers, tmp_path, webhook):
    hook_port, hook_dir = webhook
    gw, mx, dns = start(peers, tmp_path, hook_port=hook_port)
    try:
        c = Client(gw.base)
        assert SENT in ask_code(c, "dave@example.com")[1]
        wait_for(lambda: len(list(hook_dir.glob("*.json"))) == 1, 20, what="the SMS at the webhook")
        [posted] = [json.loads(p.read_text()) for p in hook_dir.glob("*.json")]
        assert posted["phone"] == "+441632960961"
        code = re.search(r"(\d{4}) (\d{4})", posted["message"])
        status, headers, _ = c.post("/login/code", {"pre": c.pre(), "action": "verify",
                                                    "address": "dave@example.com",
                                                    "code": code.group(1) + code.group(2)})
        assert status == 303 and headers["location"] == "/mail/inbox"
    finally:
        dns.stop()
    [issued] = audit_rows(gw.spool_path, "login_code_issued", "dave@example.com")
    assert (issued["result"], issued["detail"]) == ("ok", "channel=sms to=+441632960961")
