"""Parsing a stored message for display, safely, whatever it contains (every message at an MX is
potentially hostile; the corpus has broken and malicious MIME).

``parse(raw) -> ParsedMessage``: decoded headers (RFC 2047 encoded words, RFC 2231 parameters),
the best plain text, the HTML part (unsanitised: webmail.sanitize does that), the attachments
(a depth-limited walk that also looks inside attached message/rfc822), and the cid: images.
``attachment_bytes(raw, index) -> (Attachment, bytes)``: one attachment's decoded bytes.

Never raises on the content of a message. Fallbacks, in order: the first inline text/plain and
text/html parts; else the first text part anywhere (an HTML part marked attachment, a
multipart without boundary); else the raw source (``fallback = "raw"``). Unknown charsets go
through webmail.charsets. Limits: MAX_DEPTH of nesting, MAX_PARTS parts, MAX_PART_BYTES decoded
per part and MAX_TOTAL_BYTES over all parts; what is over a limit is named in ``problems``.
Display cleaning (control and bidi characters) is webmail.display's job, not this module's.
"""
from __future__ import annotations

import datetime as dt
import email
import email.message
import email.policy
import email.utils
import re
from dataclasses import dataclass, field
from email.message import Message
from email.parser import BytesHeaderParser

from webmail.charsets import decode_bytes, unsurrogate
from webmail.html_text import html_to_text
from webmail.mime_headers import (MAX_ADDRESS_HEADER, _date, _raw_header, addresses,  # noqa: F401
                                  decode_words, header_text)

MAX_DEPTH = 10                      # multipart / message nesting levels walked
MAX_PARTS = 300                     # MIME parts walked per message
MAX_PART_BYTES = 40 * 1024 * 1024   # decoded bytes of one part (the SMTP limit is 36 MiB)
MAX_TOTAL_BYTES = 64 * 1024 * 1024  # decoded bytes over all parts
MAX_TEXT_CHARS = 1_000_000          # characters of text or HTML kept for display
MAX_REFERENCES = 50

_MSGID = re.compile(r"<[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-]{1,200}@[A-Za-z0-9!#$%&'*+/=?^_`{|}~.\-\[\]:]{1,200}>")


@dataclass(frozen=True)
class Attachment:
    """One downloadable part. ``index``: position in ParsedMessage.attachments (the URL's n);
    ``filename``: as the sender named it (decoded, not yet made safe; "" if none);
    ``content_type``: the declared type, lower case; ``size``: decoded bytes; ``inline``: had
    ``Content-Disposition: inline``; ``nested``: inside an attached message/rfc822."""

    index: int
    filename: str
    content_type: str
    size: int
    content_id: str = ""
    inline: bool = False
    nested: bool = False


@dataclass
class ParsedMessage:
    """A message as the webmail shows it. Addresses are (display name, addr-spec) pairs;
    ``date`` is None when the Date header is missing or invalid; ``html`` is None without an
    HTML part; ``images`` maps Content-ID (no angle brackets) to (content type, bytes) for
    cid: inlining; ``fallback`` is "", "text" (a text part found only by the fallback walk) or
    "raw" (nothing decodable: ``text`` is the raw source)."""

    subject: str = ""
    from_: list[tuple[str, str]] = field(default_factory=list)
    to: list[tuple[str, str]] = field(default_factory=list)
    cc: list[tuple[str, str]] = field(default_factory=list)
    reply_to: list[tuple[str, str]] = field(default_factory=list)
    sender: list[tuple[str, str]] = field(default_factory=list)
    date: dt.datetime | None = None
    date_raw: str = ""
    message_id: str = ""
    references: list[str] = field(default_factory=list)
    in_reply_to: str = ""
    text: str = ""
    html: str | None = None
    attachments: list[Attachment] = field(default_factory=list)
    images: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    fallback: str = ""
    problems: list[str] = field(default_factory=list)
    truncated: bool = False


@dataclass
class _Leaf:
    part: Message
    nested: bool
    parent: int           # id() of the enclosing multipart (alternatives share one)
    parent_type: str
    attachment: bool


def parse(raw: bytes) -> ParsedMessage:
    """Parse ``raw`` (the stored message bytes). Never raises on message content."""
    out = ParsedMessage()
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
    except (RecursionError, Exception):          # nesting deeper than the parser's stack
        out.problems.append("the MIME structure could not be parsed")
        try:
            msg = BytesHeaderParser(policy=email.policy.default).parsebytes(raw)
            msg.set_payload("")
        except Exception:
            msg = email.message.EmailMessage()
        _headers(msg, out)
        out.text, out.fallback = _raw_text(raw), "raw"
        return out
    _headers(msg, out)
    try:
        leaves = _walk(msg, out.problems)
    except RecursionError:
        out.problems.append("the MIME structure is nested too deeply")
        leaves = []
    _bodies(leaves, out)
    if out.html is None and not out.text.strip():
        _fallback(leaves, raw, out)
    if out.html is not None and not out.text.strip():
        out.text = html_to_text(out.html)
    return out


def attachment_bytes(raw: bytes, index: int) -> tuple[Attachment, bytes] | None:
    """The ``index``-th attachment of ``raw`` (as ParsedMessage.attachments numbers them) and
    its decoded bytes (at most MAX_PART_BYTES), or None if there is no such attachment."""
    try:
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        leaves = _walk(msg, [])
    except (RecursionError, Exception):
        return None
    n = -1
    for leaf in leaves:
        if leaf.attachment:
            n += 1
            if n == index:
                data = _payload(leaf.part)
                return _describe(leaf, n, len(data)), data
    return None


# -- headers -------------------------------------------------------------------------------
def _headers(msg: Message, out: ParsedMessage) -> None:
    out.subject = header_text(msg, "Subject")
    for name, attr in (("From", "from_"), ("To", "to"), ("Cc", "cc"), ("Reply-To", "reply_to"),
                       ("Sender", "sender")):
        setattr(out, attr, addresses(msg, name))
    out.date_raw = header_text(msg, "Date")
    out.date = _date(msg, out.date_raw)
    ids = _MSGID.findall(header_text(msg, "Message-ID"))
    out.message_id = ids[0] if ids else ""
    irt = _MSGID.findall(header_text(msg, "In-Reply-To"))
    out.in_reply_to = irt[0] if irt else ""
    out.references = _MSGID.findall(header_text(msg, "References"))[-MAX_REFERENCES:]


# -- the walk ------------------------------------------------------------------------------
def _walk(msg: Message, problems: list[str]) -> list[_Leaf]:
    """Leaves in document order, depth-first, at most MAX_DEPTH deep and MAX_PARTS parts."""
    leaves: list[_Leaf] = []
    count = 0
    # stack of (part, depth, nested, parent id, parent type); reversed children keep order
    stack: list[tuple[Message, int, bool, int, str]] = [(msg, 0, False, 0, "")]
    while stack:
        part, depth, nested, parent, ptype = stack.pop()
        count += 1
        if count > MAX_PARTS:
            problems.append(f"more than {MAX_PARTS} parts: the rest is not shown")
            break
        ctype = _ctype(part)
        if ctype in ("message/rfc822", "message/global") and part.is_multipart():
            # an attached message: downloadable as a whole, its attachments listed; a message
            # that *is* a message/rfc822 shows the inner message's text as its own
            leaves.append(_Leaf(part, nested, parent, ptype, True))
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                if depth + 1 > MAX_DEPTH:
                    problems.append("an attached message is nested too deeply to list")
                else:
                    stack.append((inner[0], depth + 1, nested or depth > 0, id(part), ctype))
            continue
        if part.is_multipart():
            children = part.get_payload()
            if depth + 1 > MAX_DEPTH:
                problems.append(f"parts nested more than {MAX_DEPTH} deep are not shown")
                continue
            if isinstance(children, list):
                for child in reversed(children):
                    if isinstance(child, Message):
                        stack.append((child, depth + 1, nested, id(part), ctype))
            continue
        leaves.append(_Leaf(part, nested, parent, ptype, _is_attachment(part, ctype, nested)))
    return leaves


def _ctype(part: Message) -> str:
    try:
        return part.get_content_type()
    except Exception:
        return "application/octet-stream"


def _disposition(part: Message) -> str | None:
    try:
        return part.get_content_disposition()
    except Exception:
        return None


def filename_of(part: Message) -> str:
    """The part's file name (RFC 2231 / RFC 2047 decoded, unsanitised), or ""."""
    try:
        name = part.get_filename()
    except Exception:
        name = None
    if name is None:
        try:
            name = part.get_param("name", header="content-type")
            if isinstance(name, tuple):
                name = email.utils.collapse_rfc2231_value(name, errors="replace")
        except Exception:
            name = None
    if not name:
        return ""
    return decode_words(unsurrogate(str(name)))[:1000]


def _is_attachment(part: Message, ctype: str, nested: bool) -> bool:
    disp = _disposition(part)
    if disp == "attachment" or filename_of(part):
        return True
    if nested:
        return False
    if ctype.startswith("multipart/"):        # a multipart without a usable boundary
        return False
    return ctype not in ("text/plain", "text/html")


def _payload(part: Message) -> bytes:
    if part.is_multipart():                  # an attached message: its source
        try:
            inner = part.get_payload()
            if isinstance(inner, list) and inner:
                return inner[0].as_bytes(policy=email.policy.compat32)[:MAX_PART_BYTES]
        except Exception:
            pass
        return b""
    try:
        data = part.get_payload(decode=True)
    except Exception:
        data = None
    if data is None:
        p = part.get_payload()
        data = p.encode("utf-8", "surrogateescape") if isinstance(p, str) else b""
    return data[:MAX_PART_BYTES]


def _text_of(part: Message, data: bytes | None = None) -> str:
    data = _payload(part) if data is None else data
    try:
        charset = part.get_content_charset()
    except Exception:
        charset = None
    return decode_bytes(data, charset)


def _describe(leaf: _Leaf, index: int, size: int) -> Attachment:
    ctype = _ctype(leaf.part)
    cid = _content_id(leaf.part)
    name = filename_of(leaf.part)
    if not name and ctype in ("message/rfc822", "message/global"):
        name = "message.eml"
    return Attachment(index=index, filename=name, content_type=ctype, size=size, content_id=cid,
                      inline=_disposition(leaf.part) == "inline", nested=leaf.nested)


def _content_id(part: Message) -> str:
    raw = _raw_header(part, "Content-ID")
    if not raw:
        return ""
    return raw.strip().strip("<>").strip()[:300]


# -- bodies --------------------------------------------------------------------------------
def _bodies(leaves: list[_Leaf], out: ParsedMessage) -> None:
    total, texts, alt_done = 0, [], set()
    index = -1
    for leaf in leaves:
        ctype = _ctype(leaf.part)
        data = _payload(leaf.part)
        total += len(data)
        if total > MAX_TOTAL_BYTES:
            out.problems.append("the message is larger than the webmail shows")
            break
        if leaf.attachment:
            index += 1
            a = _describe(leaf, index, len(data))
            out.attachments.append(a)
            if a.content_id and ctype.startswith("image/") and not leaf.nested:
                out.images.setdefault(a.content_id, (ctype, data))
            continue
        if leaf.nested:
            continue
        if ctype == "text/html" and out.html is None:
            out.html = _cap(_text_of(leaf.part, data), out)
        elif ctype == "text/plain":
            if leaf.parent_type == "multipart/alternative":
                if leaf.parent in alt_done:     # one plain text per alternative
                    continue
                alt_done.add(leaf.parent)
            texts.append(_text_of(leaf.part, data))
    if texts:
        out.text = _cap("\n\n".join(texts), out)


def _cap(s: str, out: ParsedMessage) -> str:
    if len(s) > MAX_TEXT_CHARS:
        out.truncated = True
        return s[:MAX_TEXT_CHARS]
    return s


def _fallback(leaves: list[_Leaf], raw: bytes, out: ParsedMessage) -> None:
    for leaf in leaves:
        ctype = _ctype(leaf.part)
        if ctype.startswith("text/") or ctype.startswith("multipart/"):
            text = _text_of(leaf.part)
            if not text.strip():
                continue
            out.fallback = "text"
            if ctype == "text/html":
                out.html = _cap(text, out)
            else:
                out.text = _cap(text, out)
            return
    if not leaves or not any(_payload(leaf.part) for leaf in leaves):
        out.text, out.fallback = _raw_text(raw), "raw"
        out.truncated = out.truncated or len(raw) > MAX_TEXT_CHARS


def _raw_text(raw: bytes) -> str:
    return decode_bytes(raw[:MAX_TEXT_CHARS])


__all__ = ["parse", "attachment_bytes", "ParsedMessage", "Attachment", "html_to_text",
           "header_text", "decode_words", "addresses", "MAX_DEPTH", "MAX_PARTS", "MAX_PART_BYTES",
           "MAX_TOTAL_BYTES", "MAX_TEXT_CHARS"]
