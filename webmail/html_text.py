"""Plain text of an HTML body, the one helper for every reader of HTML mail: the webmail's
plain-text view and reply quoting (webmail.mime, webmail.quoting) and the continuity search
index (gateway.continuity.filing). Standard library only (html.parser): nothing here renders
HTML; the sanitiser for display is webmail.sanitize (nh3).
"""
from __future__ import annotations

import re
from html.parser import HTMLParser

MAX_TEXT_CHARS = 1_000_000   # characters of HTML read at most by default

class _Text(HTMLParser):
    BLOCK = {"p", "div", "br", "tr", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "blockquote",
             "pre", "hr", "dd", "dt"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style", "head", "title", "template"):
            self.skip += 1
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_endtag(self, tag):
        if tag in ("script", "style", "head", "title", "template"):
            self.skip = max(0, self.skip - 1)
        elif tag in self.BLOCK:
            self.out.append("\n")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def html_to_text(html: str, limit: int = MAX_TEXT_CHARS) -> str:
    """Readable plain text of an HTML body: block elements end lines, script/style/head are
    dropped, whitespace collapsed per line; at most ``limit`` characters of ``html`` are read.
    For quoting, the continuity search index and display as text: never rendered as HTML.
    Never raises on malformed markup (what was parsed so far is returned)."""
    p = _Text()
    try:
        p.feed(html[:limit])
        p.close()
    except Exception:
        pass
    text = "".join(p.out)
    lines = [" ".join(line.split()) for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
