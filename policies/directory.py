"""The local recipient directory: who exists in the accepted domains, kept on disk so that
RCPT-time filtering keeps working while Exchange is down.

An admin exports it from AD/Exchange as JSON or CSV (docs/directory.md; readers in
`directory_formats`). `Directory` is an immutable lookup table of case-folded addresses;
`DirectoryWatcher` holds the current one for a file and swaps in a new one when the file
changes. A failed reload keeps the previous directory: a bad export never opens or closes the
gate. Exceptions: `DirectoryError` (file unreadable, bad format, bad or duplicate address).
"""
from __future__ import annotations

import logging
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from policies.directory_formats import DirectoryError, Record, decode_export, read_csv, read_json
from policies.rcpt_address import AddressError, parse_rcpt

__all__ = ["DirectoryError", "Entry", "Directory", "DirectoryWatcher"]

log = logging.getLogger("mailgate.policies.directory")


@dataclass(frozen=True)
class Entry:
    """One address. `kind` is "mailbox", "group", "contact" or "alias"; `members` (groups)
    and `target` (contact: external address; alias: primary address) as in the export;
    `internal_only` is Exchange's RequireSenderAuthenticationEnabled (only senders from inside,
    i.e. the trusted networks, may send to it); `alt_email` and `phone` (mailboxes, optional)
    are where webmail login codes may be sent (AD/Entra `otherMails`, `mobile`)."""

    address: str
    kind: str
    members: tuple[str, ...] = ()
    target: str = ""
    internal_only: bool = False
    alt_email: str = ""
    phone: str = ""


class Directory:
    """Immutable table of recipients keyed by case-folded address (`Mailbox.key`)."""

    def __init__(self, entries: Mapping[str, Entry] | None = None, source: str = "") -> None:
        self._entries: dict[str, Entry] = dict(entries or {})
        self._count = sum(1 for e in self._entries.values() if e.kind != "alias")
        self.source = source

    @classmethod
    def empty(cls) -> Directory:
        return cls()

    @classmethod
    def load(cls, path: str | Path) -> Directory:
        """Read a `.json` or `.csv` export. Raises DirectoryError naming the file and the
        line/entry for a read error, bad syntax, a bad or duplicate address, or a file that
        lists no recipient at all (an empty export is a broken export, not a closed domain)."""
        path = Path(path)
        readers = {".json": read_json, ".csv": read_csv}
        reader = readers.get(path.suffix.lower())
        if reader is None:
            raise DirectoryError(f"{path}: unknown format, expected a .json or .csv file")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise DirectoryError(f"{path}: cannot read: {exc.strerror or exc}") from None
        return cls.from_records(reader(str(path), decode_export(str(path), data)), str(path))

    @classmethod
    def from_records(cls, records: Iterable[Record], source: str = "") -> Directory:
        """Validate records and build the table. Raises DirectoryError (see `load`)."""
        entries: dict[str, Entry] = {}
        owner: dict[str, str] = {}

        def add(key: str, entry: Entry, where: str) -> None:
            if key in entries:
                raise DirectoryError(
                    f"{source}: {where}: address {key} is already defined at {owner[key]}")
            entries[key] = entry
            owner[key] = where

        for rec in records:
            primary = _key(rec.address, source, rec.where)
            members = tuple(_key(m, source, rec.where) for m in rec.members)
            target = _external(rec.target, source, rec.where) if rec.target else ""
            alt_email = _external(rec.alt_email, source, rec.where) if rec.alt_email else ""
            if rec.phone and not _PHONE.fullmatch(rec.phone):
                raise DirectoryError(f"{source}: {rec.where}: phone {rec.phone!r} is not a number "
                                     "like +441632960961")
            add(primary, Entry(primary, rec.kind, members, target,
                               rec.require_sender_authentication_enabled, alt_email,
                               _phone(rec.phone)), rec.where)
            for alias in dict.fromkeys(_key(a, source, rec.where) for a in rec.aliases):
                if alias != primary:
                    add(alias, Entry(alias, "alias", (), primary), rec.where)
        directory = cls(entries, source)
        if not len(directory):
            raise DirectoryError(f"{source}: lists no recipients; refusing an empty directory")
        return directory

    def lookup(self, address: str) -> Entry | None:
        """The entry for `address` (any case; aliases resolve to their primary entry)."""
        try:
            key = parse_rcpt(address).key
        except AddressError:
            return None
        return self._resolve(key)

    def expand(self, address: str) -> list[str]:
        """Mailboxes that mail to `address` reaches, in order and without duplicates: a
        mailbox → itself; an alias → its mailbox; a group → its members, nested groups
        expanded (cycles are safe); a contact or an unknown address → []."""
        start = self.lookup(address)
        out: dict[str, None] = {}
        seen_groups: set[str] = set()
        stack: list[Iterator[Entry | None]] = [iter([start])]
        while stack:
            entry = next(stack[-1], False)
            if entry is False:
                stack.pop()
            elif entry is None:
                continue
            elif entry.kind == "mailbox":
                out.setdefault(entry.address)
            elif entry.kind == "group" and entry.address not in seen_groups:
                seen_groups.add(entry.address)
                stack.append(self._resolve(m) for m in entry.members)
        return list(out)

    def mailboxes(self) -> list[Entry]:
        """Every mailbox entry (the webmail's users), in file order."""
        return [e for e in self._entries.values() if e.kind == "mailbox"]

    @property
    def domains(self) -> frozenset[str]:
        """Domains of every address in the directory (primary and alias)."""
        return frozenset(key.rpartition("@")[2] for key in self._entries)

    def __len__(self) -> int:
        """Number of recipients (mailboxes, groups, contacts); aliases are not counted."""
        return self._count

    def __repr__(self) -> str:
        return f"<Directory {self.source or '(empty)'} recipients={self._count}>"

    def _resolve(self, key: str) -> Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.kind == "alias":
            entry = self._entries.get(entry.target)
        return entry


class DirectoryWatcher:
    """Holds the current Directory for a file and reloads it when the file changes.

    Call `maybe_reload()` periodically (e.g. every 2 s) and `reload()` on SIGHUP. With
    `path=None` filtering is off: `enabled` is False and `current` is empty. The first load,
    in the constructor, raises DirectoryError: bad configuration fails at start-up. Later a
    failed reload keeps the previous directory and stores the error in `last_error`.
    A file whose mtime is less than `settle` seconds old is left for the next call, so a
    half-written export is not read (writers should still write then rename).
    """

    def __init__(self, path: str | Path | None, *, settle: float = 1.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path is not None else None
        self.enabled = path is not None
        self.current = Directory.empty()
        self.last_error: str | None = None
        self._settle = settle
        self._clock = clock
        self._loaded: tuple[int, int, int] | None = None
        self._failed: tuple[int, int, int] | None = None
        if self.enabled:
            self.reload()

    def reload(self) -> None:
        """Load the file now. Raises DirectoryError and keeps the previous directory."""
        if self.path is None:
            return
        before = self._signature()
        directory = Directory.load(self.path)
        if self._signature() != before:
            raise DirectoryError(f"{self.path}: changed while being read; will retry")
        self.current, self._loaded, self._failed, self.last_error = directory, before, None, None
        log.info("directory_loaded", extra={"path": str(self.path), "recipients": len(directory)})

    def maybe_reload(self) -> bool:
        """Reload if the file's mtime, size or inode changed. True if a new directory is now
        current; never raises (on error: False, previous directory kept, `last_error` set)."""
        if self.path is None:
            return False
        try:
            sig = self._signature()
        except DirectoryError as exc:
            return self._fail(str(exc), None)
        if sig in (self._loaded, self._failed) or self._clock() - sig[0] / 1e9 < self._settle:
            return False
        try:
            self.reload()
        except DirectoryError as exc:
            return self._fail(str(exc), sig)
        return True

    def _fail(self, error: str, sig: tuple[int, int, int] | None) -> bool:
        if error != self.last_error:
            log.error("directory_reload_failed", extra={"path": str(self.path), "error": error,
                                                        "kept_recipients": len(self.current)})
        self.last_error, self._failed = error, sig
        return False

    def _signature(self) -> tuple[int, int, int]:
        try:
            st = os.stat(self.path)  # type: ignore[arg-type]
        except OSError as exc:
            raise DirectoryError(f"{self.path}: cannot stat: {exc.strerror or exc}") from None
        return (st.st_mtime_ns, st.st_size, st.st_ino)


#: a phone number as exported: digits with an optional leading +, spaces, dots, dashes, brackets
_PHONE = re.compile(r"\+?[0-9][0-9 .()/-]{5,30}")


def _phone(value: str) -> str:
    """``+44 (1632) 960-961`` → ``+441632960961`` (separators dropped)."""
    return re.sub(r"[^0-9+]", "", value)


def _key(address: str, source: str, where: str) -> str:
    box = _parse(address, source, where)
    if not box.domain:
        raise DirectoryError(f"{source}: {where}: address {address!r} has no domain")
    return box.key


def _external(address: str, source: str, where: str) -> str:
    return _parse(address, source, where).address


def _parse(address: str, source: str, where: str):
    try:
        return parse_rcpt(address)
    except AddressError as exc:
        raise DirectoryError(f"{source}: {where}: bad address {address!r}: {exc}") from None
