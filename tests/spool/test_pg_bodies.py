"""Message bytes on the PostgreSQL spool: stored TOAST-compressed with lz4 (migration 0009, the
server here is Debian's PostgreSQL 15, built with lz4) and read back in the binary format
(spool.pg.queue.get_message, spool.pg.mailbox_rows.message_data), byte for byte: real corpus
mail, every byte value, a 1 MiB text body, a body that does not compress."""
from __future__ import annotations

import os
from pathlib import Path

import psycopg

from spool import NewMessage
from spool.pg import PgSpool

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "corpus" / "messages"


def _message(data: bytes) -> NewMessage:
    return NewMessage(mail_from="s@remote.test", rcpt_tos=("bob@example.com",), data=data)


async def test_bodies_are_lz4_and_read_back_byte_for_byte(pg_dsn):
    corpus = sorted(CORPUS.glob("*.eml"))
    assert len(corpus) >= 10
    text = b"".join(b"Line %d of a long text body.\r\n" % i for i in range(40000))
    bodies = [p.read_bytes() for p in corpus] + [
        bytes(range(256)) * 64,                       # NUL, CR, LF, 8-bit: every byte value
        text,                                         # 1.2 MB, compresses
        os.urandom(300_000),                          # does not compress
        b"x",
    ]
    s = await PgSpool.open(pg_dsn, node="bodies")
    try:
        ids = [await s.commit(_message(b)) for b in bodies]
        for qid, body in zip(ids, bodies):
            got = await s.get(qid, with_data=True)
            assert type(got.data) is bytes and got.data == body, qid
            assert got.size >= len(body)
            assert (await s.get(qid)).data is None       # without data: no bytes read
            filed = await s.filed_message_data(qid)      # the webmail's read (the queue's copy)
            assert type(filed) is bytes and filed == body, qid
    finally:
        await s.close()
    with psycopg.connect(pg_dsn, autocommit=True) as conn:
        cols = dict(conn.execute(
            "SELECT attrelid::regclass::text, attcompression FROM pg_attribute"
            " WHERE attname = 'data' AND attrelid IN ('bodies'::regclass,"
            " 'mailbox_bodies'::regclass)").fetchall())
        assert cols == {"bodies": "l", "mailbox_bodies": "l"}
        method = conn.execute("SELECT pg_column_compression(data) FROM bodies WHERE queue_id = %s",
                              (ids[len(corpus) + 1],)).fetchone()[0]
        assert method == "lz4"
        version = conn.execute("SELECT max(version) FROM schema_version").fetchone()[0]
        assert version >= 9


async def test_a_claim_carries_a_small_message_with_its_bytes_and_not_a_large_one(pg_dsn):
    from spool.pg.queue import CLAIM_INLINE_BYTES
    small = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))
             if p.stat().st_size <= CLAIM_INLINE_BYTES - 1024][:5]
    large = b"".join(b"Line %d\r\n" % i for i in range(CLAIM_INLINE_BYTES // 8))
    assert len(small) == 5 and len(large) > CLAIM_INLINE_BYTES
    s = await PgSpool.open(pg_dsn, node="inline")
    try:
        multi = NewMessage(mail_from="s@remote.test", data=small[0],
                           rcpt_tos=("bob@example.com", "carol@example.com", "dave@example.com"))
        ids = [await s.commit(multi)] + [await s.commit(_message(b)) for b in small[1:] + [large]]
        claims = await s.claim_due(10)
        assert [c.queue_id for c in claims] == ids            # oldest first
        for c in claims[:-1]:
            stored = await s.get(c.queue_id, with_data=True)
            assert c.message == stored and type(c.message.data) is bytes
            assert c.message.state.value == "active" and c.size == stored.size
        assert [r.address for r in claims[0].message.recipients] == list(multi.rcpt_tos)
        assert claims[-1].message is None and claims[-1].size > CLAIM_INLINE_BYTES
    finally:
        await s.close()
