"""Building a message a user sends from the webmail: addresses, headers, MIME with attachments,
threading (RFC 5322 §3.6.4; Outlook's Thread-Index / Thread-Topic), limits.

Nothing a user types can create a header field: every header input (To, Cc, Bcc, Subject, the
display names in addresses, attachment names) is refused (ComposeError) if it holds a CR, LF or
any other control character (Unicode category Cc, and U+2028/U+2029); attachment names are
cleaned instead (a file name is not typed). Headers are then written by ``email`` with
``email.policy.SMTP`` (RFC 2047 encoded-words for non-ASCII text, RFC 2231 for non-ASCII file
names) or ``email.policy.SMTPUTF8`` when an address is non-ASCII (RFC 6532; the message then
needs SMTPUTF8, RFC 6531). As a last guard the generated header block is parsed back and must
hold exactly the fields we wrote (``check_generated``).

``From`` and the envelope sender are chosen by the caller among the user's own addresses;
``Date`` and ``Message-ID`` (``<random@the user's domain>``) are generated here. Message-IDs of the
original (threading) are taken only when they match ``MSGID``, a strict id-left@id-right pattern
(RFC 5322 §3.6.4 without obsolete or folded forms).

Thread-Index ([MS-OXOMSG] 2.2.1.3, PidTagConversationIndex): base64 of a 22-byte header block
(1 reserved byte 0x01, the 5 high-order bytes of a FILETIME, a 16-byte GUID) followed by one
5-byte child block per reply (1 bit delta code, 31 bits of time difference to the header time,
1 random byte). A reply appends a child block to the original's Thread-Index; an original without
one gets a header block derived from its Message-ID and Date, so every reply to it shares the
same 22-byte prefix.
"""
from __future__ import annotations

import base64
import datetime as dt
import email
import email.header
import email.parser
import email.policy
import email.utils
import hashlib
import re
import secrets
import time
import unicodedata
import uuid
from dataclasses import dataclass, field
from email.headerregistry import Address
from email.message import EmailMessage

from policies.rcpt_address import AddressError, normalize_domain, to_ascii_domain


class ComposeError(ValueError):
    """User input that cannot be sent; ``str(e)`` is the message shown with the form, ``field``
    the form field it concerns ('' for the whole message)."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


#: Characters refused in every header input (category Cc, line and paragraph separators).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")
#: Also removed from attachment names: bidi controls (RTL override tricks), zero-width chars.
_NAME_JUNK = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u200b-\u200f\u202a-\u202e\u2066-\u2069\ufeff]")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
#: A Message-ID we accept from an original (id-left "@" id-right, no obsolete syntax).
MSGID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[!-Z^-~]*\])>")
_LOCAL_UTF8 = re.compile(r"^(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+"
                         r"(?:\.(?:[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]|[^\x00-\x7f])+)*$")
_LDH = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")   # RFC 1035 §2.3.1 label
_CTYPE = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,63}$")
_PREFIX = re.compile(r"^\s*((re|aw|sv|fw|fwd|wg|tr)\s*(\[\d+\])?\s*:\s*)+", re.I)

MAX_SUBJECT = 998 - len("Subject: ")   # characters
MAX_BODY = 2_000_000                   # characters of typed text
MAX_REFERENCES = 20                    # Message-IDs kept in References (the oldest and newest)
MAX_QUOTE = 200_000                    # characters of the original quoted in a reply
FILETIME_EPOCH = 116444736000000000    # 100 ns intervals from 1601-01-01 to 1970-01-01


def check_header_text(value: str, field: str, label: str | None = None) -> str:
    """``value`` stripped of surrounding spaces; ComposeError if it holds a control character."""
    if _CONTROL.search(value):
        raise ComposeError(f"{label or field} contains a line break or control character; "
                           "remove it and try again.", field)
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


# -- threading ------------------------------------------------------------------------------
def message_ids(value: str | None) -> list[str]:
    """The strict Message-IDs (``MSGID``) in a header value, in order, without duplicates."""
    if not value:
        return []
    return list(dict.fromkeys(MSGID.findall(str(value))))


def filetime(ts: float) -> int:
    return int(ts * 10_000_000) + FILETIME_EPOCH


def thread_index_header(ts: float, guid: bytes) -> bytes:
    """A 22-byte Thread-Index header block for time ``ts`` (unix seconds) and a 16-byte GUID."""
    return b"\x01" + (filetime(ts) >> 24).to_bytes(5, "big") + guid[:16].ljust(16, b"\0")


def thread_index_child(parent: bytes, ts: float, rand: int | None = None) -> bytes:
    """``parent`` (22 + 5k bytes) with one child block appended for a reply at ``ts``."""
    header_time = int.from_bytes(parent[1:6], "big") << 24
    diff = max(0, filetime(ts) - header_time)
    if diff < (1 << 49):
        code, delta = 0, (diff >> 18) & 0x7FFFFFFF
    else:
        code, delta = 1, (diff >> 23) & 0x7FFFFFFF
    r = secrets.randbelow(256) if rand is None else rand & 0xFF
    return parent + ((code << 31) | delta).to_bytes(4, "big") + bytes([r])


def decode_thread_index(value: str | None) -> bytes | None:
    """The bytes of a valid Thread-Index (22 + 5k bytes, k ≤ 100), else None."""
    if not value:
        return None
    try:
        raw = base64.b64decode("".join(str(value).split()), validate=True)
    except (ValueError, TypeError):
        return None
    if len(raw) < 22 or (len(raw) - 22) % 5 or len(raw) > 22 + 500:
        return None
    return raw


def base_subject(subject: str) -> str:
    """The subject without reply/forward prefixes (Re:, AW:, Fwd:, ...), for Thread-Topic."""
    return _PREFIX.sub("", subject).strip()


def clean_subject(subject: str) -> str:
    """An original's decoded subject made safe to reuse: control characters become spaces,
    runs of spaces are one space, at most MAX_SUBJECT characters."""
    return " ".join(_CONTROL.sub(" ", subject or "").split())[:MAX_SUBJECT - 5]


def reply_subject(subject: str) -> str:
    s = clean_subject(subject)
    return s if re.match(r"^\s*re\s*:", s, re.I) else f"Re: {s}"


def forward_subject(subject: str) -> str:
    s = clean_subject(subject)
    return s if re.match(r"^\s*(fwd?|fw)\s*:", s, re.I) else f"Fwd: {s}"


@dataclass(frozen=True)
class Threading:
    """Header values for a reply or forward of an original (all already safe)."""

    in_reply_to: str = ""            # '' for a forward or an original without a valid id
    references: tuple[str, ...] = ()
    thread_index: bytes = b""
    thread_topic: str = ""


def threading_for(raw: bytes, *, reply: bool, now: float | None = None,
                  fallback_time: float | None = None) -> Threading:
    """Threading headers for a reply (``reply``) or forward of the original ``raw``."""
    now = time.time() if now is None else now
    h = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(raw)

    def get(name: str) -> str:
        try:
            v = h.get(name)
            return "" if v is None else str(v)
        except Exception:
            return ""
    mid = (message_ids(get("Message-ID")) or [""])[0]
    refs = message_ids(get("References")) or message_ids(get("In-Reply-To"))[:1]
    if mid:
        refs = [r for r in refs if r != mid] + [mid]
    if len(refs) > MAX_REFERENCES:          # keep the thread's root and the newest ones
        refs = refs[:1] + refs[-(MAX_REFERENCES - 1):]
    parent = decode_thread_index(get("Thread-Index"))
    if parent is None:
        try:
            when = email.utils.parsedate_to_datetime(get("Date")).timestamp()
        except Exception:
            when = fallback_time or now
        seed = (mid or hashlib.sha256(raw[:4096]).hexdigest()).encode()
        parent = thread_index_header(when, hashlib.md5(seed).digest())
    topic = clean_subject(_decoded(get("Thread-Topic"))) or base_subject(clean_subject(_decoded(get("Subject"))))
    return Threading(in_reply_to=mid if reply else "", references=tuple(refs) if reply else (),
                     thread_index=thread_index_child(parent, now), thread_topic=topic[:500])


def _decoded(value: str) -> str:
    try:
        return str(email.header.make_header(email.header.decode_header(value)))
    except Exception:
        return value


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
    name = " ".join(_NAME_JUNK.sub(" ", name).split()).replace('"', "'").replace("\\", "_").strip(". ")
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
        original = email.message_from_bytes(forward_raw, policy=email.policy.SMTP)
        msg.add_attachment(original, filename="forwarded-message.eml")
    data = _crlf(msg.as_bytes())
    check_generated(data)
    return Built(data=data, rcpts=list(rcpts.values()), smtputf8=smtputf8, message_id=message_id,
                 headers={"from": str(msg["From"]), "to": str(msg.get("To", "")),
                          "cc": str(msg.get("Cc", "")), "subject": subject})


def _crlf(data: bytes) -> bytes:
    """Every line end CRLF (email's generator leaves a bare LF after some base64 bodies)."""
    return re.sub(rb"\r?\n", b"\r\n", data)


def check_generated(data: bytes) -> None:
    """Raise ComposeError unless the top-level header block holds only fields in WRITTEN, each
    once (the last guard against a header created from user input)."""
    head = data.split(b"\r\n\r\n", 1)[0]
    names = [m.group(1).decode().lower() for m in re.finditer(rb"^([^ \t\r\n:]+):", head, re.M)]
    lines = head.split(b"\r\n")
    if any(line and line[:1] not in (b" ", b"\t") and b":" not in line for line in lines) or \
            any(n not in WRITTEN for n in names) or len(names) != len(set(names)):
        raise ComposeError("The message could not be built safely; check the addresses and subject.")


# -- quoting the original -------------------------------------------------------------------
def parse_original(raw: bytes):
    """The original parsed by the reader's ``webmail.mime.parse`` when it is there, else by the
    minimal fallback below (same attribute names: subject, from_, to, cc, reply_to, date,
    message_id, references, text, attachments)."""
    try:
        from webmail import mime       # the reader's module (merged separately)
    except ImportError:
        mime = None
    if mime is not None:
        try:
            return mime.parse(raw)
        except Exception:
            pass
    return _fallback_parse(raw)


def attachment_bytes(raw: bytes, index: int):
    """(attachment, bytes) of the original's attachment ``index`` (webmail.mime when present)."""
    try:
        from webmail import mime
        return mime.attachment_bytes(raw, index)
    except ImportError:
        pass
    parts = _fallback_attachments(email.message_from_bytes(raw, policy=email.policy.default))
    att, part = parts[index]
    return att, part.get_payload(decode=True) or b""


@dataclass
class _Att:
    index: int
    filename: str
    content_type: str
    size: int


@dataclass
class _Parsed:
    subject: str = ""
    from_: list = field(default_factory=list)
    to: list = field(default_factory=list)
    cc: list = field(default_factory=list)
    reply_to: list = field(default_factory=list)
    date: dt.datetime | None = None
    message_id: str = ""
    references: list = field(default_factory=list)
    text: str = ""
    html: str | None = None
    attachments: list = field(default_factory=list)


def _addrs(msg, name: str) -> list[tuple[str, str]]:
    try:
        h = msg.get(name)
        return [(a.display_name, a.addr_spec) for a in h.addresses] if h is not None else []
    except Exception:
        return []


def _fallback_attachments(msg, depth: int = 0, out=None):
    out = [] if out is None else out
    for part in msg.walk():
        if part.is_multipart() or len(out) >= 100:
            continue
        try:
            filename, disp = part.get_filename(), part.get_content_disposition()
        except Exception:
            filename, disp = None, None
        if disp == "attachment" or filename:
            try:
                size = len(part.get_payload(decode=True) or b"")
            except Exception:
                size = 0
            out.append((_Att(len(out), filename or "attachment", part.get_content_type(), size), part))
    return out


def _fallback_parse(raw: bytes) -> _Parsed:
    p = _Parsed()
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except Exception:
        p.text = raw.decode("utf-8", "replace")
        return p
    try:
        p.subject = str(msg.get("Subject", ""))
    except Exception:
        p.subject = ""
    p.from_, p.to, p.cc, p.reply_to = (_addrs(msg, n) for n in ("From", "To", "Cc", "Reply-To"))
    try:
        p.date = msg["Date"].datetime if msg.get("Date") is not None else None
    except Exception:
        p.date = None
    try:
        p.message_id = (message_ids(msg.get("Message-ID")) or [""])[0]
    except Exception:
        p.message_id = ""
    try:
        body = msg.get_body(("plain", "html"))
    except Exception:
        body = None
    if body is not None:
        payload = body.get_payload(decode=True) or b""
        charset = body.get_content_charset() or "utf-8"
        try:
            text = payload.decode(charset, "replace")
        except LookupError:
            text = payload.decode("utf-8", "replace")
        if body.get_content_type() == "text/html":
            from gateway.continuity.filing import _strip_html
            text = _strip_html(text)
        p.text = text
    p.attachments = [a for a, _part in _fallback_attachments(msg)]
    return p


def quote(parsed, *, forward: bool) -> str:
    """The original's text quoted for a reply (``> `` lines) or an inline forward."""
    text = (getattr(parsed, "text", "") or "")[:MAX_QUOTE].replace("\r\n", "\n")
    sender = ", ".join(_fmt(a) for a in (getattr(parsed, "from_", None) or []))
    when = getattr(parsed, "date", None)
    when_s = when.strftime("%a, %d %b %Y %H:%M %z").strip() if when else ""
    subject = clean_subject(getattr(parsed, "subject", ""))
    if forward:
        to = ", ".join(_fmt(a) for a in (getattr(parsed, "to", None) or []))
        return ("\n\n---------- Forwarded message ----------\n"
                f"From: {sender}\nDate: {when_s}\nSubject: {subject}\nTo: {to}\n\n{text}")
    lines = "\n".join("> " + line if line else ">" for line in text.split("\n"))
    return f"\n\nOn {when_s or 'an earlier date'}, {sender or 'someone'} wrote:\n{lines}\n"


def _fmt(a) -> str:
    try:
        name, addr = a
    except (TypeError, ValueError):
        return str(a)
    name = clean_subject(name or "")
    return f"{name} <{addr}>" if name else str(addr)


def format_list(addrs) -> str:
    """[(name, addr)] → text for a To/Cc field (names quoted; control characters removed)."""
    out = []
    for a in addrs or []:
        try:
            name, addr = a
        except (TypeError, ValueError):
            continue
        addr, name = clean_subject(addr or ""), clean_subject(name or "").replace('"', "'")
        if addr:
            out.append(f'"{name}" <{addr}>' if name else addr)
    return ", ".join(out)
