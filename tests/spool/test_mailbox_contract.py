"""The continuity-mailbox verbs (spool.mailbox_verbs.MailboxVerbs, spool.pg.mailbox.PgMailboxVerbs),
run on both backends: the SQLite spool and the PostgreSQL spool (a real PostgreSQL 15, a fresh
database per test). Filing with the queue's record (hold, journal), folders, one message, flags,
search (the same query finds the same messages on both), the journal's indexer and the purge.
Every assertion is on state read back through the spool's verbs."""
from __future__ import annotations

import time

import pytest

from spool import NewMessage, QueueState, RcptState
from spool.journal import JournalEntry
from spool.mailbox import MARK_END, MARK_START, FilingEntry
from spool.states import StaleClaim
from spool.transitions import RcptOutcome

ERIN, FRANK = "erin@example.org", "frank@example.org"
S, E = MARK_START, MARK_END


def entry(qid, owners=(ERIN,), *, subject="hello", body="nothing", sender="A <a@remote.test>",
          envelope_from="a@remote.test", folder="inbox", data=None, **kw) -> FilingEntry:
    return FilingEntry(queue_id=qid, data=data if data is not None else f"Subject: {subject}\r\n\r\n{body}\r\n".encode(),
                       mailboxes={o: o for o in owners}, subject=subject, body_text=body,
                       from_header=sender, envelope_from=envelope_from, folder=folder, **kw)


async def file(spool, *entries) -> list[int]:
    """File each entry; the id of its first owner's row (read back through the folder view)."""
    ids = []
    for e in entries:
        assert await spool.file_message(e) == len(e.mailboxes)
        owner = next(iter(e.mailboxes))
        rows = await spool.list_mailbox(owner, limit=1000)
        ids.append(next(r["id"] for r in rows if r["queue_id"] == e.queue_id and r["folder"] == e.folder))
    return ids


async def test_folders_are_newest_first_per_owner_with_counts_and_clamped_pages(mspool):
    ids = await file(mspool, *(entry(f"Q{i}") for i in range(5)), entry("S0", folder="sent"),
                     entry("F0", owners=(FRANK,)))
    p1 = await mspool.folder_page(ERIN, "inbox", 1, per_page=2)
    assert [r["queue_id"] for r in p1["rows"]] == ["Q4", "Q3"]
    assert (p1["total"], p1["unread"], p1["page"], p1["pages"]) == (5, 5, 1, 3)
    assert [r["queue_id"] for r in (await mspool.folder_page(ERIN, "inbox", 99, per_page=2))["rows"]] == ["Q0"]
    assert (await mspool.folder_page(ERIN, "inbox", -3, per_page=2))["page"] == 1
    assert [r["queue_id"] for r in (await mspool.folder_page("Erin@Example.org", "sent"))["rows"]] == ["S0"]
    empty = await mspool.folder_page("nobody@example.org", "inbox")
    assert (empty["rows"], empty["total"], empty["pages"]) == ([], 0, 1)
    row = p1["rows"][0]
    assert (row["mailbox"], row["envelope_rcpt"], row["from_header"], row["subject"]) == \
        (ERIN, ERIN, "A <a@remote.test>", "hello")
    assert (row["seen"], row["deleted"], row["indexed"], row["has_attachments"]) == (0, 0, 1, 0)
    assert row["size"] == len(entry("Q4").data) and time.time() - 60 < row["filed_at"] < time.time() + 60
    assert await mspool.unread_counts(ERIN) == {"inbox": 5, "sent": 1}
    assert await mspool.mailbox_counts() == {ERIN: 6, FRANK: 1}
    assert [r["queue_id"] for r in await mspool.list_mailbox(ERIN, limit=2, offset=1)] == ["Q4", "Q3"]
    assert ids[0] != ids[1]


async def test_filing_is_idempotent_per_owner_and_folder(mspool):
    await file(mspool, entry("Q1", owners=(ERIN, FRANK)))
    assert await mspool.file_message(entry("Q1", owners=(ERIN, FRANK))) == 0
    assert await mspool.file_message(entry("Q1", folder="sent")) == 1       # sent to themselves
    assert await mspool.mailbox_counts() == {ERIN: 2, FRANK: 1}


async def test_one_message_is_the_owners_only_with_its_bytes(mspool):
    [a, b] = await file(mspool, entry("Q1", data=b"Subject: one\r\n\r\nbody one\r\n"), entry("Q2"))
    got = await mspool.get_mailbox_message("ERIN@example.org", a)
    assert got["queue_id"] == "Q1" and got["data"] == b"Subject: one\r\n\r\nbody one\r\n"
    assert "data" not in await mspool.get_mailbox_message(ERIN, a, with_data=False)
    assert await mspool.get_mailbox_message(FRANK, a) is None                  # not frank's: as missing
    assert await mspool.get_mailbox_message(ERIN, 10 ** 9) is None
    assert await mspool.get_mailbox_message(ERIN, 2 ** 63 - 1) is None
    assert await mspool.get_mailbox_message(ERIN, a, folder="sent") is None
    assert (await mspool.get_mailbox_message(ERIN, a, folder="inbox"))["id"] == a
    assert await mspool.set_flags(ERIN, b, deleted=True) is True
    assert await mspool.get_mailbox_message(ERIN, b, include_deleted=False) is None
    assert (await mspool.get_mailbox_message(ERIN, b))["deleted"] == 1


async def test_flags_are_the_owners_own(mspool):
    [a, b] = await file(mspool, entry("Q1"), entry("Q2"))
    assert await mspool.set_flags(FRANK, a, seen=True, deleted=True) is False
    assert await mspool.set_flags(ERIN, 10 ** 9, seen=True) is False
    assert await mspool.set_flags(ERIN, a) is True and await mspool.set_flags(FRANK, a) is False
    assert await mspool.set_flags(ERIN, a, seen=True) is True
    assert (await mspool.get_mailbox_message(ERIN, a))["seen"] == 1
    assert await mspool.unread_counts(ERIN) == {"inbox": 1, "sent": 0}
    assert await mspool.set_flags(ERIN, b, deleted=True) is True
    page = await mspool.folder_page(ERIN, "inbox")
    assert [r["id"] for r in page["rows"]] == [a] and (page["total"], page["unread"]) == (1, 0)
    assert await mspool.set_flags(ERIN, b, deleted=False, seen=False) is True
    assert (await mspool.folder_page(ERIN, "inbox"))["total"] == 2
    assert await mspool.counts() == {s.value: 0 for s in QueueState}        # the queue never changes


SEARCHABLE = [
    entry("BUD", subject="Budget for Oxford", body="The budget is <b>tight</b> this year."),
    entry("ROO", subject="Travel", body="We saw a kangaroo near the road to Sydney."),
    entry("BOB", subject="Hi", body="see you", sender="Bob Builder <bob@partner.test>",
          envelope_from="bounces@lists.partner.test"),
    entry("CAF", subject="Réunion au café", body="Ça commence à 9h, naïve question: Zürich?"),
    entry("TOK", subject="Deadline", body="deadline for the budget is Friday", cc_header="carol@example.org"),
]


@pytest.mark.parametrize("query, found", [
    ("budget", ["TOK", "BUD"]),                  # a word of the subject (and of a body)
    ("kangaroo", ["ROO"]),                       # a word of the body
    ("bob@partner.test", ["BOB"]),               # a sender address
    ("partner", ["BOB"]),                        # part of an address
    ("bounces@lists.partner.test", ["BOB"]),     # the envelope sender
    ("carol@example.org", ["TOK"]),              # a recipient (Cc)
    ("kanga", ["ROO"]),                          # prefix match on the last word
    ("budget oxford", ["BUD"]),                  # every word must match
    ("oxford budget", ["BUD"]),
    ("cafe", ["CAF"]), ("Café", ["CAF"]), ("zurich", ["CAF"]), ("NAÏVE", ["CAF"]),  # diacritics, case
    ("\"budget\" OR kangaroo*", []),             # query syntax is words, never operators
    ("budget AND", []),
    ("!!! ...", []), ("", []),                   # no word: nothing
    ("sydney", ["ROO"]), ("kangaroos", []),
])
async def test_the_same_query_finds_the_same_messages_on_both_backends(mspool, query, found):
    await file(mspool, *SEARCHABLE, entry("FRK", owners=(FRANK,), subject="budget kangaroo"))
    res = await mspool.search_messages(ERIN, query)
    assert [r["queue_id"] for r in res["rows"]] == found and res["more"] is False
    assert all(r["mailbox"] == ERIN for r in res["rows"])


async def test_search_marks_matches_pages_and_skips_deleted(mspool):
    ids = await file(mspool, *SEARCHABLE)
    res = await mspool.search_messages(ERIN, "budget")
    bud = next(r for r in res["rows"] if r["queue_id"] == "BUD")
    assert bud["subject_marked"] == f"{S}Budget{E} for Oxford"
    assert f"{S}budget{E}" in bud["snippet"] and "<b>tight</b>" in bud["snippet"]   # raw: the caller escapes
    tok = next(r for r in res["rows"] if r["queue_id"] == "TOK")
    assert tok["subject_marked"] == "Deadline" and f"{S}budget{E}" in tok["snippet"]
    one = await mspool.search_messages(ERIN, "budget", limit=1)
    two = await mspool.search_messages(ERIN, "budget", limit=1, offset=1)
    assert ([r["queue_id"] for r in one["rows"]], one["more"]) == (["TOK"], True)
    assert ([r["queue_id"] for r in two["rows"]], two["more"]) == (["BUD"], False)
    await mspool.set_flags(ERIN, ids[0], deleted=True)
    assert [r["queue_id"] for r in (await mspool.search_messages(ERIN, "budget"))["rows"]] == ["TOK"]
    assert (await mspool.search_messages(FRANK, "budget"))["rows"] == []


async def active(spool, rcpts=(ERIN,), data=b"From: P <p@remote.test>\r\nSubject: Minutes\r\n\r\nkoala text\r\n"):
    m = NewMessage(mail_from="p@remote.test", rcpt_tos=tuple(rcpts), data=data, queue_id=spool.new_queue_id())
    await spool.commit(m)
    [claim] = await spool.claim_due(10)
    assert claim.queue_id == m.queue_id
    return m, claim


async def test_a_held_message_is_filed_with_its_hold(mspool):
    m, claim = await active(mspool)
    state = await mspool.record_attempt(m.queue_id, [RcptOutcome(0, RcptState.PENDING, 451, "later")],
                                        time.time() + 60, hold=True, filing=entry(m.queue_id, data=m.data),
                                        token=claim.token)
    assert state is QueueState.HOLD
    [row] = (await mspool.folder_page(ERIN, "inbox"))["rows"]
    assert row["queue_id"] == m.queue_id
    assert (await mspool.get_mailbox_message(ERIN, row["id"]))["data"] == m.data
    # a delivered message is not filed by a filing entry (only held ones are)
    m2, c2 = await active(mspool)
    assert await mspool.record_attempt(m2.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")],
                                       time.time(), filing=entry(m2.queue_id), token=c2.token) \
        is QueueState.DELIVERED
    assert (await mspool.folder_page(ERIN, "inbox"))["total"] == 1


async def test_journal_files_pending_entries_that_are_indexed_then_purged_with_the_bytes(mspool):
    m, claim = await active(mspool)
    j = JournalEntry(m.queue_id, {ERIN: ERIN}, m.mail_from, len(m.data))
    assert await mspool.record_attempt(m.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")],
                                       time.time(), journal=j, token=claim.token) is QueueState.DELIVERED
    [row] = (await mspool.folder_page(ERIN, "inbox"))["rows"]
    assert row["indexed"] == 0 and row["subject"] == "Minutes" and "p@remote.test" in row["from_header"]
    assert await mspool.journal_pending(10) == [(row["id"], m.queue_id)]
    assert await mspool.count_journal_pending() == 1
    assert await mspool.filed_message_data(m.queue_id) == m.data       # the queue's copy, kept
    assert (await mspool.search_messages(ERIN, "koala"))["rows"] == []  # not indexed yet
    assert await mspool.purge_finished(time.time() + 3600) == 0         # an entry refers to it
    described = [FilingEntry(queue_id=m.queue_id, data=b"", mailboxes={}, subject="Minutes",
                             from_header="P <p@remote.test>", body_text="koala text", has_attachments=True)]
    assert await mspool.index_journal(described) == 1
    assert await mspool.index_journal(described) == 0                    # idempotent
    assert await mspool.count_journal_pending() == 0 and await mspool.journal_pending(10) == []
    [hit] = (await mspool.search_messages(ERIN, "koala"))["rows"]
    assert (hit["id"], hit["indexed"], hit["has_attachments"]) == (row["id"], 1, 1)
    assert [r["id"] for r in (await mspool.search_messages(ERIN, "p@remote.test"))["rows"]] == [row["id"]]
    assert await mspool.purge_mailboxes(time.time() - 3600) == 0         # not expired
    assert await mspool.purge_mailboxes(time.time() + 3600) == 1
    assert await mspool.filed_message_data(m.queue_id) is None           # bytes went with the entry
    assert await mspool.list_mailbox(ERIN) == []
    assert await mspool.purge_finished(time.time() + 3600) == 1


async def test_a_journal_entry_that_cannot_be_written_is_undone_alone(mspool):
    m, claim = await active(mspool)
    errors = []
    bad = JournalEntry(m.queue_id, {ERIN: object()}, m.mail_from, 1)
    assert await mspool.record_attempt(m.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")],
                                       time.time(), journal=bad, on_journal_error=errors.append,
                                       token=claim.token) is QueueState.DELIVERED
    assert len(errors) == 1 and await mspool.list_mailbox(ERIN) == []
    assert (await mspool.get(m.queue_id)).state is QueueState.DELIVERED


async def test_the_early_record_journals_and_a_stale_claim_files_nothing(mspool):
    m, claim = await active(mspool, rcpts=(ERIN, "buyer@partner.test"))
    j = JournalEntry(m.queue_id, {ERIN: ERIN}, m.mail_from, len(m.data))
    with pytest.raises(StaleClaim):
        await mspool.record_delivered(m.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], j,
                                      token=claim.token + 1000)
    assert await mspool.list_mailbox(ERIN) == []
    assert await mspool.record_delivered(m.queue_id, [RcptOutcome(0, RcptState.DELIVERED, 250, "ok")], j,
                                         token=claim.token) == 1
    [row] = await mspool.list_mailbox(ERIN)
    assert (row["queue_id"], row["indexed"]) == (m.queue_id, 0)
    # the attempt's own record files it again: nothing twice
    await mspool.record_attempt(m.queue_id, [RcptOutcome(1, RcptState.DELIVERED, 250, "ok")], time.time(),
                                journal=j, token=claim.token)
    assert len(await mspool.list_mailbox(ERIN)) == 1


async def test_purge_goes_oldest_first_in_bounded_batches(mspool):
    await file(mspool, *(entry(f"Q{i}") for i in range(5)))
    before = time.time() + 3600
    assert [await mspool.purge_mailboxes(before, 2) for _ in range(4)] == [2, 2, 1, 0]
    assert await mspool.mailbox_counts() == {}
