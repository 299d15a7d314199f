"""The spool's errors: SpoolError (an operation could not be made durable) and how a SQLite or
OS error is told apart from an error of the operation itself (storage_failure)."""
from __future__ import annotations

import errno
import sqlite3

#: SQLite primary result codes that mean the storage failed, not the operation: BUSY, LOCKED,
#: NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
STORAGE_CODES = frozenset({5, 6, 7, 8, 10, 11, 13, 14, 15, 26})
SQLITE_FULL = 13
class SpoolError(Exception):
    """The spool could not make an operation durable (disk full, I/O error, database locked).
    ``full`` is True when the disk (or quota) is full: intake answers 452 4.3.1 then."""

    def __init__(self, message: str, *, full: bool = False):
        super().__init__(message)
        self.full = full


def storage_failure(e: BaseException) -> bool:
    """True if ``e`` is a failure of the storage (see STORAGE_CODES, or an OSError), not an
    error of the operation itself (a constraint, a refused transition)."""
    if isinstance(e, sqlite3.Error):
        code = getattr(e, "sqlite_errorcode", None)
        if code is None:
            return isinstance(e, sqlite3.OperationalError)
        return code & 0xFF in STORAGE_CODES
    return isinstance(e, OSError)


def _spool_error(what: str, e: BaseException) -> SpoolError:
    if isinstance(e, SpoolError):
        return e
    code = getattr(e, "sqlite_errorcode", None)
    full = (code is not None and code & 0xFF == SQLITE_FULL) or \
        getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT)
    return SpoolError(f"{what}: {e}", full=full)


__all__ = ["SQLITE_FULL", "STORAGE_CODES", "SpoolError", "storage_failure"]
