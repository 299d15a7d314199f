"""Continuity mailboxes in the spool: filing, listing, full-text search, and that one owner can
never read another's mail."""
import sqlite3

import pytest

from spool import db, mailbox


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def entry(qid, owners, subject="Quarterly numbers", body="the forecast for Q3", data=b"x"):
    return mailbox.FilingEntry(queue_id=qid, data=data, mailboxes=owners, envelope_from="a@remote.test",
                               from_header="Alice <a@remote.test>", to_header="team@example.org",
                               subject=subject, body_text=body, event_id="CE-1")


def test_file_once_per_owner_and_idempotent(conn):
    e = entry("Q1", {"erin@example.org": "team@example.org", "frank.miller@example.org": "team@example.org"})
    assert mailbox.file_message(conn, e) == 2
    assert mailbox.file_message(conn, e) == 0            # filing again adds nothing
    assert mailbox.counts(conn) == {"erin@example.org": 1, "frank.miller@example.org": 1}
    assert conn.execute("SELECT count(*) FROM mailbox_bodies").fetchone()[0] == 1   # one copy of the bytes


def test_list_get_and_privacy(conn):
    mailbox.file_message(conn, entry("Q1", {"erin@example.org": "erin@example.org"}, data=b"secret"))
    mailbox.file_message(conn, entry("Q2", {"frank@example.org": "frank@example.org"}, subject="Other"))
    [mine] = mailbox.list_mailbox(conn, "Erin@Example.org")
    assert mine["queue_id"] == "Q1" and mine["envelope_rcpt"] == "erin@example.org"
    assert mailbox.get_message(conn, "erin@example.org", mine["id"])["data"] == b"secret"
    assert mailbox.get_message(conn, "frank@example.org", mine["id"]) is None   # not frank's
    assert mailbox.mark_seen(conn, "frank@example.org", mine["id"]) is False
    assert mailbox.mark_seen(conn, "erin@example.org", mine["id"]) is True


def test_search_is_per_owner_and_safe(conn):
    mailbox.file_message(conn, entry("Q1", {"erin@example.org": "erin@example.org"}, body="budget forecast"))
    mailbox.file_message(conn, entry("Q2", {"frank@example.org": "frank@example.org"}, body="budget cuts"))
    assert [r["queue_id"] for r in mailbox.search(conn, "erin@example.org", "budget")] == ["Q1"]
    assert [r["queue_id"] for r in mailbox.search(conn, "erin@example.org", "forec")] == ["Q1"]   # prefix
    assert mailbox.search(conn, "erin@example.org", "cuts") == []                              # frank's word
    for hostile in ['" OR 1', "budget) OR (cuts", "NEAR(", "*", ""]:
        rows = mailbox.search(conn, "erin@example.org", hostile)   # no FTS5 syntax error, no leak
        assert all(r["mailbox"] == "erin@example.org" for r in rows)


def test_migration_created_fts_table(conn):
    assert conn.execute("PRAGMA user_version").fetchone()[0] >= 3
    with pytest.raises(sqlite3.IntegrityError):
        conn.execute("INSERT INTO mailbox_messages (mailbox, queue_id, filed_at) VALUES ('a','Q',0)")
        conn.execute("INSERT INTO mailbox_messages (mailbox, queue_id, filed_at) VALUES ('a','Q',0)")


def test_purge_removes_old_entries_their_index_and_orphaned_bytes(conn):
    mailbox.file_message(conn, entry("OLD", {"erin@example.org": "erin@example.org"}), now=100.0)
    mailbox.file_message(conn, entry("NEW", {"erin@example.org": "erin@example.org"}, body="fresh"), now=1000.0)
    assert mailbox.purge(conn, before=500.0) == 1
    assert [r["queue_id"] for r in mailbox.list_mailbox(conn, "erin@example.org")] == ["NEW"]
    assert [r[0] for r in conn.execute("SELECT queue_id FROM mailbox_bodies")] == ["NEW"]
    assert mailbox.search(conn, "erin@example.org", "forecast") == []
    assert [r["queue_id"] for r in mailbox.search(conn, "erin@example.org", "fresh")] == ["NEW"]
