"""Full-text search text for the PostgreSQL mailboxes, made in Python so that a query finds on
PostgreSQL what it finds in SQLite's FTS5 table (tokenizer ``unicode61 remove_diacritics 2``).

Pure functions, no I/O. Words are runs of Unicode letters, digits and private-use characters
(FTS5's default token categories ``L* N* Co``), lower-cased, with the diacritics of Latin
letters removed ("Café" → "cafe"); everything else separates words, so an address
"bob@example.com" is the words bob, example, com on both backends (PostgreSQL's own parser would
keep it whole, and its 'english' config would stem). ``lexemes`` gives the folded words of a
message for ``array_to_tsvector``; ``tsquery`` turns a user's query into a tsquery text (every
word must match, prefix match on the last: spool.mailbox._fts_query's rules); ``snippet`` and
``highlight`` mark matches as FTS5's snippet() and highlight() do.

One known difference: FTS5's tables date from Unicode 6.1, so a symbol assigned since (most
emoji) is a word to FTS5 and a separator here; an emoji is not searchable on PostgreSQL.

Limits: a word longer than MAX_WORD characters is not indexed, and at most MAX_LEXEME_BYTES of
distinct words per message (PostgreSQL's tsvector holds at most 1 MB).
"""
from __future__ import annotations

import re
import unicodedata

MAX_WORD = 200
MAX_LEXEME_BYTES = 512 * 1024
_QUERY_WORD = re.compile(r"\w+", re.UNICODE)   # as spool.mailbox._WORD
#: The combining marks FTS5 counts as diacritics (part of a word, removed from it): its
#: sqlite3Fts5UnicodeIsdiacritic() masks over U+0300..U+0331.
_DIACRITICS = "".join(chr(c) for c in range(0x300, 0x332)
                      if (0x08029FDF if c < 0x320 else 0x000361F8) >> ((c - 0x300) % 32) & 1)
#: A word: letters and digits (str.isalnum: Unicode L* and N*, as \w without "_"), private-use
#: characters (Co) and those diacritics.
_TOKEN = re.compile(r"(?:[^\W_]|[\ue000-\uf8ff\U000f0000-\U000ffffd\U00100000-\U0010fffd"
                    + _DIACRITICS + "])+")
_DROP = str.maketrans("", "", _DIACRITICS)


def _fold_char(c: str) -> str:
    d = unicodedata.normalize("NFD", c)
    if len(d) > 1 and d[0].isascii() and d[0].isalpha() and all(unicodedata.combining(x) for x in d[1:]):
        return d[0]
    return c


def fold(word: str) -> str:
    """``word`` lower-cased, Latin letters without their diacritics (FTS5's remove_diacritics)."""
    low = word.lower()
    return low if low.isascii() else "".join(_fold_char(c) for c in low.translate(_DROP))


def tokens(text: str) -> list[tuple[int, int, str]]:
    """The words of ``text``: [(start, end, folded word)], in order."""
    return [(m.start(), m.end(), fold(m.group())) for m in _TOKEN.finditer(text)]


def lexemes(*texts: str) -> list[str]:
    """The distinct folded words of ``texts`` (for ``array_to_tsvector``), within the limits."""
    seen: dict[str, None] = {}
    size = 0
    for text in texts:
        for m in _TOKEN.finditer(text or ""):
            w = fold(m.group())
            if w in seen or len(w) > MAX_WORD:
                continue
            size += len(w.encode()) + 8
            if size > MAX_LEXEME_BYTES:
                return list(seen)
            seen[w] = None
    return list(seen)


def query_terms(query: str) -> list[tuple[str, bool]] | None:
    """[(folded word, prefix)] of ``query`` (at most 20 query words; prefix on the last), or
    None if it has no word."""
    words = _QUERY_WORD.findall(query)[:20]
    terms: list[tuple[str, bool]] = []
    for n, w in enumerate(words):
        parts = [t for _s, _e, t in tokens(w)]
        for k, t in enumerate(parts):
            terms.append((t, n == len(words) - 1 and k == len(parts) - 1))
    return terms or None


def tsquery(terms: list[tuple[str, bool]]) -> str:
    """``terms`` as tsquery text: every word ANDed, ``:*`` on a prefix word; for ``::tsquery``
    (no parser, no stemming). The words hold no quote or backslash (tokens are letters and
    digits), so quoting cannot be escaped out of."""
    return " & ".join(f"'{t}'" + (":*" if p else "") for t, p in terms)


def _matches(word: str, terms: list[tuple[str, bool]]) -> bool:
    return any(word.startswith(t) if p else word == t for t, p in terms)


def highlight(text: str, terms: list[tuple[str, bool]], start: str, end: str) -> str:
    """``text`` with every matching word between ``start`` and ``end`` (FTS5 highlight())."""
    out, pos = [], 0
    for s, e, w in tokens(text):
        if _matches(w, terms):
            out += [text[pos:s], start, text[s:e], end]
            pos = e
    out.append(text[pos:])
    return "".join(out)


def snippet(text: str, terms: list[tuple[str, bool]], start: str, end: str,
            ellipsis: str = "…", size: int = 16) -> str:
    """``size`` words of ``text`` around the most matches (the first such window, its hits
    centred, as FTS5 snippet() chooses; the start of ``text`` without a match), matches marked,
    ``ellipsis`` where text was cut."""
    toks = tokens(text)
    if not toks:
        return ""
    hits = [_matches(w, terms) for _s, _e, w in toks]
    best, best_n = 0, 0
    for h in (i for i, hit in enumerate(hits) if hit):   # as FTS5: the hits of a window centred
        last = max(i for i in range(h, min(h + size, len(toks))) if hits[i])
        adj = max(0, min(h - (size - (last - h)) // 2, len(toks) - size))
        n = sum(hits[adj:adj + size])
        if n > best_n:
            best, best_n = adj, n
    window = toks[best:best + size]
    out, pos = [], window[0][0]
    for (s, e, _w), hit in zip(window, hits[best:best + size]):
        if hit:
            out += [text[pos:s], start, text[s:e], end]
            pos = e
    out.append(text[pos:window[-1][1]])
    return (ellipsis if best > 0 else "") + "".join(out) + \
        (ellipsis if best + size < len(toks) else "")


__all__ = ["fold", "tokens", "lexemes", "query_terms", "tsquery", "highlight", "snippet"]
