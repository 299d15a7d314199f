"""spool.journal on a real database: the early record of an attempt in progress files its journal
entry in the same transaction (a crash before the attempt's own record loses neither), and a
filing that cannot be written is undone alone."""
import pytest

from spool import db, journal
from spool.commit import NewMessage, insert_message
from spool.journal import JournalEntry
from spool.states import RcptState
from spool.transitions import RcptOutcome, claim_due


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def active(conn, rcpts) -> str:
    qid = db.transaction(conn, lambda: insert_message(conn, NewMessage("a@remote.test", tuple(rcpts), b"x")))
    db.transaction(conn, lambda: claim_due(conn, 10))
    return qid


def test_early_record_files_the_entry_with_the_delivered_recipients(conn):
    qid = active(conn, ["erin@example.org", "buyer@partner.test"])
    entry = JournalEntry(qid, {"erin@example.org": "erin@example.org"}, "a@remote.test", 1)
    changed = db.transaction(conn, lambda: journal.record_delivered(
        conn, qid, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], entry))
    assert changed == 1
    assert conn.execute("SELECT state FROM messages WHERE queue_id=?", (qid,)).fetchone()[0] == "active"
    assert [tuple(r) for r in conn.execute("SELECT mailbox, indexed FROM mailbox_messages")] == \
        [("erin@example.org", 0)]
    # the attempt's own record files it again: nothing is added twice
    assert db.transaction(conn, lambda: journal.file_delivered(conn, entry)) == 0


def test_early_record_survives_an_entry_that_cannot_be_written(conn):
    qid = active(conn, ["erin@example.org"])
    bad = JournalEntry(qid, {"erin@example.org": object()})
    changed = db.transaction(conn, lambda: journal.record_delivered(
        conn, qid, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], bad))
    assert changed == 1
    assert conn.execute("SELECT count(*) FROM mailbox_messages").fetchone()[0] == 0


def test_a_pending_journal_entry_is_listed_with_its_headers_before_it_is_indexed(conn):
    """The webmail's folder page shows a message delivered a moment ago with its subject, not
    blank until the background indexer gets to it."""
    from spool import mailbox
    raw = b"From: Partner <p@remote.test>\r\nSubject: Minutes of today\r\n\r\nbody\r\n"
    qid = db.transaction(conn, lambda: insert_message(conn, NewMessage("p@remote.test", ("erin@example.org",), raw)))
    db.transaction(conn, lambda: journal.file_delivered(
        conn, JournalEntry(qid, {"erin@example.org": "erin@example.org"}, "p@remote.test", len(raw))))
    [row] = mailbox.folder_page(conn, "erin@example.org", "inbox")["rows"]
    assert row["indexed"] == 0
    assert row["subject"] == "Minutes of today" and "p@remote.test" in row["from_header"]
