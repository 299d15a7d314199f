"""spool.pg.fts: the words the PostgreSQL mailboxes index are exactly the terms SQLite's FTS5
table (unicode61 remove_diacritics 2) makes of the same text, for hand-picked scripts and for
the body text of every corpus message; the tsquery text and the snippet/highlight marks."""
from __future__ import annotations

import sqlite3
import unicodedata

import pytest

from spool.pg import fts
from tests.conftest import corpus_files

SAMPLES = [
    "Budget for Oxford: bob@Example.COM, https://intranet.example.org/a_b?x=1",
    "cafe\u0301 e\u0301te\u0301 Café ÉTÉ naïve Zürich İstanbul Straße ǅemal",
    "हिन्दी भाषा 中文 三四 日本語のテキスト 한국어 العربية ٣ ½ ²",
    "Ωμέγα ÅNGSTRÖM ﬁnance ŁÓDŹ Øresund Tiếng Việt Ğüzel şçö x\ue000y",
    "naïve_test 123abc 1.5e10 don't re-send <b>tight</b> \u0301abc a\u0332b",
]


def fts5_terms(texts: list[str]) -> list[set[str]]:
    c = sqlite3.connect(":memory:")
    c.execute("CREATE VIRTUAL TABLE f USING fts5 (b, tokenize = 'unicode61 remove_diacritics 2')")
    c.execute("CREATE VIRTUAL TABLE v USING fts5vocab(f, 'row')")
    out = []
    for t in texts:
        c.execute("DELETE FROM f")
        c.execute("INSERT INTO f VALUES (?)", (t,))
        out.append({r[0] for r in c.execute("SELECT term FROM v")})
    return out


def test_words_are_fts5s_terms_for_many_scripts():
    for text, terms in zip(SAMPLES, fts5_terms(SAMPLES)):
        assert {w for _s, _e, w in fts.tokens(text)} == terms, text
        assert set(fts.lexemes(text)) == terms


def newer_symbols(terms: set[str]) -> set[str]:
    """FTS5's unicode61 tables date from Unicode 6.1: a symbol assigned since (most emoji, such
    as U+1F37F in two corpus messages) is a word character to it, a separator to spool.pg.fts."""
    return {t for t in terms if any(unicodedata.category(c) == "So" for c in t)}


def test_words_are_fts5s_terms_for_every_corpus_message():
    from gateway.continuity.filing import describe
    files = corpus_files()
    assert len(files) > 100
    texts = []
    for p in files:
        e = describe("Q", p.read_bytes())
        texts.append(" ".join((e.subject, e.from_header, e.to_header, e.cc_header, e.body_text)))
    skipped = 0
    for p, text, terms in zip(files, texts, fts5_terms(texts)):
        ours = {w for _s, _e, w in fts.tokens(text)}
        assert not newer_symbols(ours)
        assert ours == terms - newer_symbols(terms), (p.name, sorted(ours ^ terms)[:10])
        skipped += bool(newer_symbols(terms))
    assert skipped == 2            # the two messages with the emoji, and only them


def test_lexemes_are_distinct_and_bounded():
    assert fts.lexemes("a b a", "B c") == ["a", "b", "c"]
    assert fts.lexemes("x" * (fts.MAX_WORD + 1) + " ok") == ["ok"]
    many = " ".join(f"w{i:07d}" for i in range(100_000))
    assert sum(len(w) + 8 for w in fts.lexemes(many)) <= fts.MAX_LEXEME_BYTES


@pytest.mark.parametrize("query, terms, tsq", [
    ("Budget", [("budget", True)], "'budget':*"),
    ("bob@Example.com", [("bob", False), ("example", False), ("com", True)],
     "'bob' & 'example' & 'com':*"),
    ("Café naïve", [("cafe", False), ("naive", True)], "'cafe' & 'naive':*"),
    ("' OR 1=1; --", [("or", False), ("1", False), ("1", True)], "'or' & '1' & '1':*"),
    ("foo_bar", [("foo", False), ("bar", True)], "'foo' & 'bar':*"),
])
def test_queries_are_words_only(query, terms, tsq):
    assert fts.query_terms(query) == terms and fts.tsquery(terms) == tsq


def test_no_word_is_no_query():
    assert fts.query_terms("!!! ... \"'") is None and fts.query_terms("") is None
    assert len(fts.query_terms(" ".join(f"w{i}" for i in range(50)))) == 20


def test_snippet_and_highlight_mark_matches_as_fts5_does():
    t = fts.query_terms("budget")
    assert fts.highlight("Budget for Oxford", t, "[", "]") == "[Budget] for Oxford"
    assert fts.snippet("Hello world, the budget is <b>tight</b> this year. Budget meetings will be"
                       " held in Oxford on Monday and Tuesday", t, "[", "]") == \
        "Hello world, the [budget] is <b>tight</b> this year. [Budget] meetings will be held in…"
    long = " ".join(["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
                     "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
                     "eighteen", "budget", "nineteen", "twenty"])
    assert fts.snippet(long, t, "[", "]") == \
        "…six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen" \
        " eighteen [budget] nineteen twenty"
    assert fts.snippet("no match here", t, "[", "]") == "no match here"
    assert fts.snippet("", t, "[", "]") == ""
