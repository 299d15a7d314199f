"""Retention of continuity mailboxes with the journal (spool.mailbox.purge, spool.journal): expired
entries go in bounded batches with their FTS rows, and the bytes go with the last entry that
refers to them (the queue's copy only once the message is finished); purge_finished keeps the
queue record of a journaled message until then."""
import pytest

from gateway.continuity.filing import describe
from spool import db, journal, mailbox
from spool.commit import NewMessage, insert_message
from spool.journal import JournalEntry
from spool.states import QueueState, RcptState
from spool.transitions import RcptOutcome, claim_due, purge_finished, record_attempt

OLD, NEW, CUTOFF = 100.0, 1000.0, 500.0


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def deliver(conn, owners, delivered=None, *, at, subject="report", rcpts=None) -> str:
    """One message to ``rcpts`` (default: the owners), the ``delivered`` ones (default: all)
    delivered and journaled at ``at``, indexed; returns its queue ID."""
    rcpts = rcpts or list(owners)
    delivered = list(owners) if delivered is None else delivered
    data = f"Subject: {subject}\r\n\r\nquarterly {subject} text\r\n".encode()

    def op():
        qid = insert_message(conn, NewMessage("a@remote.test", tuple(rcpts), data), now=at)
        claim_due(conn, 10_000, now=at)
        journal.file_delivered(conn, JournalEntry(qid, {o: o for o in delivered}, size=len(data)), now=at)
        outs = [RcptOutcome(i, RcptState.DELIVERED if r in delivered else RcptState.PENDING, 250, "ok")
                for i, r in enumerate(rcpts)]
        record_attempt(conn, qid, outs, at + 300, now=at)
        journal.index_entries(conn, [describe(qid, data)])
        return qid
    return db.transaction(conn, op)


def count(conn, sql, *args):
    return conn.execute(sql, args).fetchone()[0]


def purge_all(conn, before, limit=mailbox.PURGE_BATCH) -> list[int]:
    """Call purge until a short batch, as gateway.continuity.journal does; the batch sizes."""
    sizes = []
    while True:
        sizes.append(db.transaction(conn, lambda: mailbox.purge(conn, before, limit)))
        if sizes[-1] < limit:
            return sizes


def test_purge_runs_in_bounded_batches_and_removes_fts_rows_and_bytes(conn):
    batch = mailbox.PURGE_BATCH
    n = 2 * batch + batch // 2
    old = [deliver(conn, [f"user{i}@example.org"], at=OLD + i / 1000, subject=f"old{i}") for i in range(n)]
    new = deliver(conn, ["user1@example.org"], at=NEW, subject="fresh")
    assert count(conn, "SELECT count(*) FROM mailbox_fts") == n + 1
    assert count(conn, "SELECT count(*) FROM bodies") == n + 1         # kept past delivery for the journal

    assert purge_all(conn, CUTOFF) == [batch, batch, batch // 2]      # oldest first, bounded
    assert count(conn, "SELECT count(*) FROM mailbox_messages") == 1
    assert count(conn, "SELECT count(*) FROM mailbox_fts") == 1
    assert [r[0] for r in conn.execute("SELECT queue_id FROM bodies")] == [new]
    assert mailbox.search(conn, "user7@example.org", "old7") == []
    assert [r["subject"] for r in mailbox.search(conn, "user1@example.org", "fresh")] == ["fresh"]
    assert not set(old) & {r[0] for r in conn.execute("SELECT queue_id FROM bodies")}


def test_bytes_stay_while_an_entry_or_the_queue_still_needs_them(conn):
    # two owners journaled at different times (the second delivered later): the old entry goes,
    # the bytes stay for the new one
    shared = deliver(conn, ["erin@example.org"], rcpts=["erin@example.org", "frank@example.org"], at=OLD)
    db.transaction(conn, lambda: journal.file_delivered(
        conn, JournalEntry(shared, {"frank@example.org": "frank@example.org"}), now=NEW))
    # journaled for one recipient, another still pending (deferred): the queue needs the bytes
    deferred = deliver(conn, ["kate@example.org"], rcpts=["kate@example.org", "x@partner.test"], at=OLD)
    # held copy (file_message): its mailbox_bodies row goes with its last entry
    db.transaction(conn, lambda: mailbox.file_message(conn, mailbox.FilingEntry(
        queue_id="HELD1", data=b"held bytes", mailboxes={"erin@example.org": "erin@example.org"}), now=OLD))

    assert purge_all(conn, CUTOFF) == [3]
    assert [r["queue_id"] for r in mailbox.list_mailbox(conn, "frank@example.org")] == [shared]
    assert journal.message_data(conn, shared) is not None
    assert conn.execute("SELECT state FROM messages WHERE queue_id=?", (deferred,)).fetchone()[0] == "deferred"
    assert journal.message_data(conn, deferred) is not None           # the queue still needs it
    assert count(conn, "SELECT count(*) FROM mailbox_bodies") == 0     # HELD1's copy is gone


def test_purge_finished_keeps_a_journaled_message_until_its_entries_expire(conn):
    journaled = deliver(conn, ["erin@example.org"], at=OLD)
    plain = db.transaction(conn, lambda: insert_message(
        conn, NewMessage("a@remote.test", ("x@example.org",), b"x"), now=OLD))
    db.transaction(conn, lambda: (claim_due(conn, 10, now=OLD), record_attempt(
        conn, plain, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], OLD, now=OLD)))
    conn.execute("UPDATE messages SET updated_at=?", (OLD,))

    assert db.transaction(conn, lambda: purge_finished(conn, CUTOFF)) == 1     # the plain one
    assert conn.execute("SELECT state FROM messages WHERE queue_id=?", (journaled,)).fetchone()[0] == \
        QueueState.DELIVERED.value
    assert purge_all(conn, CUTOFF) == [1]
    assert journal.message_data(conn, journaled) is None                # bytes gone with the entry
    assert db.transaction(conn, lambda: purge_finished(conn, CUTOFF)) == 1     # and now the record
