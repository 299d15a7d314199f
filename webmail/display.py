"""Making mail-supplied strings safe to show and to send back in headers: header text without
control or bidi characters, plain text with links made clickable (escape first, then linkify),
attachment names for Content-Disposition (RFC 6266 with an RFC 8187 ``filename*``), validated
content types, FTS5 snippets turned into (text, highlighted) runs.

Nothing here returns markup except ``linkify`` (a markupsafe.Markup built from escaped text);
everything else returns plain strings that Jinja2 autoescapes.
"""
from __future__ import annotations

import datetime as dt
import re
import unicodedata
from urllib.parse import quote, urlsplit

from markupsafe import Markup, escape

#: Bidirectional formatting characters (embeddings, overrides, isolates, marks): in a header or a
#: file name they reorder what the user reads ("invoice_exe.pdf" from "invoice_\u202efdp.exe").
BIDI = dict.fromkeys(map(ord, "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
                              "\u200e\u200f\u061c"), None)
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff\ufff9-\ufffb]")
_SPACES = re.compile(r"\s+")


def clean_line(s: str | None, limit: int = 500) -> str:
    """One line of displayable text: control characters and line breaks → spaces, bidi controls
    removed, whitespace collapsed, at most ``limit`` characters (an ellipsis marks the cut)."""
    if not s:
        return ""
    s = _CONTROLS.sub(" ", str(s).translate(BIDI))
    s = _SPACES.sub(" ", s).strip()
    return s if len(s) <= limit else s[:limit - 1].rstrip() + "…"


def looks_like_address(name: str) -> bool:
    """A display name that could be taken for an address (``"ceo@corp.example"``)."""
    return "@" in name or "\uff20" in name or "\ufe6b" in name


def person(name: str, addr: str, limit: int = 120) -> dict:
    """{name, addr, show_addr} for a template: ``show_addr`` when the name is empty, looks like
    an address, or differs from it (the message view always shows the real addr-spec)."""
    name, addr = clean_line(name, limit), clean_line(addr, 320)
    return {"name": name or addr, "addr": addr,
            "suspicious": bool(name) and looks_like_address(name) and name.casefold() != addr.casefold()}


_SIMPLE_FROM = re.compile(r'\s*(?:"?([^"<>\\=?,;:@]*)"?\s*<([^<>\s"@]+@[^<>\s"@]+)>|([^<>\s"@,;]+@[^<>\s"@,;]+))\s*')


def list_sender(from_header: str, envelope_from: str = "") -> str:
    """The sender column of a folder list from the stored From header text: the display name,
    with the addr-spec beside it when the name looks like an address."""
    import email.policy
    text = from_header or envelope_from
    m = _SIMPLE_FROM.fullmatch(text)                # the common shapes, without the slow parser
    if m is not None:
        name, spec = clean_line(m.group(1) or "", 60), clean_line(m.group(2) or m.group(3), 120)
        if not name:
            return spec
        return f"{name} <{spec}>" if looks_like_address(name) and name.casefold() != spec.casefold() else name
    try:
        h = email.policy.default.header_factory("From", text[:2000])
        addrs = list(h.addresses)
        if h.defects and text.count("@") > sum(a.addr_spec.count("@") for a in addrs):
            addrs = []                    # "a@b.example <c@d.example>": show it as written
    except Exception:
        addrs = []
    if not addrs:
        return clean_line(text, 80) or "(no sender)"
    a = addrs[0]
    name, spec = clean_line(a.display_name, 60), clean_line(a.addr_spec, 120)
    if not name:
        return spec or "(no sender)"
    if looks_like_address(name) and name.casefold() != spec.casefold():
        return f"{name} <{spec}>"
    return name


# -- plain text --------------------------------------------------------------------------
_LINK = re.compile(r"\bhttps?://[^\s<>\"'`\x00-\x1f\u202a-\u202e\u2066-\u2069]+", re.I)
_TRAIL = ".,;:!?)]}*"


def linkify(text: str) -> Markup:
    """``text`` HTML-escaped, with http/https URLs as links (``rel="noopener noreferrer"
    target="_blank"``). The text is escaped first; URLs are then found in the escaped text, so
    they can never contain a quote or an angle bracket (``<http://x"onmouseover=…>`` links only
    ``http://x``)."""
    escaped = str(escape(text))
    out, pos = [], 0
    for m in _LINK.finditer(escaped):
        url = m.group(0)
        cut = _trim(url)
        url, end = url[:cut], m.start() + cut
        if not _valid_http(url):
            continue
        out.append(escaped[pos:m.start()])
        out.append(f'<a href="{url}" rel="noopener noreferrer" target="_blank">{url}</a>')
        pos = end
    out.append(escaped[pos:])
    return Markup("".join(out))


def _trim(url: str) -> int:
    # entities the escaper made (&#34; &#39; &lt; &gt;) end a URL; &amp; is part of it
    for ent in ("&#34;", "&#39;", "&lt;", "&gt;", "&quot;"):
        i = url.find(ent)
        if i >= 0:
            url = url[:i]
    end = len(url)
    while end and url[end - 1] in _TRAIL:
        if url[end - 1] == ")" and url[:end].count("(") >= url[:end].count(")"):
            break
        end -= 1
    if url[:end].endswith("&amp"):
        end -= 4
    return end


def _valid_http(url: str) -> bool:
    try:
        u = urlsplit(url.replace("&amp;", "&"))
        return u.scheme.lower() in ("http", "https") and bool(u.hostname)
    except ValueError:
        return False


# -- attachments ---------------------------------------------------------------------------
_TYPE = re.compile(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}")
#: Types a browser could render as a document or run: always downloaded as octet-stream.
_ACTIVE = re.compile(r"html|xml|svg|javascript|ecmascript|json|xsl|x-sh|vnd\.wap|mathml|rdf|"
                     r"multipart|message/|text/css|text/calendar", re.I)
MAX_FILENAME = 150


def safe_content_type(ctype: str) -> str:
    """A Content-Type to send for a download: the declared type when it is a plain
    ``type/subtype`` token and not active content, else ``application/octet-stream``."""
    c = (ctype or "").strip().lower()
    if not _TYPE.fullmatch(c) or _ACTIVE.search(c):
        return "application/octet-stream"
    return c


def safe_filename(name: str, index: int = 0) -> str:
    """A file name without path, control or bidi characters, leading dots or Windows-reserved
    characters, at most MAX_FILENAME characters (the extension kept); never empty."""
    n = unicodedata.normalize("NFC", name or "").translate(BIDI)
    n = re.split(r"[\\/]", n)[-1]
    n = _CONTROLS.sub("", n)
    n = re.sub(r'[<>:"|?*]', "_", n)
    n = _SPACES.sub(" ", n).strip().lstrip(".").strip()
    if len(n) > MAX_FILENAME:
        stem, dot, ext = n.rpartition(".")
        ext = ext if dot and 0 < len(ext) <= 10 else ""
        n = n[:MAX_FILENAME - len(ext) - 1].rstrip() + ("." + ext if ext else "")
    return n or f"attachment-{index + 1}"


def ascii_filename(name: str) -> str:
    """The ASCII fallback of ``name`` for ``filename="…"`` (RFC 6266 section 4.3)."""
    a = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode("ascii")
    a = re.sub(r"[^A-Za-z0-9._ ()+-]", "_", a).strip(" .") or "attachment"
    return a[:MAX_FILENAME]


def content_disposition(name: str) -> str:
    """``attachment; filename="ascii"; filename*=UTF-8''pct-encoded`` (RFC 6266, RFC 8187)."""
    return f"attachment; filename=\"{ascii_filename(name)}\"; filename*=UTF-8''{quote(name, safe='')}"


def human_size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.0f} KB"
    return f"{n / 1024 / 1024:.1f} MB"


# -- search snippets -----------------------------------------------------------------------
def marked_runs(s: str, start: str, end: str, limit: int = 400) -> list[tuple[str, bool]]:
    """Split an FTS5 ``snippet()``/``highlight()`` result (matches between the ``start`` and
    ``end`` marker characters) into [(text, is_match)] runs of cleaned text, for a template that
    escapes each run and wraps matches in <mark>."""
    runs: list[tuple[str, bool]] = []
    total = 0
    for i, chunk in enumerate(re.split(f"{re.escape(start)}|{re.escape(end)}", s or "")):
        text = clean_line(chunk, 10_000) if chunk.strip() else (" " if chunk else "")
        if chunk[:1].isspace() and text != " ":
            text = " " + text
        if chunk[-1:].isspace() and text != " ":
            text = text + " "
        if not text:
            continue
        if total + len(text) > limit:
            text = text[:max(0, limit - total)] + "…"
        runs.append((text, i % 2 == 1))
        total += len(text)
        if total >= limit:
            break
    return runs


def when(d: dt.datetime | None, fallback_ts: float | None = None) -> str:
    """A date for lists and headers (UTC): the message's Date, else the filing time."""
    if d is None and fallback_ts:
        d = dt.datetime.fromtimestamp(fallback_ts, dt.timezone.utc)
    if d is None:
        return ""
    try:
        return d.astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M")
    except (ValueError, OverflowError, OSError):
        return ""


__all__ = ["clean_line", "looks_like_address", "person", "list_sender", "linkify",
           "safe_content_type", "safe_filename", "ascii_filename", "content_disposition",
           "human_size", "marked_runs", "when", "BIDI"]
