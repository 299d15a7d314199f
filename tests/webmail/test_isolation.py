"""One user's mail is unreachable for another, and a user's flags never reach the queue.

- User B gets the same 404 for every one of A's message ids as for an id that does not exist:
  message view, body, attachment, raw source, flags (A's state unchanged after B's POSTs), and
  B's search never returns A's hits.
- A state-changing POST without the same-origin signal or the session's CSRF token is refused
  (403), also from a real cross-site page in chromium (the session cookie is SameSite=Strict).
- During a continuity event, a held message the user reads and deletes in the webmail is still
  held unchanged in the queue tables and is replayed to Exchange exactly once, byte for byte.
"""
from __future__ import annotations

import smtplib
import sqlite3

from tests.conftest import fast_continuity
from tests.support.peers import wait_for
from tests.webmail.conftest import (browser_page, csrf_of, fetch, file_raw, open_session,
                                    start_webmail)

A, B = "alice@example.com", "bob@example.com"
SAME = {"Sec-Fetch-Site": "same-origin"}

WITH_ATTACHMENT = (b"From: Carol <carol@remote.test>\r\nTo: alice@example.com\r\nSubject: zanzibar plans\r\n"
                   b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
                   b"Content-Type: text/html\r\n\r\n<p>the zanzibar itinerary</p>\r\n--b\r\n"
                   b"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=plan.pdf\r\n\r\n"
                   b"%PDF-1.4 secret\r\n--b--\r\n")


def row(spool_path, mid):
    c = sqlite3.connect(spool_path)
    try:
        return c.execute("SELECT seen, deleted FROM mailbox_messages WHERE id=?", (mid,)).fetchone()
    finally:
        c.close()


def downloads(spool_path):
    """[(address, detail)] of the audited downloads."""
    c = sqlite3.connect(spool_path)
    try:
        return c.execute("SELECT address, detail FROM webmail_audit WHERE action='download' ORDER BY id").fetchall()
    finally:
        c.close()


def test_another_users_ids_are_404_like_missing_ones_and_change_nothing(peers, tmp_path):
    gw = start_webmail(peers, tmp_path)
    a, b = open_session(gw.spool_path, A), open_session(gw.spool_path, B)
    ids = [file_raw(gw.spool_path, A, WITH_ATTACHMENT),
           file_raw(gw.spool_path, A, b"Subject: zanzibar sent\r\n\r\nsent text zanzibar\r\n", folder="sent")]
    missing = max(ids) + 1000
    for mid in ids:                                       # A reaches all of it (so 404 below means refused)
        for path in ("", "/body", "/raw"):
            assert fetch(f"{gw.base}/msg/{mid}{path}", a)[0] == 200
    assert fetch(f"{gw.base}/msg/{ids[0]}/att/0", a)[2] == b"%PDF-1.4 secret"
    audited = downloads(gw.spool_path)                    # two sources and one attachment, all A's
    assert len(audited) == 3 and {a for a, _ in audited} == {A}
    assert any(d.startswith(f"msg={ids[0]} ") and d.endswith("att=0 name=plan.pdf size=15") for _, d in audited)
    for mid in ids:
        for path in ("", "/body", "/raw", "/att/0", "/att/1", "/body?remote=1"):
            s_b, _, body_b = fetch(f"{gw.base}/msg/{mid}{path}", b)
            s_m, _, body_m = fetch(f"{gw.base}/msg/{missing}{path}", b)
            assert s_b == s_m == 404, path
            assert body_b == body_m                       # nothing tells "not yours" from "not there"
            assert b"zanzibar" not in body_b and b"secret" not in body_b
    assert downloads(gw.spool_path) == audited            # B's refused attempts downloaded nothing
    # A opened both; put them back to unseen, then B tries every flag action
    csrf_a, csrf_b = csrf_of(gw.spool_path, a), csrf_of(gw.spool_path, b)
    for mid in ids:
        assert fetch(f"{gw.base}/msg/{mid}/flags", a, method="POST", data={"csrf": csrf_a, "action": "unseen"},
                     headers=SAME)[0] == 303
        for action in ("seen", "delete", "unseen", "undelete", "delete"):
            s, _, _ = fetch(f"{gw.base}/msg/{mid}/flags", b, method="POST", data={"csrf": csrf_b, "action": action},
                            headers=SAME)
            assert s == 404
        assert row(gw.spool_path, mid) == (0, 0)
    for q in ("zanzibar", "itinerary", "sent"):
        s, _, body = fetch(f"{gw.base}/mail/search?q={q}", b)
        assert s == 200 and b"Nothing found" in body and b"/msg/" not in body and b"plans" not in body
    s, _, body = fetch(f"{gw.base}/mail/search?q=zanzibar", a)
    assert body.count(b'<li class=') == 2                 # A's own search finds both
    for folder in ("inbox", "sent"):
        assert b"zanzibar" not in fetch(f"{gw.base}/mail/{folder}", b)[2]
        assert b"zanzibar" in fetch(f"{gw.base}/mail/{folder}", a)[2]


def test_flags_need_same_origin_and_the_csrf_token(peers, tmp_path, browser):
    gw = start_webmail(peers, tmp_path)
    a = open_session(gw.spool_path, A)
    mid = file_raw(gw.spool_path, A, b"Subject: hi\r\n\r\nhello\r\n")
    csrf = csrf_of(gw.spool_path, a)
    url = f"{gw.base}/msg/{mid}/flags"
    refused = [({"Sec-Fetch-Site": "cross-site"}, csrf), ({"Sec-Fetch-Site": "same-site"}, csrf),
               ({"Origin": "http://evil.example"}, csrf), ({"Origin": "null"}, csrf), ({}, csrf),
               (SAME, "wrong-token"), (SAME, "")]
    for headers, token in refused:
        assert fetch(url, a, method="POST", data={"csrf": token, "action": "delete"}, headers=headers)[0] == 403
        assert row(gw.spool_path, mid) == (0, 0)
    assert fetch(url, a, method="POST", data={"csrf": csrf, "action": "bogus"}, headers=SAME)[0] == 400
    assert fetch(url, None, method="POST", data={"csrf": csrf, "action": "delete"}, headers=SAME)[0] == 303  # → login
    assert row(gw.spool_path, mid) == (0, 0)

    # a real cross-site page in chromium auto-submitting a form to the flags URL
    page = browser_page(browser, gw, a)
    evil = "http://attacker.test/"
    page.route(evil, lambda route: route.fulfill(status=200, content_type="text/html", body=(
        f'<form id="f" method="post" action="{url}"><input name="csrf" value="{csrf}">'
        '<input name="action" value="delete"></form><script>document.getElementById("f").submit()</script>')))
    page.goto(evil)
    page.wait_for_url(lambda u: u.startswith(gw.base), timeout=10_000)
    page.wait_for_load_state("load")
    assert row(gw.spool_path, mid) == (0, 0)              # refused: no cookie cross-site, or 403
    page.context.close()

    # and the same request from our own page goes through (the checks above can fail)
    assert fetch(url, a, method="POST", data={"csrf": csrf, "action": "delete"}, headers=SAME)[0] == 303
    assert row(gw.spool_path, mid) == (0, 1)


def queue_snapshot(spool_path):
    c = sqlite3.connect(spool_path)
    try:
        return (c.execute("SELECT * FROM messages ORDER BY queue_id").fetchall(),
                c.execute("SELECT * FROM recipients ORDER BY 1, 2").fetchall(),
                c.execute("SELECT * FROM bodies ORDER BY 1").fetchall())
    finally:
        c.close()


def test_what_a_user_does_never_changes_the_held_message_or_its_replay(peers, tmp_path):
    sink = peers.sink(name="exchange")
    gw = start_webmail(peers, tmp_path, smarthost=f"[127.0.0.1]:{sink.port}", continuity=None,
                       extra=fast_continuity("canary@example.com"))
    assert gw.gw.cli("continuity", "start", "--reason", "test").stdout.strip() == "ok: continuity"
    data = (b"From: Carol <carol@remote.test>\r\nTo: alice@example.com\r\nSubject: held for alice\r\n"
            b"Message-ID: <held-1@remote.test>\r\n\r\nplease read me during the outage\r\n")
    with smtplib.SMTP("127.0.0.1", gw.smtp_port, timeout=30) as c:
        c.sendmail("carol@remote.test", [A], data)
    wait_for(lambda: " hold " in gw.gw.cli("queue", "list").stdout, 15, what="held")
    conn = sqlite3.connect(gw.spool_path)
    mid = wait_for(lambda: conn.execute("SELECT id FROM mailbox_messages WHERE mailbox=?", (A,)).fetchone(),
                   15, what="filed")[0]
    conn.close()
    before = queue_snapshot(gw.spool_path)
    a = open_session(gw.spool_path, A)
    csrf = csrf_of(gw.spool_path, a)
    assert b"held for alice" in fetch(f"{gw.base}/mail/inbox", a)[2]
    assert fetch(f"{gw.base}/msg/{mid}", a)[0] == 200                         # read (marks seen)
    for action in ("unseen", "seen", "delete"):
        assert fetch(f"{gw.base}/msg/{mid}/flags", a, method="POST", data={"csrf": csrf, "action": action},
                     headers=SAME)[0] == 303
    assert row(gw.spool_path, mid) == (1, 1)
    assert b"held for alice" not in fetch(f"{gw.base}/mail/inbox", a)[2]       # gone from the user's view
    assert queue_snapshot(gw.spool_path) == before                              # the queue is untouched
    assert sink.count() == 0
    assert gw.gw.cli("continuity", "stop").stdout.strip() == "ok: recovering"
    wait_for(lambda: sink.count() >= 1, 20, what="replay to Exchange")
    import time
    time.sleep(1.0)
    [(env, got)] = sink.messages()                                              # exactly once
    assert env["rcpt_tos"] == [A]
    assert data.replace(b"\r\n", b"\n") in got.replace(b"\r\n", b"\n")          # unchanged bytes
