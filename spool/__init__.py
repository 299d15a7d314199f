"""Durable queue and message store of mailgate.

The spool owns every message from the moment intake acknowledges it with 250 until it is
delivered, bounced or deleted. It imports nothing else of mailgate (STYLE.md habit 6).

Public API::

    Spool            -- the store: open(), commit(), transition(), record outcomes, queries
    QueueState       -- message states and the allowed-transition table
    RcptState        -- per-recipient states
    NewMessage       -- what intake hands over for commit
    InvalidTransition, SpoolError

The queue core both backends share is the Protocol spool.api.QueueSpool; the PostgreSQL backend
is spool.pg.PgSpool (imported only on demand: it needs psycopg). Claims carry fencing tokens
(spool.states.Claim, StaleClaim; spool.claims on SQLite).
"""
from spool.states import QueueState, RcptState, TRANSITIONS, InvalidTransition
from spool.commit import NewMessage
from spool.query import Recipient, StoredMessage
from spool.store import Spool, SpoolError

__all__ = [
    "Spool", "SpoolError", "NewMessage", "StoredMessage", "Recipient",
    "QueueState", "RcptState", "TRANSITIONS", "InvalidTransition",
]
