"""Building a message a user sends from the webmail: addresses, headers, MIME with attachments,
sizes (RFC 5322, RFC 2045-2047, RFC 2231, RFC 6532).

Nothing a user types can create a header field: every header input (To, Cc, Bcc, Subject, the
display names in addresses) is refused (ComposeError) if it holds a CR, LF or any other control
character (Unicode category Cc, and U+2028/U+2029); attachment names are cleaned instead (a
file name is not typed): no path, no control, bidi or zero-width characters. Headers are then written by ``email`` with
``email.policy.SMTP`` (RFC 2047 encoded-words for non-ASCII text, RFC 2231 for non-ASCII file
names) or ``email.policy.SMTPUTF8`` when an address is non-ASCII (RFC 6532; the message then
needs SMTPUTF8, RFC 6531). As a last guard the generated header block is parsed back and must
hold exactly the fields we wrote (``check_generated``).

``From`` and the envelope sender are chosen by the caller among the user's own addresses;
``Date`` and ``Message-ID`` (``<random@the user's domain>``) are generated here; the threading
headers come from webmail.thread_headers, the quoted original from webmail.quoting.
"""
from __future__ import annotations

import base64
import datetime as dt
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from policies.rcpt_address import AddressError, normalize_domain, to_ascii_domain
from webmail.thread_headers import (CONTROL as _CONTROL, MAX_SUBJECT, Threading, base_subject,
                                    clean_subject, thread_index_header)


class ComposeError(ValueError):
    """User input that cannot be sent; ``str(e)`` is the message shown with the form, ``field``
    the form field it concerns ('' for the whole message)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


#: Also removed from attachment names: bidi controls (RTL override tricks), zero-width chars.
_NAME_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_LOCAL_UTF8 = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
                         r"(?:\.(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+)*$")
_LDH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")   # RFC 1035 §2.3.1 label
_CTYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")

MAX_BODY = 2_000_000                   # characters of typed text


def check_header_text(value: str, field: str, label: str | None = None) -> str:
    """``value`` stripped of surrounding spaces; ComposeError if it holds a control character
    or ``=?``: Python's header classes decode an RFC 2047 encoded-word found in a value they
    are given (``=?utf-8?q?a=0D=0ABcc:_x@y?=`` becomes a line break, and on interpreters
    before the CVE-2024-6923 fix a display name is then written with a raw CR LF)."""
    if _CONTROL.search(value):
        raise ComposeError(f"{label or field} contains a line break or control character; "
                           "remove it and try again.", field)
    if "=?" in value:
        raise ComposeError(f"{label or field} contains \"=?\", which mail programs read as "
                           "encoded text; remove it and try again.", field)
    return value.strip()


# -- addresses ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Recipient:
    """One parsed address: ``address`` is the envelope form (domain as A-label unless the local
    part is non-ASCII), ``name`` the display name ('' if none)."""

    address: str
    name: str = ""
    local: str = ""
    domain: str = ""        # normalised (U-label) domain

    @property
    def utf8(self) -> bool:
        return not self.address.isascii()

    def header(self) -> Address:
        return Address(display_name=self.name, username=self.local,
                       domain=self.address.rpartition("@")[2])


def parse_address(text: str, field: str = "to", name: str = "") -> Recipient:
    """A bare addr-spec ``local@domain`` (dot-atom local part, ASCII or UTF-8; the domain
    normalised by policies.rcpt_address). Raises ComposeError naming ``text``."""
    text = text.strip()
    local, at, domain = text.rpartition("@")
    if not at or not local or not domain or len(local.encode()) > 64 or not _LOCAL_UTF8.match(local):
        raise ComposeError(f"{text!r} is not an email address.", field)
    try:
        dom = normalize_domain(domain)
        if dom.startswith("["):
            raise AddressError("address literals are not accepted here")
        adom = to_ascii_domain(dom)
    except AddressError:
        raise ComposeError(f"{text!r} has a bad domain.", field) from None
    if "." not in adom:
        raise ComposeError(f"{text!r} has no full domain name.", field)
    if not all(_LDH.match(label) for label in adom.split(".")):
        raise ComposeError(f"{text!r} has a bad domain.", field)
    address = f"{local}@{adom}" if local.isascii() else f"{local}@{dom}"
    if len(address.encode()) > 254:
        raise ComposeError(f"{text!r} is too long.", field)
    return Recipient(address, name, local, dom)


def _split_list(text: str) -> list[str]:
    """Split on ',' and ';' outside quotes and angle brackets."""
    items, cur, quote, angle, esc = [], [], False, False, False
    for ch in text:
        if esc:
            cur.append(ch)
            esc = False
        elif quote and ch == "\\":
            cur.append(ch)
            esc = True
        elif ch == '"':
            quote = not quote
            cur.append(ch)
        elif not quote and ch == "<":
            angle = True
            cur.append(ch)
        elif not quote and ch == ">":
            angle = False
            cur.append(ch)
        elif not quote and not angle and ch in ",;":
            items.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    items.append("".join(cur))
    return [i.strip() for i in items if i.strip()]


_NAMED = re.compile(r'^(?:"((?:[^"\\]|\\.)*)"|([^<>"]*?))\s*<([^<>\s]+)>$')


def parse_address_list(text: str, field: str) -> list[Recipient]:
    """``"Name" <a@x>, b@y; Other <c@z>`` → Recipients, in order, duplicates dropped.
    Raises ComposeError for control characters or an item that is not an address."""
    label = {"to": "To", "cc": "Cc", "bcc": "Bcc"}.get(field, field)
    check_header_text(text, field, label)
    out: dict[str, Recipient] = {}
    for item in _split_list(text):
        m = _NAMED.match(item)
        if m:
            name = (m.group(1) if m.group(1) is not None else (m.group(2) or "")).strip()
            name = re.sub(r"\\(.)", r"\1", name) if m.group(1) is not None else name
            r = parse_address(m.group(3), field, name)
        else:
            r = parse_address(item, field)
        out.setdefault(r.address.casefold(), r)
    return list(out.values())


# -- attachments ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Upload:
    filename: str
    content_type: str
    data: bytes


def safe_filename(name: str | None) -> str:
    """A file name safe for a Content-Disposition parameter: no path, no control or bidi
    characters, at most 150 characters; 'attachment' if nothing is left."""
    name = unicodedata.normalize("NFC", name or "")
    name = re.split(r"[/\\]", name)[-1]
    name = " ".join(_NAME_JUNK.sub(" ", name).split()).replace('"', "'").replace("\\", "_")
    name = name.replace("=?", "= ?").strip(". ")     # no encoded-word: Python would decode it
    if len(name) > 150:
        stem, dot, ext = name.rpartition(".")
        name = (stem[:140] + "." + ext[:8]) if dot and len(ext) <= 8 else name[:150]
    return name or "attachment"


def safe_content_type(ctype: str | None) -> tuple[str, str]:
    """(maintype, subtype) of an upload's declared type if it is a plain token/token, else
    application/octet-stream. message/* and multipart/* are never taken from a browser."""
    c = (ctype or "").split(";")[0].strip().lower()
    if not _CTYPE.match(c) or c.startswith(("message/", "multipart/")):
        return "application", "octet-stream"
    main, _, sub = c.partition("/")
    return main, sub


# -- the message ----------------------------------------------------------------------------
@dataclass
class Built:
    """A message ready to sign and submit: ``data`` (CRLF), the envelope recipients (To, Cc and
    Bcc, in order, no duplicates), whether it needs SMTPUTF8, and the ids written."""

    data: bytes
    rcpts: list[str]
    smtputf8: bool
    message_id: str
    headers: dict = field(default_factory=dict)


#: Header fields build_message writes; check_generated refuses any other.
WRITTEN = {"from", "to", "cc", "subject", "date", "message-id", "in-reply-to", "references",
           "thread-index", "thread-topic", "mime-version", "content-type",
           "content-transfer-encoding", "reply-to"}


def build_message(*, sender: Recipient, to: list[Recipient], cc: list[Recipient],
                  bcc: list[Recipient], subject: str, body: str, attachments: list[Upload] = (),
                  threading: Threading | None = None, forward_raw: bytes | None = None,
                  now: float | None = None) -> Built:
    """The message as bytes (CRLF line ends, see module doc). ``forward_raw`` is attached as a
    message/rfc822 part. Raises ComposeError for a bad subject or body, or no recipient."""
    now = time.time() if now is None else now
    subject = check_header_text(subject, "subject", "Subject")
    if len(subject) > MAX_SUBJECT:
        raise ComposeError("The subject is too long.", "subject")
    if len(body) > MAX_BODY:
        raise ComposeError("The message text is too long.", "body")
    rcpts: dict[str, str] = {}
    for r in (*to, *cc, *bcc):
        rcpts.setdefault(r.address.casefold(), r.address)
    if not rcpts:
        raise ComposeError("Add at least one recipient.", "to")
    everyone = (sender, *to, *cc, *bcc)
    smtputf8 = any(r.utf8 for r in everyone)
    policy = email.policy.SMTPUTF8 if smtputf8 else email.policy.SMTP
    msg = EmailMessage(policy=policy)
    msg["From"] = sender.header()
    if to:
        msg["To"] = tuple(r.header() for r in to)
    if cc:
        msg["Cc"] = tuple(r.header() for r in cc)
    msg["Subject"] = subject
    msg["Date"] = email.utils.format_datetime(dt.datetime.fromtimestamp(now, dt.timezone.utc))
    id_domain = to_ascii_domain(sender.domain) if sender.domain else "localhost"
    message_id = f"<{uuid.uuid4().hex}.{int(now)}@{id_domain}>"
    msg["Message-ID"] = message_id
    t = threading or Threading(thread_index=thread_index_header(now, uuid.uuid4().bytes),
                               thread_topic=base_subject(subject))
    if t.in_reply_to:
        msg["In-Reply-To"] = t.in_reply_to
    if t.references:
        msg["References"] = " ".join(t.references)
    if t.thread_topic:
        msg["Thread-Topic"] = clean_subject(t.thread_topic)
    msg["Thread-Index"] = base64.b64encode(t.thread_index).decode()
    text = body.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    if not text.endswith("\n"):
        text += "\n"
    ascii_short = text.isascii() and max(map(len, text.split("\n"))) <= 900
    msg.set_content(text, cte="7bit" if ascii_short else "quoted-printable")
    for a in attachments:
        main, sub = safe_content_type(a.content_type)
        msg.add_attachment(a.data, maintype=main, subtype=sub, filename=safe_filename(a.filename))
    if forward_raw is not None:
        data = _with_forwarded(msg, _crlf(forward_raw))
    else:
        data = _crlf(msg.as_bytes())
    check_generated(data)
    return Built(data=data, rcpts=list(rcpts.values()), smtputf8=smtputf8, message_id=message_id,
                 headers={"from": str(msg["From"]), "to": str(msg.get("To", "")),
                          "cc": str(msg.get("Cc", "")), "subject": subject})


def _with_forwarded(msg: EmailMessage, original: bytes) -> bytes:
    """``msg`` as bytes with ``original`` (CRLF) attached byte for byte as its last part, a
    message/rfc822 part (message/global if its header block holds UTF-8; RFC 2046 section 5.2.1: 7bit or 8bit, never base64 or QP; ``binary``
    when a line is over 998 octets, RFC 5322 section 2.1.1). The part is spliced in after the
    email package has written the rest, so the forwarded message is never re-serialised; the
    multipart boundary is chosen so that no line of ``original`` starts with it."""
    if msg.get_content_type() != "multipart/mixed":
        msg.make_mixed()
    long_line = any(len(line) > 998 for line in original.split(b"\r\n"))
    cte = "binary" if long_line else ("7bit" if original.isascii() else "8bit")
    # UTF-8 in the header block: message/global (RFC 6532 section 3.7)
    ctype = b"message/rfc822" if original.split(b"\r\n\r\n", 1)[0].isascii() else b"message/global"
    part = (b"Content-Type: " + ctype + b"\r\nContent-Disposition: attachment;"
            b' filename="forwarded-message.eml"\r\nContent-Transfer-Encoding: '
            + cte.encode() + b"\r\n\r\n" + original)
    while True:
        data = _crlf(msg.as_bytes())
        boundary = msg.get_boundary().encode()
        if b"\n--" + boundary not in b"\n" + original:
            break
        msg.set_boundary("=_" + uuid.uuid4().hex)       # the original holds that line: another
    close = b"\r\n--" + boundary + b"--"
    at = data.rindex(close)
    return data[:at] + b"\r\n--" + boundary + b"\r\n" + part + data[at:]


def _crlf(data: bytes) -> bytes:
    """Every line end CRLF (email's generator leaves a bare LF after some base64 bodies)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


#: Header fields of the MIME parts build_message writes.
PART_WRITTEN = {"content-type", "content-transfer-encoding", "content-disposition", "mime-version"}


def _header_block_ok(head: bytes, allowed: set[str]) -> bool:
    names = [m.group(1).decode("ascii", "replace").lower()
             for m in re.finditer(rb"^([^ \t\r\n:]+):", head, re.M)]
    lines = head.split(b"\r\n")
    return not (any(line and line[:1] not in (b" ", b"\t") and b":" not in line for line in lines)
                or any(n not in allowed for n in names) or len(names) != len(set(names)))


def check_generated(data: bytes) -> None:
    """Raise ComposeError unless the top-level header block holds only fields in WRITTEN and
    every MIME part's header block only fields in PART_WRITTEN, each once (the last guard
    against a header created from user input). A forwarded message/rfc822 part's own content
    is not looked into."""
    msg = email.message_from_bytes(data, policy=email.policy.compat32)
    ok = _header_block_ok(data.split(b"\r\n\r\n", 1)[0], WRITTEN)
    if ok and msg.is_multipart():
        # the parts' header blocks, found by their boundary in the bytes themselves
        boundary = msg.get_boundary()
        if not boundary:
            ok = False
        else:
            body = b"\r\n" + data.split(b"\r\n\r\n", 1)[1]
            for chunk in body.split(b"\r\n--" + boundary.encode() + b"\r\n")[1:]:
                ok = ok and _header_block_ok(chunk.split(b"\r\n\r\n", 1)[0], PART_WRITTEN)
    if not ok:
        raise ComposeError("The message could not be built safely; check the addresses, the "
                           "subject and the attachment names.")
