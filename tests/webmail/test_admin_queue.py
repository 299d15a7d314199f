"""Admin console, the queue pages, against a real gateway whose smarthost is down (a long
backoff, so a message moves only because of what the admin did) and real chromium: counts and
search by queue ID, sender and recipient; hold, release, flush and delete from the browser change the
spool rows as `mailgate queue` does (tests/e2e/test_queue_cli.py) and are audited with actor
admin:NAME; a cross-site POST is refused and changes nothing."""
from __future__ import annotations

import re
import smtplib

from tests.support.peers import wait_for
from tests.webmail.admin_pages import admin_page, csp_violations
from tests.webmail.conftest import Client, Recorder, audit_rows, spool_rows, start_webmail

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as (\w+)$")


def send_all(port: int, envelopes) -> list[str]:
    ids = []
    with smtplib.SMTP("127.0.0.1", port, timeout=20) as smtp:
        smtp.ehlo()
        for sender, rcpt, token in envelopes:
            smtp.mail(sender)
            smtp.rcpt(rcpt)
            code, text = smtp.data(f"Subject: q {token}\r\nX-Test-Token: {token}\r\n\r\nbody\r\n".encode())
            m = QUEUED.match(text.decode())
            assert code == 250 and m, (code, text)
            ids.append(m.group(1))
    return ids


def message_row(gw, qid):
    rows = spool_rows(gw.spool_path, "SELECT * FROM messages WHERE queue_id=?", qid)
    return rows[0] if rows else None


def listed(page) -> set[str]:
    return set(page.locator("#queue tbody tr[data-queue-id]").evaluate_all(
        "rows => rows.map(r => r.dataset.queueId)"))


def test_queue_search_hold_release_delete(peers, tmp_path, browser):
    sink = peers.sink(name="exchange")
    sink.stop()
    gw = start_webmail(peers, tmp_path, smarthost=f"[127.0.0.1]:{sink.port}",
                       minimal_backoff=300.0, maximal_backoff=600.0)
    a, b, c, d = send_all(gw.smtp_port, [("alice@remote.test", "bob@example.com", "a"),
                                         ("carol@other.test", "dave@example.com", "b"),
                                         ("alice@remote.test", "erin@example.com", "c"),
                                         ("frank@remote.test", "gina@example.com", "d")])
    wait_for(lambda: {r["state"] for r in spool_rows(gw.spool_path, "SELECT state FROM messages")} == {"deferred"},
             20, what="four deferred messages")
    page, cookie = admin_page(browser, gw)
    rec = Recorder(page, gw.base)
    csp = csp_violations(page)

    page.goto(gw.base + "/admin/queue")
    assert page.locator('#counts li[data-state="deferred"]').get_attribute("data-count") == "4"
    assert listed(page) == {a, b, c, d}
    for text, want in [(b, {b}), (b[:6].lower(), {x for x in (a, b, c, d) if x.lower().startswith(b[:6].lower())}),
                       ("alice@remote", {a, c}), ("carol", {b}), ("erin@example.com", {c}),
                       ("nobody", set())]:
        page.fill("#q", text)
        page.click("form[role=search] button")
        assert listed(page) == want, text
    page.goto(gw.base + "/admin/queue?state=hold")
    assert listed(page) == set()

    # a message page: envelope, recipients with their last reply, headers
    page.goto(gw.base + f"/admin/queue/{a}")
    assert page.text_content("#state").strip() == "deferred"
    row = page.locator('#recipients tr[data-address="bob@example.com"]')
    assert row.get_attribute("data-state") == "pending"
    assert "X-Test-Token: a" in page.text_content("#headers")

    # hold: an operator hold, as `mailgate queue hold`
    page.click("#hold")
    page.wait_for_url(re.compile(r"done=held"))
    m = message_row(gw, a)
    assert (m["state"], m["hold_reason"]) == ("hold", "operator") and m["held_at"] is not None
    assert gw.gw.cli("queue", "hold", d).stdout.strip() == f"{d}: held (hold)"   # the same change
    same = ("state", "hold_reason", "attempts", "held_seconds", "replay_id")
    cli_row = message_row(gw, d)
    assert {k: m[k] for k in same} == {k: cli_row[k] for k in same}
    assert cli_row["held_at"] is not None
    page.goto(gw.base + "/admin/queue?state=hold")
    assert listed(page) == {a, d}
    # release of a message not on hold: refused, nothing changes
    page.goto(gw.base + f"/admin/queue/{b}")
    page.click("#release")
    assert page.text_content("#error").startswith("Cannot release: the message is deferred")
    assert message_row(gw, b)["state"] == "deferred"

    # release with the downstream back: delivered now, time on hold counted in held_seconds
    sink.start()
    page.goto(gw.base + f"/admin/queue/{a}")
    page.click("#release")
    page.wait_for_url(re.compile(r"done=released"))
    wait_for(lambda: message_row(gw, a)["state"] == "delivered", 20, what="released message delivered")
    m = message_row(gw, a)
    assert m["hold_reason"] == "" and m["held_at"] is None and m["held_seconds"] > 0
    assert [t for _e, data in sink.messages() for t in re.findall(rb"X-Test-Token: (\w+)", data)] == [b"a"]
    # flush: a deferred message due now, before its 300 s backoff
    page.goto(gw.base + f"/admin/queue/{b}")
    page.click("#flush")
    page.wait_for_url(re.compile(r"done=flushed"))
    wait_for(lambda: message_row(gw, b)["state"] == "delivered", 20, what="flushed message delivered")

    # delete: a confirmation step, then the rows are gone
    page.goto(gw.base + f"/admin/queue/{c}")
    page.click("#delete")
    page.wait_for_url(re.compile(rf"/admin/queue/{c}/delete$"))
    assert message_row(gw, c) is not None
    page.click("#confirm-delete")
    page.wait_for_url(re.compile(r"/admin/queue\?deleted="))
    assert message_row(gw, c) is None
    assert spool_rows(gw.spool_path, "SELECT * FROM recipients WHERE queue_id=?", c) == []

    acts = [(r["action"], r["actor"], r["result"], r["detail"].split()[0]) for r in audit_rows(gw.spool_path)
            if r["action"].startswith("queue_")]
    assert acts == [("queue_hold", "admin:root", "ok", f"queue_id={a}"),
                    ("queue_release", "admin:root", "refused", f"queue_id={b}"),
                    ("queue_release", "admin:root", "ok", f"queue_id={a}"),
                    ("queue_flush", "admin:root", "ok", f"queue_id={b}"),
                    ("queue_delete", "admin:root", "ok", f"queue_id={c}")], acts
    assert rec.foreign == [] and rec.dialogs == [] and csp == []

    # a cross-site POST (no same-origin Fetch-Metadata, wrong Origin) changes nothing
    cl = Client(gw.base)
    cl.cookies["mailgate-admin"] = cookie
    status, _, _ = cl.post(f"/admin/queue/{d}/release", {"csrf": "x"},
                           headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.test"})
    assert status == 403 and message_row(gw, d)["state"] == "hold"
    status, _, _ = cl.post(f"/admin/queue/{d}/delete", {"csrf": "x", "confirm": "yes"},
                           headers={"Sec-Fetch-Site": "cross-site", "Origin": "http://evil.test"})
    assert status == 403 and message_row(gw, d) is not None
