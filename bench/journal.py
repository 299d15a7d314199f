#!/usr/bin/env python3
"""The journal's disk cost and its timings on a real spool database (continuity.journal = "all").

Files ``--messages`` messages taken round-robin from the real corpus (../shared/corpus/messages)
the way the gateway does: committed, claimed, recorded as delivered to ``--owners`` local
mailboxes with the journal entry in the same transaction (spool.store's record path), then indexed
as the background indexer does (gateway.continuity.filing.describe + spool.journal.index_entries).
Prints, per filed message: bytes of the database file (after a checkpoint), split by table and
index with SQLite's dbstat (message bytes, metadata rows and their indexes, FTS5 index), the
write time of the journal entry, the indexer's parse and write time, and the time of one
retention purge batch (spool.mailbox.PURGE_BATCH entries).

    python3 bench/journal.py --messages 2000 --owners 1
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from gateway.continuity.filing import describe  # noqa: E402
from spool import db, journal, mailbox  # noqa: E402
from spool.commit import NewMessage, insert_message  # noqa: E402
from spool.journal import JournalEntry  # noqa: E402
from spool.states import RcptState  # noqa: E402
from spool.transitions import RcptOutcome, claim_due, record_attempt  # noqa: E402

CORPUS = REPO.parent / "shared" / "corpus" / "messages"
GROUPS = {"bytes": ("bodies", "sqlite_autoindex_bodies_1", "mailbox_bodies", "sqlite_autoindex_mailbox_bodies_1"),
          "fts": ("mailbox_fts", "mailbox_fts_data", "mailbox_fts_idx", "mailbox_fts_content",
                  "mailbox_fts_docsize", "mailbox_fts_config"),
          "metadata": ("mailbox_messages", "sqlite_autoindex_mailbox_messages_1", "mailbox_messages_owner",
                       "mailbox_messages_pending", "mailbox_messages_queue", "mailbox_messages_filed",
                       "sqlite_sequence"),
          "queue": ("messages", "recipients", "sqlite_autoindex_messages_1", "sqlite_autoindex_recipients_1",
                    "messages_due", "messages_hold", "messages_replay")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=2000)
    ap.add_argument("--owners", type=int, default=1, help="mailboxes each message reaches")
    ap.add_argument("--dir", default="/tmp/mailgate-bench/journal")
    a = ap.parse_args()
    corpus = [p.read_bytes() for p in sorted(CORPUS.glob("*.eml"))]
    shutil.rmtree(a.dir, ignore_errors=True)
    conn = db.connect(Path(a.dir) / "spool.db")

    file_ms, qids, total_bytes = [], [], 0
    for i in range(a.messages):
        data = corpus[i % len(corpus)]
        total_bytes += len(data)
        owners = {f"user{(i + k) % 1000}@example.com": f"user{(i + k) % 1000}@example.com"
                  for k in range(a.owners)}
        qid = db.transaction(conn, lambda: insert_message(
            conn, NewMessage("a@remote.test", tuple(owners), data)))
        db.transaction(conn, lambda: claim_due(conn, 10))
        outs = [RcptOutcome(k, RcptState.DELIVERED, 250, "ok") for k in range(len(owners))]
        t0 = time.perf_counter()

        def record():
            t = time.perf_counter()
            journal.file_delivered(conn, JournalEntry(qid, owners, "a@remote.test", len(data)))
            file_ms.append(1000 * (time.perf_counter() - t))
            record_attempt(conn, qid, outs, time.time() + 300)
        db.transaction(conn, record)
        qids.append(qid)
        _ = t0

    parse_ms, write_ms = [], []
    for start in range(0, len(qids), 100):
        batch = []
        for q in qids[start:start + 100]:
            t = time.perf_counter()
            batch.append(describe(q, journal.message_data(conn, q)))
            parse_ms.append(1000 * (time.perf_counter() - t))
        t = time.perf_counter()
        db.transaction(conn, lambda: journal.index_entries(conn, batch))
        write_ms.append(1000 * (time.perf_counter() - t) / len(batch))
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    sizes = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall())
    page = conn.execute("PRAGMA page_size").fetchone()[0]
    file_bytes = conn.execute("PRAGMA page_count").fetchone()[0] * page
    n = a.messages
    print(f"{n} messages from {len(corpus)} corpus files, mean {total_bytes / n:,.0f} bytes, "
          f"{a.owners} mailbox(es) each")
    print(f"database file: {file_bytes:,} bytes = {file_bytes / n:,.0f} bytes per message "
          f"({file_bytes / total_bytes:.2f} x the message bytes)")
    rest = dict(sizes)
    for group, names in GROUPS.items():
        b = sum(rest.pop(k, 0) for k in names)
        print(f"  {group:9s} {b / n:10,.0f} bytes per message")
    print(f"  other     {sum(rest.values()) / n:10,.0f} bytes per message {sorted(rest)}")
    print(f"journal entry write (file_delivered, in the record's transaction): median "
          f"{statistics.median(file_ms) * 1000:.0f} us, p99 {sorted(file_ms)[int(n * 0.99)] * 1000:.0f} us")
    print(f"indexer: parse (describe) median {statistics.median(parse_ms):.2f} ms, mean "
          f"{statistics.mean(parse_ms):.2f} ms, max {max(parse_ms):.1f} ms; write "
          f"{statistics.mean(write_ms):.3f} ms per message")

    conn.execute("UPDATE mailbox_messages SET filed_at = 0")
    batches = []
    while True:
        t = time.perf_counter()
        k = db.transaction(conn, lambda: mailbox.purge(conn, 1.0))
        batches.append((k, 1000 * (time.perf_counter() - t)))
        if k < mailbox.PURGE_BATCH:
            break
    full = [ms for k, ms in batches if k == mailbox.PURGE_BATCH]
    print(f"purge: {sum(k for k, _ in batches)} entries in {len(batches)} batches of <= "
          f"{mailbox.PURGE_BATCH}; per full batch median {statistics.median(full) if full else 0:.0f} ms, "
          f"max {max(full) if full else 0:.0f} ms (one write transaction each)")
    left = conn.execute("SELECT (SELECT count(*) FROM bodies), (SELECT count(*) FROM mailbox_fts)").fetchone()
    print(f"after the purge: bodies {left[0]}, FTS rows {left[1]}")
    conn.close()


if __name__ == "__main__":
    main()
