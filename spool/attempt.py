"""Recording a delivery attempt in one write (spool.store.Spool.record_attempt): the claim
check, the journal entry of what was delivered, the attempt's outcome, the filing of held mail
and the DSN it causes, all in the caller's transaction."""
from __future__ import annotations

from spool import claims as _claims
from spool import commit as _commit
from spool import journal as _journal
from spool import mailbox as _mailbox
from spool import transitions as _tr
from spool.errors import storage_failure
from spool.states import QueueState


def record_with_dsn(conn, queue_id, outcomes, next_attempt_at, dsn, hold=False, filing=None,
                    journal=None, hold_reason="continuity", token=None):
    """Inside the caller's write transaction: check the claim ``token`` (StaleClaim: nothing
    written), file the journal entry (its own failure is undone alone and returned, a storage
    failure raises), record the attempt's outcomes (spool.transitions.record_attempt), file
    ``filing`` if the message went on hold, insert the ``dsn``. Returns (state, journal_error)."""
    journal_error = None
    if token is not None:     # before the journal: a stale claim writes nothing at all
        _claims.check_current(conn, queue_id, token)
    if journal is not None:   # before the record: record_attempt keeps the bytes it refers to
        conn.execute("SAVEPOINT journal")
        try:
            _journal.file_delivered(conn, journal)
        except Exception as e:
            if storage_failure(e) or not conn.in_transaction:
                raise
            conn.execute("ROLLBACK TO journal")
            journal_error = e
        conn.execute("RELEASE journal")
    state = _tr.record_attempt(conn, queue_id, outcomes, next_attempt_at, hold=hold,
                               hold_reason=hold_reason, token=token)
    if filing is not None and state is QueueState.HOLD:
        _mailbox.file_message(conn, filing)
    if dsn is not None:
        _commit.insert_message(conn, dsn)
    return state, journal_error


__all__ = ["record_with_dsn"]
