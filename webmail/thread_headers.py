"""Threading headers for replies and forwards: In-Reply-To and References (RFC 5322 §3.6.4)
and Outlook's Thread-Index / Thread-Topic, computed from the original's raw bytes; subject
prefixes ("Re: ", "Fwd: ") on a subject made safe first (control characters removed).

Message-IDs of the original are taken only when they match ``MSGID``, a strict
id-left@id-right pattern (no obsolete or folded forms); anything else is dropped.

Thread-Index ([MS-OXOMSG] 2.2.1.3, PidTagConversationIndex): base64 of a 22-byte header block
(1 reserved byte 0x01, the 5 high-order bytes of a FILETIME, a 16-byte GUID) followed by one
5-byte child block per reply (1 bit delta code, 31 bits of time difference to the header time,
1 random byte). A reply appends a child block to the original's Thread-Index; an original without
one gets a header block derived from its Message-ID and Date, so every reply to it shares the
same 22-byte prefix. Pure functions, no I/O.
"""
from __future__ import annotations

import base64
import email.header
import email.parser
import email.policy
import email.utils
import hashlib
import re
import secrets
import time
from dataclasses import dataclass

#: Characters refused in every header input (category Cc, line and paragraph separators).
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u0085]")
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]"
_DOT_ATOM = rf"{_ATEXT}+(?:\.{_ATEXT}+)*"
#: A Message-ID we accept from an original (id-left "@" id-right, no obsolete syntax).
MSGID = re.compile(rf"<{_DOT_ATOM}@(?:{_DOT_ATOM}|\[[!-Z^-~]*\])>")
_PREFIX = re.compile(r"^\s*((re|aw|sv|fw|fwd|wg|tr)\s*(\[\d+\])?\s*:\s*)+", re.I)

MAX_SUBJECT = 998 - len("Subject: ")   # characters
MAX_REFERENCES = 20                    # Message-IDs kept in References (the root and newest)
FILETIME_EPOCH = 116444736000000000    # 100 ns intervals from 1601-01-01 to 1970-01-01


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


def clean_text(text) -> str:
    """``text`` as a real Unicode string: the undecodable bytes ``email`` keeps as lone
    surrogates (surrogateescape, from raw 8-bit headers) are decoded as UTF-8 or replaced
    with U+FFFD, so the text can be encoded again (a page, a header)."""
    text = "" if text is None else str(text)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace") \
            .encode("utf-8", "replace").decode("utf-8")


def clean_subject(subject: str) -> str:
    """An original's decoded subject (or name, address) made safe to reuse: real Unicode
    (clean_text), control characters become spaces, runs of spaces are one space, a left-over
    ``=?`` (an encoded-word that could not be decoded) becomes ``= ?``, at most MAX_SUBJECT
    characters."""
    text = " ".join(CONTROL.sub(" ", clean_text(subject)).split()).replace("=?", "= ?")
    return text[:MAX_SUBJECT - 5]


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


#: Charsets mail declares whose superset decodes what senders really wrote (WHATWG Encoding).
_SUPERSET = {"gb2312": "gb18030", "gbk": "gb18030", "ks_c_5601-1987": "cp949", "euc-kr": "cp949",
             "iso-8859-1": "cp1252", "us-ascii": "cp1252", "ascii": "cp1252", "tis-620": "cp874",
             "iso-8859-11": "cp874", "windows-874": "cp874", "shift_jis": "cp932", "x-sjis": "cp932"}


def _decoded(value: str) -> str:
    """An RFC 2047 header value decoded; a bad or unknown charset never raises (each word
    decoded with replacement characters, UTF-8 as the last resort)."""
    try:
        chunks = email.header.decode_header(value)
    except Exception:
        return value
    out = []
    for data, charset in chunks:
        if isinstance(data, str):
            out.append(data)
            continue
        cs = (charset or "us-ascii").lower()
        try:
            out.append(data.decode(_SUPERSET.get(cs, cs), "replace"))
        except LookupError:
            out.append(data.decode("utf-8", "replace"))
    return "".join(out)
