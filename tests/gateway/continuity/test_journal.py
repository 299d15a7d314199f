"""The journal's parts over a real spool (tmp_path): the queue manager's owners hook (groups
expanded through the real test directory), the delivery record with a journal entry (bytes kept,
a filing error undone alone), and the background indexer catching up after a restart."""
from __future__ import annotations

import asyncio
import io
import time
from pathlib import Path

from gateway.continuity.journal import Journal, Owners
from gateway.logs import make_logger
from policies.directory import Directory
from spool import Spool, db, mailbox
from spool import journal as store
from spool.commit import NewMessage
from spool.journal import JournalEntry
from spool.states import QueueState, RcptState
from spool.transitions import RcptOutcome
from tests.conftest import corpus_files

DIRECTORY = Directory.load(Path(__file__).resolve().parents[2] / "policies" / "data" / "directory.json")


class Msg:
    def __init__(self, queue_id="Q1", mail_from="alice@remote.test", size=10):
        self.queue_id, self.mail_from, self.size = queue_id, mail_from, size


def test_owners_expand_groups_once_per_mailbox_and_skip_contacts():
    owners = Owners(lambda: (DIRECTORY, True))
    e = owners(Msg(), ["team@example.org", "erin@example.org"])
    # team: erin, fmiller (alias of Frank), leads (Frank again, team again, vendor: a contact)
    assert e.mailboxes == {"erin@example.org": "team@example.org",
                           "frank.miller@example.org": "team@example.org"}
    assert (e.queue_id, e.envelope_from, e.size) == ("Q1", "alice@remote.test", 10)
    assert owners(Msg(), ["vendor@example.org"]) is None          # external: no mailbox here
    assert Owners(lambda: (Directory.empty(), False))(Msg(), ["Bob@Example.com"]).mailboxes == {
        "bob@example.com": "Bob@Example.com"}                       # no directory: itself


async def _delivered(spool: Spool, data: bytes, rcpt: str, journal=True, on_error=None) -> str:
    qid = await spool.commit(NewMessage("alice@remote.test", (rcpt,), data))
    assert await spool.claim_due(10) == [qid]
    entry = JournalEntry(qid, {rcpt: rcpt}, "alice@remote.test", len(data)) if journal else None
    state = await spool.record_attempt(qid, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")],
                                       time.time() + 300, journal=entry, on_journal_error=on_error)
    assert state is QueueState.DELIVERED
    return qid


async def test_delivery_record_keeps_the_bytes_a_journal_entry_refers_to(tmp_path):
    spool = await Spool.open(tmp_path / "spool.db")
    try:
        journaled = await _delivered(spool, b"Subject: kept\r\n\r\nbody\r\n", "erin@example.org")
        plain = await _delivered(spool, b"Subject: gone\r\n\r\nbody\r\n", "erin@example.org", journal=False)
        assert await spool.read(store.message_data, journaled) == b"Subject: kept\r\n\r\nbody\r\n"
        assert await spool.read(store.message_data, plain) is None     # deleted at delivery, as before
        [row] = await spool.read(mailbox.list_mailbox, "erin@example.org")
        assert (row["queue_id"], row["indexed"], row["subject"]) == (journaled, 0, "kept")   # on demand
    finally:
        await spool.close()


async def test_a_filing_error_is_undone_alone_and_the_delivery_is_recorded(tmp_path):
    spool = await Spool.open(tmp_path / "spool.db")
    errors = []
    try:
        qid = await spool.commit(NewMessage("alice@remote.test", ("erin@example.org",), b"x\r\n"))
        await spool.claim_due(10)
        bad = JournalEntry(qid, {"erin@example.org": object()})     # cannot be bound: ProgrammingError
        state = await spool.record_attempt(qid, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")],
                                           time.time(), journal=bad, on_journal_error=errors.append)
        assert state is QueueState.DELIVERED
        assert (await spool.get(qid)).state is QueueState.DELIVERED
        assert len(errors) == 1
        assert await spool.read(mailbox.counts) == {}
        assert await spool.read(store.message_data, qid) is None   # no entry: the bytes went as usual
    finally:
        await spool.close()


async def test_indexer_catches_up_after_a_restart(tmp_path):
    """Entries filed (pending) by a gateway that died before indexing them are indexed by the
    next one's housekeeping task, with headers and full-text rows, without filing twice."""
    path = tmp_path / "spool.db"
    corpus = [p.read_bytes() for p in corpus_files()[:20]]
    spool = await Spool.open(path)
    qids = [await _delivered(spool, b"Subject: airship manifest\r\nFrom: <a@remote.test>\r\n\r\n"
                                    b"the zeppelin leaves at dawn\r\n", "erin@example.org")]
    qids += [await _delivered(spool, data, "frank.miller@example.org") for data in corpus]
    await spool.close()                            # "crash": no indexer ever ran

    c = db.connect(path)
    assert store.count_pending(c) == 21
    assert mailbox.search(c, "erin@example.org", "zeppelin") == []
    c.close()

    spool = await Spool.open(path)
    journal = Journal(spool, make_logger(stream=io.StringIO()), retention=86400.0)
    task = asyncio.create_task(journal.run())
    try:
        for _ in range(200):
            if await spool.read(store.count_pending) == 0:
                break
            await asyncio.sleep(0.05)
        assert await spool.read(store.count_pending) == 0
        [hit] = await spool.read(mailbox.search, "erin@example.org", "zeppelin")
        assert (hit["queue_id"], hit["subject"], hit["indexed"]) == (qids[0], "airship manifest", 1)
        assert journal.stats["indexed"] == 21
        frank = await spool.read(mailbox.list_mailbox, "frank.miller@example.org", 100)
        assert sorted(r["queue_id"] for r in frank) == sorted(qids[1:])          # once each
        fts = await spool.read(lambda conn: conn.execute("SELECT count(*) FROM mailbox_fts").fetchone()[0])
        assert fts == 21
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await spool.close()
