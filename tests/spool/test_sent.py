"""spool.sent: a webmail send is queued, filed into Sent and audited in one transaction; the
hourly limit refuses with nothing written; a Sent item's status is its owner's only; copies after
an event are queued once, only once the event is over."""
import time

import pytest

from spool import continuity, db, sent
from spool.commit import NewMessage
from spool.mailbox import FilingEntry


@pytest.fixture
def conn(tmp_path):
    c = db.connect(tmp_path / "spool.db")
    yield c
    c.close()


def send(conn, subject="hi", per_hour=None, event_id="", now=None):
    msg = NewMessage(mail_from="alice@example.org", rcpt_tos=("p@ext.test", "bob@example.org"),
                     data=b"Subject: " + subject.encode() + b"\r\n\r\nbody\r\n", client_addr="webmail")
    copy = FilingEntry(queue_id="", data=msg.data, mailboxes={"alice@example.org": "alice@example.org"},
                       envelope_from="alice@example.org", subject=subject, event_id=event_id)
    rec = sent.SentRecord(address="alice@example.org", copy=copy, per_hour=per_hour, client="192.0.2.1")
    return db.transaction(conn, lambda: sent.commit_sent(conn, msg, rec, now=now))


def count(conn, table):
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_queue_sent_copy_and_audit_together_and_the_limit_writes_nothing(conn):
    qid, sent_id = send(conn, per_hour=2)
    row = conn.execute("SELECT queue_id, folder, mailbox FROM mailbox_messages WHERE id=?", (sent_id,)).fetchone()
    assert tuple(row) == (qid, "sent", "alice@example.org")
    assert conn.execute("SELECT detail FROM webmail_audit").fetchall()[0][0] == f"queue_id={qid} rcpts=2"
    send(conn, per_hour=2)
    with pytest.raises(sent.SendLimitExceeded) as e:
        send(conn, per_hour=2)
    assert (e.value.sent, e.value.limit) == (2, 2)
    assert (count(conn, "messages"), count(conn, "mailbox_messages"), count(conn, "webmail_audit")) == (2, 2, 2)
    assert sent.sends_in_last_hour(conn, "alice@example.org", time.time() + 3601) == 0   # an hour later


def test_status_is_the_owners_only(conn):
    qid, sent_id = send(conn)
    st = sent.sent_status(conn, "Alice@example.org", sent_id)
    assert st["queue"].queue_id == qid and [r.address for r in st["queue"].recipients] == ["p@ext.test", "bob@example.org"]
    assert sent.sent_status(conn, "bob@example.org", sent_id) is None


def test_copies_after_the_event_once(conn):
    def state(mode, event_id):
        db.transaction(conn, lambda: continuity.save_transition(
            conn, mode=mode, since=time.time(), origin="admin", reason="t", awaiting_confirm=False,
            event_id=event_id, src="x", actor="test"))
    state("continuity", "CE-1")
    send(conn, subject="outside", event_id="")
    send(conn, subject="during", event_id="CE-1")
    assert db.transaction(conn, lambda: sent.copy_sent_after_events(conn)) == []      # event on
    state("recovering", "CE-1")
    assert db.transaction(conn, lambda: sent.copy_sent_after_events(conn)) == []
    state("normal", "")
    [(owner, qid)] = db.transaction(conn, lambda: sent.copy_sent_after_events(conn))
    assert owner == "alice@example.org"
    data = conn.execute("SELECT data FROM bodies WHERE queue_id=?", (qid,)).fetchone()[0]
    assert data.startswith(b"X-Mailgate-Sent-Copy: ") and b"Subject: during" in data
    assert [r[0] for r in conn.execute("SELECT address FROM recipients WHERE queue_id=?", (qid,))] == ["alice@example.org"]
    assert db.transaction(conn, lambda: sent.copy_sent_after_events(conn)) == []      # once
