"""Committing a newly received message: envelope row, one row per recipient, and the bytes.

Runs inside a write transaction opened by the caller (the spool's writer thread batches the
commits of concurrent SMTP sessions into one transaction and one fsync). Writes state
``incoming``; reads nothing.
"""
from __future__ import annotations

import secrets
import sqlite3
import time
from dataclasses import dataclass, field

from spool.states import QueueState, RcptState


@dataclass(frozen=True)
class NewMessage:
    """What intake hands to the spool.

    ``data`` is the complete message as it will be relayed (our Received: header first, then the
    bytes exactly as received). ``rcpt_tos`` keeps envelope order; ``mail_from`` '' is <>.
    """

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    client_addr: str = ""
    client_helo: str = ""
    smtputf8: bool = False
    body_8bit: bool = False
    is_dsn: bool = False
    state: QueueState = QueueState.INCOMING
    queue_id: str = field(default_factory=lambda: new_queue_id())


_B32 = "0123456789BCDFGHJKLMNPQRSTVWXYZ"


def new_queue_id(now_us: int | None = None, node_tag: str = "") -> str:
    """A 14-character queue ID: 10 characters of microsecond time (so IDs sort by arrival),
    then 4 random ones. Upper-case letters without vowels, like Postfix's long queue IDs.
    ``node_tag`` goes between the two, so IDs made with different tags can never be equal:
    on a cluster node the node's tag (node_tag(), 2 characters: 16-character IDs); in intake
    worker K of a SQLite gateway node_tag(K) (16 characters); in intake worker K of a
    PostgreSQL node the node's tag then node_tag(K) (4 characters: 18-character IDs, e.g.
    ``1B2C3D4F5G`` + ``0H`` + ``02`` + ``KLMN``). Nothing parses an ID: it is an opaque key of
    up to 64 characters (the admin API's pattern)."""
    t = now_us if now_us is not None else time.time_ns() // 1000
    head = []
    for _ in range(10):
        t, r = divmod(t, len(_B32))
        head.append(_B32[r])
    r = secrets.randbelow(len(_B32) ** 4)  # one getrandom() call, not one per character
    tail = []
    for _ in range(4):
        r, d = divmod(r, len(_B32))
        tail.append(_B32[d])
    return "".join(reversed(head)) + node_tag + "".join(tail)


def node_tag(number: int) -> str:
    """The 2-character tag of cluster node ``number`` (1..960, given by the database to each
    node name) for new_queue_id. Raises ValueError outside that range."""
    if not 1 <= number < len(_B32) ** 2:
        raise ValueError(f"node number {number} is outside 1..{len(_B32) ** 2 - 1}")
    return _B32[number // len(_B32)] + _B32[number % len(_B32)]


def insert_message(conn: sqlite3.Connection, msg: NewMessage, now: float | None = None,
                   body_file: bool = False) -> str:
    """Insert ``msg`` in state ``msg.state`` (incoming unless said otherwise); return its queue ID.
    ``body_file``: the bytes are already durable in ``bodies/<queue ID>`` (spool.bodyfiles.write):
    the ``bodies`` row gets an empty blob and file = 1.

    Raises sqlite3.IntegrityError if the queue ID exists, ValueError if there is no recipient.
    """
    if not msg.rcpt_tos:
        raise ValueError("a message needs at least one recipient")
    now = time.time() if now is None else now
    conn.execute(
        "INSERT INTO messages (queue_id, state, mail_from, client_addr, client_helo, size, smtputf8,"
        " body_8bit, is_dsn, arrived_at, next_attempt_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
        (msg.queue_id, msg.state.value, msg.mail_from, msg.client_addr, msg.client_helo,
         len(msg.data), int(msg.smtputf8), int(msg.body_8bit), int(msg.is_dsn), now, now, now),
    )
    conn.executemany(
        "INSERT INTO recipients (queue_id, idx, address, state, updated_at) VALUES (?,?,?,?,?)",
        [(msg.queue_id, i, r, RcptState.PENDING.value, now) for i, r in enumerate(msg.rcpt_tos)],
    )
    conn.execute("INSERT INTO bodies (queue_id, data, file) VALUES (?, ?, ?)",
                 (msg.queue_id, b"" if body_file else msg.data, int(body_file)))
    return msg.queue_id


__all__ = ["NewMessage", "new_queue_id", "node_tag", "insert_message"]
