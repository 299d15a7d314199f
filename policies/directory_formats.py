"""Readers for the recipient-directory exports: JSON and Exchange `Export-Csv` CSV.

Each reader turns file text into `Record`s (one per recipient, with the place in the file it
came from) and raises `DirectoryError` naming the file and the line or entry at fault;
`policies.directory` validates addresses and builds the lookup table. Formats are described
in docs/directory.md.
"""
from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass

__all__ = ["DirectoryError", "Record", "decode_export", "read_json", "read_csv", "KIND_BY_TYPE"]


class DirectoryError(Exception):
    """A directory file cannot be used; the message names the file and the line/entry."""


@dataclass(frozen=True)
class Record:
    """One recipient as read from a file, before validation."""

    kind: str                      # "mailbox" | "group" | "contact"
    address: str
    aliases: tuple[str, ...] = ()
    members: tuple[str, ...] = ()
    target: str = ""
    where: str = ""                # "line 7" or "groups[2]"
    #: Exchange RequireSenderAuthenticationEnabled: only internal senders may send to it
    require_sender_authentication_enabled: bool = False
    #: mailboxes: an alternate address outside the company (AD/Entra ``otherMails``) and a
    #: phone number (``mobile``) for webmail login codes; "" when not exported
    alt_email: str = ""
    phone: str = ""


# Exchange RecipientTypeDetails → kind; any other type (UserMailbox, SharedMailbox,
# RoomMailbox, EquipmentMailbox, LinkedMailbox, RemoteUserMailbox, GroupMailbox, PublicFolder,
# ...) is a mailbox: Get-Recipient lists only recipients Exchange accepts mail for.
KIND_BY_TYPE = {
    "mailuniversaldistributiongroup": "group",
    "mailuniversalsecuritygroup": "group",
    "mailnonuniversalgroup": "group",
    "dynamicdistributiongroup": "group",
    "roomlist": "group",
    "mailcontact": "contact",
    "mailforestcontact": "contact",
    "mailuser": "contact",
    "guestmailuser": "contact",
}

_CSV_REQUIRED = ("primarysmtpaddress", "recipienttypedetails")
_CSV_OPTIONAL = ("emailaddresses", "members", "externalemailaddress",
                 "requiresenderauthenticationenabled", "othermails", "mobilephone", "mobile")
_RSAE = "require_sender_authentication_enabled"
# How Export-Csv writes a [bool]; "" (the property is absent for this recipient type) is False.
_CSV_BOOL = {"true": True, "false": False, "": False}
# What PowerShell writes when a multi-valued property is exported without -join.
_UNJOINED = ("proxyaddresscollection", "system.object[]", "multivaluedproperty")

_JSON_TOP = {"mailboxes", "groups", "contacts", "generated", "source", "comment"}
_JSON_ITEM = {
    "mailboxes": {"address", "aliases", "name", _RSAE, "alt_email", "phone"},
    "groups": {"address", "aliases", "members", "name", "dynamic", _RSAE},
    "contacts": {"address", "aliases", "target", "name"},
}
_JSON_KIND = {"mailboxes": "mailbox", "groups": "group", "contacts": "contact"}


def decode_export(source: str, data: bytes) -> str:
    """Bytes → text: UTF-16 with BOM (PowerShell `-Encoding Unicode`) or UTF-8 (BOM optional)."""
    try:
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DirectoryError(
            f"{source}: not UTF-8 or UTF-16 text at byte {exc.start}; "
            "export with -Encoding UTF8") from None


def read_json(source: str, text: str) -> list[Record]:
    """Parse the JSON format: {"mailboxes": [...], "groups": [...], "contacts": [...]}."""
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DirectoryError(f"{source}: line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    if not isinstance(doc, dict):
        raise DirectoryError(f"{source}: top level must be an object with mailboxes/groups/contacts")
    unknown = sorted(set(doc) - _JSON_TOP)
    if unknown:
        raise DirectoryError(f"{source}: unknown top-level key(s) {', '.join(unknown)}")
    records: list[Record] = []
    for section, kind in _JSON_KIND.items():
        items = doc.get(section, [])
        if not isinstance(items, list):
            raise DirectoryError(f"{source}: {section} must be a list")
        for i, item in enumerate(items):
            where = f"{section}[{i}]"
            if section == "mailboxes" and isinstance(item, str):
                item = {"address": item}
            if not isinstance(item, dict):
                raise DirectoryError(f"{source}: {where}: expected an object")
            bad = sorted(set(item) - _JSON_ITEM[section])
            if bad:
                raise DirectoryError(f"{source}: {where}: unknown key(s) {', '.join(bad)}")
            address = item.get("address")
            if not isinstance(address, str) or not address.strip():
                raise DirectoryError(f"{source}: {where}: missing \"address\"")
            where = f"{where} ({address})"
            target = item.get("target", "")
            if not isinstance(target, str):
                raise DirectoryError(f"{source}: {where}: \"target\" must be a string")
            contact = {}
            for key in ("alt_email", "phone"):
                value = item.get(key, "")
                if not isinstance(value, str):
                    raise DirectoryError(f"{source}: {where}: \"{key}\" must be a string")
                contact[key] = value.strip()
            internal_only = item.get(_RSAE, False)
            if not isinstance(internal_only, bool):
                raise DirectoryError(f"{source}: {where}: \"{_RSAE}\" must be true or false")
            records.append(Record(
                kind, address.strip(),
                aliases=_str_list(item.get("aliases", []), "aliases", source, where),
                members=_str_list(item.get("members", []), "members", source, where),
                target=target.strip(), where=where,
                require_sender_authentication_enabled=internal_only, **contact))
    return records


def read_csv(source: str, text: str) -> list[Record]:
    """Parse Exchange's Export-Csv output (header PrimarySmtpAddress,RecipientTypeDetails,
    EmailAddresses,Members; optional ExternalEmailAddress and RequireSenderAuthenticationEnabled
    (True/False, empty is False); a leading #TYPE line is skipped)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    header: list[str] | None = None
    records: list[Record] = []
    try:
        for row in reader:
            line = reader.line_num
            if header is None:
                if not row or (len(row) == 1 and row[0].startswith("#TYPE")):
                    continue
                header = [name.strip().lower() for name in row]
                missing = [c for c in _CSV_REQUIRED if c not in header]
                if missing:
                    raise DirectoryError(
                        f"{source}: line {line}: header lacks column(s) {', '.join(missing)}")
                continue
            if not any(cell.strip() for cell in row):
                continue
            if len(row) != len(header):
                raise DirectoryError(
                    f"{source}: line {line}: {len(row)} fields, header has {len(header)}")
            records.append(_csv_record(dict(zip(header, row)), source, f"line {line}"))
    except csv.Error as exc:
        raise DirectoryError(f"{source}: line {reader.line_num}: {exc}") from None
    if header is None:
        raise DirectoryError(f"{source}: no header line")
    return records


def _csv_record(row: dict[str, str], source: str, where: str) -> Record:
    address = row["primarysmtpaddress"].strip()
    if not address:
        raise DirectoryError(f"{source}: {where}: empty PrimarySmtpAddress")
    where = f"{where} ({address})"
    kind = KIND_BY_TYPE.get(row["recipienttypedetails"].strip().lower(), "mailbox")
    for column in ("emailaddresses", "members", "othermails"):
        value = row.get(column, "").strip().lower()
        if any(marker in value for marker in _UNJOINED):
            raise DirectoryError(
                f"{source}: {where}: {column} holds {row[column].strip()!r}, not addresses; "
                "export it with -join ';' (see docs/directory.md)")
    aliases = []
    for token in _split(row.get("emailaddresses", "")):
        prefix, colon, rest = token.partition(":")
        if colon and prefix.lower() == "smtp":
            aliases.append(rest.strip())
        elif not colon and "@" in token:
            aliases.append(token)
    members = tuple(_strip_smtp(m) for m in _split(row.get("members", "")))
    if members and kind != "group":
        raise DirectoryError(f"{source}: {where}: Members given for a {kind}")
    flag = row.get("requiresenderauthenticationenabled", "").strip()
    if flag.lower() not in _CSV_BOOL:
        raise DirectoryError(f"{source}: {where}: RequireSenderAuthenticationEnabled is "
                             f"{flag!r}, expected True or False")
    other = [_strip_smtp(m) for m in _split(row.get("othermails", ""))]
    phone = (row.get("mobilephone", "") or row.get("mobile", "")).strip()
    return Record(kind, address, tuple(aliases), members,
                  _strip_smtp(row.get("externalemailaddress", "").strip()), where,
                  _CSV_BOOL[flag.lower()], other[0] if other else "", phone)


def _split(value: str) -> list[str]:
    return [t.strip() for t in value.split(";") if t.strip()]


def _strip_smtp(value: str) -> str:
    return value[5:].strip() if value.lower().startswith("smtp:") else value


def _str_list(value: object, key: str, source: str, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise DirectoryError(f"{source}: {where}: \"{key}\" must be a list of strings")
    return tuple(v.strip() for v in value if v.strip())
