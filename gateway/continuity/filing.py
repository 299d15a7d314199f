"""Filing held mail into continuity mailboxes: which mailboxes a held message reaches, and the
metadata and searchable text the webmail shows (written by spool.mailbox in the same transaction
as the hold).

Recipients are expanded through the local directory as Exchange would: a mailbox → itself, an
alias → its mailbox, a distribution group (dynamic ones too) → its members, nested groups
expanded; a mail contact has no mailbox here (it is external). With no directory configured
(filtering off) each envelope recipient is its own mailbox. Mailbox owners are keyed by
``mailbox_key``: the directory's key (policies.rcpt_address: local part case-folded, domain in the
one IDNA normal form), so ``Carol@XN--BCHER-KVA.example`` and ``carol@bücher.example`` are one
mailbox. Parsing never fails on broken mail:
a header that cannot be decoded is kept raw, a part that cannot be decoded is skipped.
"""
from __future__ import annotations

import email
import email.parser
import email.policy

from policies.rcpt_address import AddressError, parse_rcpt
from spool.mailbox import FilingEntry
from webmail.html_text import html_to_text

#: Most characters of body text indexed per message.
MAX_TEXT = 200_000


def mailbox_key(address: str) -> str:
    """The owner key of a continuity mailbox for ``address`` (``Mailbox.key``: case-folded,
    IDNA-normalised domain); an address that does not parse is only case-folded."""
    try:
        return parse_rcpt(address).key
    except AddressError:
        return address.casefold()


def mailboxes_for(rcpts: list[str], directory, filtering: bool) -> dict[str, str]:
    """{owner mailbox (``mailbox_key``): envelope recipient that reached it}, first recipient
    wins."""
    out: dict[str, str] = {}
    for rcpt in rcpts:
        members = directory.expand(rcpt)
        if not members and not filtering and directory.lookup(rcpt) is None:
            members = [rcpt]
        for m in members:
            out.setdefault(mailbox_key(m), rcpt)
    return out


def prepare(*, queue_id: str, data: bytes, envelope_from: str, rcpts: list[str], directory,
            filtering: bool, event_id: str = "") -> FilingEntry | None:
    """The FilingEntry for a held message, or None if it reaches no local mailbox. Pure CPU:
    run it off the event loop (asyncio.to_thread)."""
    owners = mailboxes_for(rcpts, directory, filtering)
    if not owners:
        return None
    d = describe(queue_id, data)
    return FilingEntry(
        queue_id=queue_id, data=data, mailboxes=owners, envelope_from=envelope_from,
        event_id=event_id, from_header=d.from_header, to_header=d.to_header,
        cc_header=d.cc_header, subject=d.subject, date_header=d.date_header,
        message_id=d.message_id, has_attachments=d.has_attachments, body_text=d.body_text)


def describe(queue_id: str, data: bytes) -> FilingEntry:
    """The headers the webmail lists and the searchable text of ``data`` (RFC 5322 bytes), as a
    FilingEntry without owners or bytes (``mailboxes`` empty, ``data`` b""): what the journal's
    background indexer (gateway.continuity.journal) writes for an entry filed at delivery. Pure
    CPU, never raises on broken mail: run it off the event loop."""
    try:
        msg = email.message_from_bytes(data, policy=email.policy.default)
        parts = list(msg.walk())
    except RecursionError:
        # MIME nested deeper than the email package's recursive parser can go (hostile mail):
        # list it by its top-level headers, index the undecoded text after them
        msg = email.parser.BytesParser(policy=email.policy.default).parsebytes(data, headersonly=True)
        body = data.split(b"\r\n\r\n", 1)[-1] if b"\r\n\r\n" in data else data.split(b"\n\n", 1)[-1]
        return _entry(queue_id, msg, [body[:MAX_TEXT].decode("utf-8", "replace")], False)
    texts, attachments = [], False
    for part in parts:
        if part.is_multipart():
            continue
        try:
            disposition = part.get_content_disposition()
            filename = part.get_filename()
        except Exception:
            disposition, filename = None, None
        if disposition == "attachment" or filename:
            attachments = True
            continue
        ctype = part.get_content_type()
        if ctype not in ("text/plain", "text/html"):
            continue
        try:
            text = part.get_content()
        except Exception:
            payload = part.get_payload(decode=True) or b""
            text = payload.decode("utf-8", "replace")
        texts.append(html_to_text(text) if ctype == "text/html" else text)
        if sum(map(len, texts)) > MAX_TEXT:
            break
    return _entry(queue_id, msg, texts, attachments)


def _entry(queue_id: str, msg, texts: list[str], attachments: bool) -> FilingEntry:
    return FilingEntry(
        queue_id=queue_id, data=b"", mailboxes={}, from_header=_header(msg, "From"),
        to_header=_header(msg, "To"), cc_header=_header(msg, "Cc"), subject=_header(msg, "Subject"),
        date_header=_header(msg, "Date"), message_id=_header(msg, "Message-ID"),
        has_attachments=attachments, body_text="\n".join(texts)[:MAX_TEXT])


def _header(msg, name: str) -> str:
    try:
        v = msg.get(name)
        return "" if v is None else str(v)[:2000]
    except Exception:  # undecodable header: keep what the raw bytes say
        for k, v in msg.raw_items():
            if k.lower() == name.lower():
                return str(v)[:2000]
        return ""
