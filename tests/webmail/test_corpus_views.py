"""Every real-world corpus message (../shared/corpus/messages: broken MIME, live phishing HTML,
odd charsets) filed into one mailbox of a real gateway: its message view, body URL, source and
every attachment answer without a 5xx, the folder pages stay 200 with all of them in, and a
sample opened in chromium fetches nothing from outside and runs nothing. Plus the list's own
hard cases: undecodable headers, no Date, a 2000-character subject, bidi overrides."""
from __future__ import annotations

import re
import time

from tests.conftest import corpus_files
from tests.webmail.conftest import Recorder, browser_page, fetch, file_raw, open_session, settle, start_webmail

USER = "alice@example.com"


def test_every_corpus_message_renders_without_a_5xx(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    cookie = open_session(gw.spool_path, USER)
    files = corpus_files()
    ids = {}
    for i, f in enumerate(files):
        ids[f.name] = file_raw(gw.spool_path, USER, f.read_bytes(), now=time.time() - i)
    failures = []
    for name, mid in ids.items():
        s, h, body = fetch(f"{gw.base}/msg/{mid}", cookie)
        if s != 200:
            failures.append((name, "", s))
            continue
        atts = sorted(set(int(n) for n in re.findall(rb'/msg/%d/att/(\d+)"' % mid, body)))
        for path in ["/body", "/body?remote=1", "/raw", "?view=text"] + [f"/att/{n}" for n in atts]:
            s, h, _ = fetch(f"{gw.base}/msg/{mid}{path}", cookie)
            if s != 200:
                failures.append((name, path, s))
            elif path.startswith("/body"):
                assert h["content-type"] == "text/html; charset=utf-8"
                assert h["content-security-policy"].startswith("sandbox allow-popups")
                assert h["x-frame-options"] == "SAMEORIGIN"
    assert failures == []
    pages = -(-len(files) // 50)
    for p in range(1, pages + 1):
        s, _, body = fetch(f"{gw.base}/mail/inbox?page={p}", cookie)
        assert s == 200 and body.count(b"<tr class=") == (50 if p < pages else len(files) - 50 * (pages - 1))
    assert fetch(f"{gw.base}/mail/search?q=the", cookie)[0] == 200

    page = browser_page(browser, gw, cookie)
    rec = Recorder(page, gw.base)
    for p in range(1, pages + 1):
        page.goto(f"{gw.base}/mail/inbox?page={p}")
    sample = [n for n in ids if any(k in n for k in ("phish", "spam", "html", "torture", "malformed"))][:25]
    for name in sample:
        page.goto(f"{gw.base}/msg/{ids[name]}")
        settle(page, 0.2)
        page.goto(f"{gw.base}/msg/{ids[name]}/body")
        settle(page, 0.2)
    assert len(sample) >= 10
    assert rec.foreign == [] and rec.dialogs == []
    page.context.close()


def test_the_list_stays_usable_with_broken_messages(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    cookie = open_session(gw.spool_path, USER)
    broken = [
        b"From: =?x-unknown?B?////?= <a@x.test>\r\nSubject: =?utf-8?B?!!!?=\r\n\r\nundecodable headers\r\n",
        b"From: b@x.test\r\nSubject: no date at all\r\n\r\nbody\r\n",
        b"From: c@x.test\r\nSubject: " + b"long " * 400 + b"\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\n\r\nx\r\n",
        "From: \u202eevil\u202c <d@x.test>\r\nSubject: invoice \u202efdp.exe\r\n\r\nrtl\r\n".encode(),
        b"Subject: \r\n\r\n",
        b"\xff\xfe\x00garbage without headers",
    ]
    for i, raw in enumerate(broken):
        file_raw(gw.spool_path, USER, raw, now=time.time() + i)
    s, _, body = fetch(f"{gw.base}/mail/inbox", cookie)
    assert s == 200 and body.count(b"<tr class=") == len(broken)
    text = body.decode()
    assert "\u202e" not in text and "\u202c" not in text
    assert "invoice fdp.exe" in text and "(no subject)" in text
    assert max(len(m) for m in re.findall(r'<a href="/msg/\d+"><bdi>([^<]*)</bdi>', text)) <= 200
    page = browser_page(browser, gw, cookie)
    rec = Recorder(page, gw.base)
    page.set_viewport_size({"width": 360, "height": 740})             # a phone
    page.goto(f"{gw.base}/mail/inbox")
    assert page.evaluate("document.documentElement.scrollWidth") <= 360 + 1   # no sideways scrolling
    links = page.locator("table.msglist a[href^='/msg/']")
    assert links.count() == len(broken)
    links.first.focus()
    page.keyboard.press("Enter")                                      # keyboard reaches a message
    page.wait_for_url(re.compile(r"/msg/\d+$"))
    for k in range(len(broken)):
        page.goto(f"{gw.base}/mail/inbox")
        page.locator("table.msglist a[href^='/msg/']").nth(k).click()
        settle(page, 0.1)
        assert page.locator("h1.subject").count() == 1
    assert rec.foreign == [] and rec.dialogs == []
    page.context.close()
