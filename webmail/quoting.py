"""The original of a reply or forward, parsed for quoting: the reader's ``webmail.mime.parse``
when it is there (the agreed interface: subject, from_, to, cc, reply_to, date, message_id,
references, text, html, attachments), else a minimal fallback with the same attribute names;
the quoted text of a reply (``> `` lines) or an inline forward; address lists for the form.
Never raises on broken mail."""
from __future__ import annotations

import datetime as dt
import email
import email.policy
from dataclasses import dataclass, field

from webmail.html_text import html_to_text
from webmail.thread_headers import CONTROL, clean_subject, clean_text, message_ids

MAX_QUOTE = 200_000                    # characters of the original quoted in a reply


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
            text = html_to_text(text)
        p.text = text
    p.attachments = [a for a, _part in _fallback_attachments(msg)]
    return p


def quote(parsed, *, forward: bool) -> str:
    """The original's text quoted for a reply (``> `` lines) or an inline forward."""
    text = clean_text(getattr(parsed, "text", "") or "")[:MAX_QUOTE].replace("\r\n", "\n")
    text = "".join(c if c in "\n\t" or not CONTROL.match(c) else " " for c in text)
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
        return clean_subject(str(a))
    name, addr = clean_subject(name or ""), clean_subject(addr or "")
    return f"{name} <{addr}>" if name else addr


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
