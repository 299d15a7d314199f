"""The spool functions behind the webmail's views: folder pages with totals and unread counts,
search with FTS5 snippets and highlights, the owner's own flags, and get_message's folder and
deleted filters. Every one is scoped to the owner's mailbox."""
import pytest

from spool import db, mailbox

ERIN, FRANK = "erin@example.org", "frank@example.org"


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def put(conn, qid, owner, *, subject="hello", body="nothing", folder="inbox", now=0.0):
    e = mailbox.FilingEntry(queue_id=qid, data=qid.encode(), mailboxes={owner: owner}, subject=subject,
                            body_text=body, from_header="A <a@remote.test>", folder=folder)
    mailbox.file_message(conn, e, now=now)
    return conn.execute("SELECT id FROM mailbox_messages WHERE queue_id=? AND folder=?", (qid, folder)).fetchone()[0]


def test_folder_pages_are_newest_first_with_totals_and_clamped(conn):
    for i in range(120):
        put(conn, f"I{i:03}", ERIN, now=1000.0 + i)
    for i in range(3):
        put(conn, f"S{i}", ERIN, folder="sent", now=5000.0 + i)
    put(conn, "F1", FRANK, now=9999.0)
    p1 = mailbox.folder_page(conn, ERIN, "inbox", 1)
    assert (p1["total"], p1["pages"], p1["page"], p1["unread"]) == (120, 3, 1, 120)
    assert [r["queue_id"] for r in p1["rows"][:2]] == ["I119", "I118"] and len(p1["rows"]) == 50
    p3 = mailbox.folder_page(conn, ERIN, "inbox", 3)
    assert len(p3["rows"]) == 20 and p3["rows"][-1]["queue_id"] == "I000"
    assert mailbox.folder_page(conn, ERIN, "inbox", 99)["page"] == 3      # past the end: the last page
    assert mailbox.folder_page(conn, ERIN, "inbox", -5)["page"] == 1
    sent = mailbox.folder_page(conn, ERIN, "sent")
    assert [r["queue_id"] for r in sent["rows"]] == ["S2", "S1", "S0"]
    assert all(r["mailbox"] == ERIN for r in p1["rows"] + p3["rows"] + sent["rows"])
    empty = mailbox.folder_page(conn, "nobody@example.org", "inbox")
    assert (empty["total"], empty["pages"], empty["rows"]) == (0, 1, [])


def test_flags_are_the_owners_own_and_change_counts_not_the_queue(conn):
    a = put(conn, "Q1", ERIN, now=1.0)
    b = put(conn, "Q2", ERIN, now=2.0)
    queue_before = conn.execute("SELECT * FROM messages").fetchall(), conn.execute("SELECT * FROM recipients").fetchall()
    assert mailbox.set_flags(conn, FRANK, a, seen=True, deleted=True) is False      # not frank's
    assert mailbox.get_message(conn, ERIN, a)["seen"] == 0
    assert mailbox.set_flags(conn, ERIN, a, seen=True) is True
    assert mailbox.unread_counts(conn, ERIN) == {"inbox": 1, "sent": 0}
    assert mailbox.mark_deleted(conn, ERIN, b) is True
    page = mailbox.folder_page(conn, ERIN, "inbox")
    assert [r["id"] for r in page["rows"]] == [a] and page["total"] == 1 and page["unread"] == 0
    assert mailbox.get_message(conn, ERIN, b, include_deleted=False) is None
    assert mailbox.get_message(conn, ERIN, b)["deleted"] == 1                        # still readable (undo)
    assert mailbox.get_message(conn, ERIN, a, folder="sent") is None
    assert mailbox.mark_deleted(conn, ERIN, b, deleted=False) is True
    assert mailbox.folder_page(conn, ERIN, "inbox")["total"] == 2
    assert mailbox.set_flags(conn, ERIN, a) is True and mailbox.set_flags(conn, FRANK, a) is False
    assert (conn.execute("SELECT * FROM messages").fetchall(),
            conn.execute("SELECT * FROM recipients").fetchall()) == queue_before


def test_search_page_marks_matches_and_stays_in_the_owners_mailbox(conn):
    put(conn, "E1", ERIN, subject="Budget for Oxford", body="the offsite budget is <b>tight</b>", now=1.0)
    put(conn, "E2", ERIN, subject="Lunch", body="no budget talk", now=2.0)
    put(conn, "F1", FRANK, subject="Budget", body="budget cuts", now=3.0)
    found = mailbox.search_page(conn, ERIN, "budget")
    assert [r["queue_id"] for r in found["rows"]] == ["E2", "E1"] and found["more"] is False
    e1 = found["rows"][1]
    S, E = mailbox.MARK_START, mailbox.MARK_END
    assert e1["subject_marked"] == f"{S}Budget{E} for Oxford"
    assert f"{S}budget{E}" in e1["snippet"] and "<b>tight</b>" in e1["snippet"]    # raw text: the caller escapes
    assert mailbox.search_page(conn, ERIN, "cuts")["rows"] == []                    # frank's word
    mailbox.mark_deleted(conn, ERIN, e1["id"])
    assert [r["queue_id"] for r in mailbox.search_page(conn, ERIN, "budget")["rows"]] == ["E2"]
    for hostile in ['" OR 1', "budget) OR (cuts", "NEAR(a b)", "*", "", "mailbox:frank", "cuts OR budget"]:
        rows = mailbox.search_page(conn, ERIN, hostile)["rows"]
        assert all(r["mailbox"] == ERIN for r in rows)


def test_search_page_pages_with_more(conn):
    for i in range(7):
        put(conn, f"Q{i}", ERIN, body=f"invoice number {i}", now=float(i))
    first = mailbox.search_page(conn, ERIN, "invoice", limit=3)
    assert [r["queue_id"] for r in first["rows"]] == ["Q6", "Q5", "Q4"] and first["more"]
    last = mailbox.search_page(conn, ERIN, "invoice", limit=3, offset=6)
    assert [r["queue_id"] for r in last["rows"]] == ["Q0"] and not last["more"]
