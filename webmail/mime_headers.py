"""Decoding of a message's header fields for display (part of webmail.mime): RFC 2047 encoded
words (RFC 2047 §6.2: whitespace between adjacent encoded words is dropped), address headers
through policy.default's parser, and Date (RFC 5322 §3.3). Nothing here raises on bad input:
a header that does not decode gives its best-effort text."""
from __future__ import annotations

import base64
import datetime as dt
import email.policy
import email.utils
import quopri
import re
from email.message import Message

from webmail.charsets import decode_bytes, unsurrogate

MAX_ADDRESS_HEADER = 8192           # characters of an address header parsed (the parser is slow)

_EWORD = re.compile(r"=\?([^?\s]{1,60})\?([qQbB])\?([^?\s]*)\?=")
_FOLD = re.compile(r"\r?\n(?=[ \t])")


def _raw_header(msg: Message, name: str) -> str | None:
    try:
        for k, v in msg.raw_items():
            if k.lower() == name.lower():
                return str(v)
    except Exception:
        pass
    return None


def header_text(msg: Message, name: str) -> str:
    """An unstructured header's decoded text (RFC 2047 words through webmail.charsets; raw
    8-bit bytes as UTF-8, else windows-1252), unfolded; "" when absent."""
    raw = _raw_header(msg, name)
    if raw is None:
        return ""
    return decode_words(raw)


def decode_words(raw: str) -> str:
    """RFC 2047 decoding of ``raw`` that never raises: whitespace between adjacent encoded words
    is dropped (section 6.2), each word decoded with its charset, errors replaced."""
    raw = _FOLD.sub("", raw)
    out: list[str] = []
    pos, last_word_end = 0, None
    for m in _EWORD.finditer(raw):
        between = raw[pos:m.start()]
        if not (last_word_end is not None and between.strip() == ""):
            out.append(unsurrogate(between))
        charset, enc, text = m.group(1), m.group(2).lower(), m.group(3)
        try:
            if enc == "b":
                data = base64.b64decode(text + "=" * (-len(text) % 4), validate=False)
            else:
                data = quopri.decodestring(text.replace("_", " ").encode("ascii", "replace"),
                                           header=False)
        except Exception:
            data = text.encode("ascii", "replace")
        out.append(decode_bytes(data, charset))
        pos, last_word_end = m.end(), m.end()
    out.append(unsurrogate(raw[pos:]))
    return "".join(out).strip()


def addresses(msg: Message, name: str) -> list[tuple[str, str]]:
    """[(display name, addr-spec)] of an address header (policy.default's parser, which keeps
    ``"ceo@corp" <x@evil>`` as one address); a header that does not parse gives [(text, "")]."""
    raw = _raw_header(msg, name)
    if raw is None:
        return []
    try:
        h = email.policy.default.header_factory(name, raw[:MAX_ADDRESS_HEADER])
        found = [(unsurrogate(a.display_name or ""), unsurrogate(a.addr_spec or ""))
                 for a in h.addresses]
        if h.defects and raw[:MAX_ADDRESS_HEADER].count("@") > sum(a.count("@") for _, a in found):
            found = []                    # "a@b.example <c@d.example>": an address was lost
        if "\ufffd" in "".join(n for n, _ in found):      # a charset the parser did not know
            found = [(decode_words(_display_part(raw, a)) or n, a) for n, a in found]
        if found or not raw.strip():
            return [(n, "" if a == "<>" else a) for n, a in found][:200]
    except Exception:
        pass
    return [(decode_words(raw)[:2000], "")]


def _display_part(raw: str, addr: str) -> str:
    i = raw.find(addr)
    head = raw[:i] if i > 0 else ""
    return head.rsplit(",", 1)[-1].strip().strip("<").strip().strip('"')


def _date(msg: Message, text: str) -> dt.datetime | None:
    if not text:
        return None
    try:
        d = email.utils.parsedate_to_datetime(text)
    except Exception:
        return None
    if d is not None and d.tzinfo is None:
        d = d.replace(tzinfo=dt.timezone.utc)
    return d


__all__ = ["MAX_ADDRESS_HEADER", "addresses", "decode_words", "header_text"]
