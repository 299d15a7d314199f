"""Sanitising a message's HTML with nh3 (Ammonia), the first layer under the sandbox.

The second layer is what serves it: webmail.mail_views sends the result from its own URL under
security.BODY_CSP (``sandbox`` without ``allow-scripts``, ``default-src 'none'``, ``img-src
data:``), framed by a sandboxed iframe. Either layer alone stops script; both stop remote fetches.

What survives (WEBMAIL-NOTES.md, "nh3 traps"):
- tags: nh3's default set plus ``font``; ``script style template noscript svg math title object
  embed iframe frame(set) noembed noframes xmp plaintext textarea select option applet audio
  video picture source button head`` are dropped *with their content*; forms, inputs, meta,
  link, base are dropped (their text kept);
- ``img src``: only ``data:image/(png|gif|jpeg|webp);base64`` and ``cid:`` (rewritten to such a
  data: URI from the message's own parts, at most MAX_INLINE_BYTES in total); remote sources
  (http, https, protocol-relative) are dropped and counted in ``remote_blocked``, or, with
  ``remote=True``, kept when https; no srcset;
- ``a href``: only http, https, mailto; every link gets ``target=_blank rel="noopener
  noreferrer"``; relative URLs are dropped (they would point at the webmail itself);
- ``style``: declarations of STYLE_PROPERTIES only, and none whose value contains ``url(``,
  ``image``, ``var(``, ``expression``, ``@``, a backslash (CSS escapes), a comment or ``attr(``.
"""
from __future__ import annotations

import base64
import copy
import html as _html
import re
from dataclasses import dataclass
from urllib.parse import unquote

import nh3

MAX_INLINE_BYTES = 8 * 1024 * 1024     # characters of data: URIs kept or made from cid: parts
MAX_HTML_CHARS = 2_000_000             # HTML given to nh3 (the rest is cut)
RASTER = ("image/png", "image/gif", "image/jpeg", "image/webp")

TAGS = (set(nh3.ALLOWED_TAGS) | {"font"}) - {"area", "map"}
DROP_WITH_CONTENT = {"script", "style", "template", "noscript", "svg", "math", "title", "object",
                     "embed", "iframe", "frame", "frameset", "noembed", "noframes", "xmp",
                     "plaintext", "textarea", "select", "option", "applet", "audio", "video",
                     "picture", "source", "button", "head"}
GENERIC = {"style", "dir", "lang", "title", "align", "valign", "width", "height", "bgcolor",
           "border", "cellpadding", "cellspacing", "nowrap"}
ATTRIBUTES: dict[str, set[str]] = copy.deepcopy(nh3.ALLOWED_ATTRIBUTES)
ATTRIBUTES.setdefault("a", set()).update({"href", "hreflang", "name"})
ATTRIBUTES.setdefault("img", set()).update({"src", "alt", "width", "height", "align", "border",
                                            "hspace", "vspace"})
ATTRIBUTES["font"] = {"color", "face", "size"}
ATTRIBUTES["*"] = GENERIC
ATTRIBUTES.pop("area", None)

#: URL-valued attributes other than src/href/cite: dropped whatever they hold. nh3 runs with
#: url_relative="pass_through" so that protocol-relative image sources ("//host/x.png") reach the
#: filter and are counted as remote; the filter then decides every URL attribute itself.
URL_ATTRIBUTES = frozenset({"longdesc", "background", "poster", "action", "formaction",
                            "usemap", "data", "codebase", "profile", "manifest", "icon", "srcset"})

STYLE_PROPERTIES = frozenset({
    "color", "background-color", "background", "font", "font-family", "font-size", "font-style",
    "font-weight", "font-variant", "text-align", "text-decoration", "text-transform",
    "text-indent", "letter-spacing", "word-spacing", "line-height", "white-space", "word-wrap",
    "word-break", "overflow-wrap", "vertical-align", "direction", "width", "height", "min-width",
    "max-width", "min-height", "max-height", "display", "float", "clear", "list-style-type",
    "list-style-position", "table-layout", "border-collapse", "border-spacing", "empty-cells",
    "caption-side", "visibility", "opacity", "overflow", "text-overflow", "box-sizing"})
STYLE_PREFIXES = ("margin", "padding", "border")
STYLE_FORBIDDEN = ("url(", "image", "var(", "expression", "@", "\\", "/*", "*/", "javascript",
                   "behavior", "binding", "attr(", "env(", "src(", "<", ">", "&#")

_DATA_IMAGE = re.compile(r"data:image/(png|gif|jpeg|jpg|webp);base64,([a-z0-9+/=\s]+)", re.I)


@dataclass(frozen=True)
class CleanBody:
    """The sanitised HTML fragment; ``remote_blocked``: remote images dropped; ``inlined``: cid:
    images turned into data: URIs; ``dropped_inline``: cid:/data: images refused (unknown
    Content-ID, not a raster type, over MAX_INLINE_BYTES)."""

    html: str
    remote_blocked: int = 0
    inlined: int = 0
    dropped_inline: int = 0


class _Filter:
    def __init__(self, images: dict[str, tuple[str, bytes]], remote: bool):
        self.images = images
        self.folded = {k.casefold(): v for k, v in images.items()}
        self.remote = remote
        self.budget = MAX_INLINE_BYTES
        self.remote_blocked = self.inlined = self.dropped = 0

    def __call__(self, tag: str, attr: str, value: str) -> str | None:
        if attr == "src":
            return self.src(value) if tag == "img" else None
        if attr in ("href", "cite"):
            v = value.strip()
            low = v.lower()
            ok = ("http://", "https://") + (("mailto:",) if attr == "href" else ())
            return v if low.startswith(ok) else None
        if attr == "style":
            return style(value)
        if attr in URL_ATTRIBUTES:     # any other URL-valued attribute: never kept
            return None
        return value

    def src(self, value: str) -> str | None:
        v = value.strip()
        low = v.lower()
        if low.startswith("cid:"):
            return self.cid(v[4:])
        if low.startswith("data:"):
            m = _DATA_IMAGE.fullmatch(v)
            if m is None or not self._spend(len(v)):
                self.dropped += 1
                return None
            return "data:image/%s;base64,%s" % (m.group(1).lower(), re.sub(r"\s+", "", m.group(2)))
        if low.startswith(("http://", "https://", "//")):
            if self.remote and low.startswith("https://"):
                return "https://" + v[8:]
            self.remote_blocked += 1
            return None
        return None

    def cid(self, ref: str) -> str | None:
        key = unquote(ref).strip().strip("<>").strip()
        found = self.images.get(key) or self.folded.get(key.casefold())
        if found is None or found[0] not in RASTER:
            self.dropped += 1
            return None
        ctype, data = found
        uri = f"data:{ctype};base64,{base64.b64encode(data).decode('ascii')}"
        if not self._spend(len(uri)):
            self.dropped += 1
            return None
        self.inlined += 1
        return uri

    def _spend(self, n: int) -> bool:
        if n > self.budget:
            return False
        self.budget -= n
        return True


def style(value: str) -> str | None:
    """The declarations of a ``style`` attribute that are safe to keep (see module doc), or None."""
    kept = []
    for decl in value.split(";"):
        name, sep, val = decl.partition(":")
        name, val = name.strip().lower(), val.strip()
        if not sep or not val:
            continue
        if name not in STYLE_PROPERTIES and not name.startswith(STYLE_PREFIXES):
            continue
        low = val.lower()
        if any(bad in low for bad in STYLE_FORBIDDEN) or any(ord(c) < 32 for c in val):
            continue
        kept.append(f"{name}:{val}")
    return "; ".join(kept) or None


def clean(html: str, images: dict[str, tuple[str, bytes]] | None = None,
          remote: bool = False) -> CleanBody:
    """Sanitise ``html`` (a decoded text/html part); ``images``: Content-ID → (type, bytes) for
    cid: inlining (mime.ParsedMessage.images); ``remote``: keep https images."""
    f = _Filter(images or {}, remote)
    out = nh3.clean(
        html[:MAX_HTML_CHARS], tags=TAGS, clean_content_tags=DROP_WITH_CONTENT,
        attributes=ATTRIBUTES, attribute_filter=f, strip_comments=True,
        link_rel="noopener noreferrer", set_tag_attribute_values={"a": {"target": "_blank"}},
        url_schemes={"http", "https", "mailto", "cid", "data"}, url_relative="pass_through")
    return CleanBody(out, f.remote_blocked, f.inlined, f.dropped)


_DOC_STYLE = ("body{margin:8px;font:15px/1.45 system-ui,sans-serif;color:#1b1f23;"
              "overflow-wrap:anywhere}img{max-width:100%;height:auto}table{max-width:100%}"
              "pre{white-space:pre-wrap}")


def document(fragment: str) -> str:
    """A complete HTML document around a sanitised ``fragment`` (for the body URL)."""
    return ("<!doctype html><html><head><meta charset=\"utf-8\">"
            "<meta name=\"referrer\" content=\"no-referrer\">"
            f"<style>{_DOC_STYLE}</style></head><body>{fragment}</body></html>")


def text_document(text: str) -> str:
    """A plain-text body as an HTML document (escaped, in <pre>), for the body URL of a message
    without an HTML part."""
    return document(f"<pre>{_html.escape(text)}</pre>")


__all__ = ["clean", "document", "text_document", "style", "CleanBody", "MAX_INLINE_BYTES",
           "MAX_HTML_CHARS"]
