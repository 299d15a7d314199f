"""Parsing and sanitising hostile and broken mail (webmail.mime, webmail.sanitize,
webmail.display, webmail.charsets) on every real corpus message and on vectors of our own:
something is always shown, nothing raises, no charset label breaks decoding, attachments are
found inside attached messages, cid: images become data: URIs within a budget, and what nh3
lets through has no script, no remote source and no CSS url()."""
from __future__ import annotations

import base64
import re
import time

import pytest

from tests.conftest import corpus_files
from webmail import charsets, display, mime, sanitize

CORPUS = corpus_files()


def strict_utf8(*strings: str) -> None:
    for s in strings:
        s.encode("utf-8")          # a lone surrogate would make the response fail to encode


@pytest.mark.parametrize("path", CORPUS, ids=[p.name for p in CORPUS])
def test_every_corpus_message_parses_to_something_shown(path):
    raw = path.read_bytes()
    t = time.monotonic()
    p = mime.parse(raw)
    assert time.monotonic() - t < 5.0
    body = re.split(rb"\r?\n\r?\n", raw, maxsplit=1)[-1] if re.search(rb"\r?\n\r?\n", raw) else b""
    assert p.text.strip() or p.html is not None or p.attachments or p.fallback == "raw" or not body.strip()
    strict_utf8(p.subject, p.text, p.html or "", *(n + a for n, a in p.from_ + p.to + p.cc),
                *(a.filename for a in p.attachments))
    for a in p.attachments:                      # each listed attachment can be fetched by its index
        got = mime.attachment_bytes(raw, a.index)
        assert got is not None and got[0].index == a.index and len(got[1]) == a.size
    assert mime.attachment_bytes(raw, len(p.attachments)) is None
    if p.html is not None:
        clean = sanitize.clean(p.html, p.images)
        assert_clean(clean.html)


def assert_clean(html: str, remote: bool = False) -> None:
    low = html.lower()
    assert "<script" not in low and "<style" not in low and "<svg" not in low and "<math" not in low
    assert "javascript:" not in low and "<form" not in low and "<iframe" not in low and "<base" not in low
    assert "<meta" not in low and "<link" not in low and "<object" not in low and "<embed" not in low
    assert not re.search(r"<[^>]+\son[a-z]+\s*=", low), "event handler attribute survived"
    assert not re.search(r"<[^>]*\s(srcset|ping|poster|background|action|formaction|xlink:href)\s*=", low)
    for m in re.finditer(r'\ssrc="([^"]*)"', html):
        ok = m.group(1).startswith(("data:image/png;base64,", "data:image/gif;base64,",
                                    "data:image/jpeg;base64,", "data:image/webp;base64,"))
        assert ok or (remote and m.group(1).startswith("https://")), m.group(1)[:80]
    for m in re.finditer(r'\shref="([^"]*)"', html):
        assert m.group(1).lower().startswith(("http://", "https://", "mailto:")), m.group(1)[:80]
    for m in re.finditer(r'\sstyle="([^"]*)"', html):
        v = m.group(1).lower()
        assert "url(" not in v and "image-set(" not in v and "var(" not in v and "expression" not in v and "@" not in v


# -- charsets ------------------------------------------------------------------------------
@pytest.mark.parametrize("label,text,codec", [
    ("windows-874", "สวัสดี", "cp874"), ("iso-8859-8-i", "שלום", "iso8859-8"),
    ("x-sjis", "日本語", "cp932"), ("x-mac-roman", "Café ∞", "mac_roman"),
    ("ks_c_5601-1987", "똠방각하", "cp949"), ("iso-8859-1", "naïve €", "cp1252"),
    ("\"UTF-8\"", "zürich", "utf-8"), ("gb2312", "中文", "gb18030")])
def test_whatwg_labels_decode_as_browsers_do(label, text, codec):
    body = text.encode(codec)
    raw = (f"Subject: =?{label.strip(chr(34))}?B?{base64.b64encode(body).decode()}?=\r\n"
           f"Content-Type: text/plain; charset={label}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
           f"{base64.b64encode(body).decode()}\r\n").encode()
    p = mime.parse(raw)
    assert p.subject == text and p.text.strip() == text


def test_unknown_and_refused_charsets_never_raise():
    for label in ("x-no-such-charset", "base64", "rot13", "zlib", "unicode_escape", "../../etc", "é" * 50):
        assert charsets.codec_for(label) is None
        raw = f"Subject: =?{label}?Q?caf=C3=A9?=\r\nContent-Type: text/plain; charset=\"{label}\"\r\n\r\ncaf\xc3\xa9 \\u0041\r\n"
        p = mime.parse(raw.encode("utf-8", "surrogateescape"))
        assert "\\u0041" in p.text                      # unicode_escape was not applied
        strict_utf8(p.subject, p.text)
    assert charsets.decode_bytes(b"\xff\xfe caf\xe9") == "ÿþ café"   # not UTF-8: windows-1252


def test_raw_8bit_headers_and_surrogates_come_out_as_text():
    raw = b"From: J\xc3\xb6rg <j@x.example>\r\nSubject: Gr\xc3\xbc\xc3\x9fe \xe9t\xe9\r\n\r\nhi\r\n"
    p = mime.parse(raw)
    assert p.from_ == [("Jörg", "j@x.example")]
    assert p.subject.startswith("Grüße") and "été" in p.subject
    strict_utf8(p.subject)


# -- broken structure ----------------------------------------------------------------------
def test_multipart_without_boundary_shows_its_text():
    p = mime.parse(b"Subject: x\r\nContent-Type: multipart/mixed\r\n\r\nthe body text\r\n")
    assert "the body text" in p.text


def test_only_html_part_marked_attachment_is_still_shown():
    raw = (b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n"
           b"Content-Type: text/html\r\nContent-Disposition: attachment; filename=a.html\r\n\r\n"
           b"<p>hello <b>there</b></p>\r\n--b--\r\n")
    p = mime.parse(raw)
    assert p.html is not None and "hello" in p.text and p.fallback == "text"
    assert [a.filename for a in p.attachments] == ["a.html"]


def test_a_multipart_missing_its_boundary_lines_shows_its_text():
    raw = b"Subject: x\r\nContent-Type: multipart/related; boundary=\"zz\"\r\n\r\nno boundary line here\r\n"
    p = mime.parse(raw)
    assert p.fallback == "text" and "no boundary line here" in p.text


def test_nothing_decodable_falls_back_to_the_raw_source():
    raw = (b"Subject: x\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: image/png\r\n"
           b"Content-Transfer-Encoding: base64\r\n\r\n\r\n--b--\r\n")
    p = mime.parse(raw)
    assert p.fallback == "raw" and "image/png" in p.text


def nested(depth: int) -> bytes:
    s = b"Content-Type: text/plain\r\n\r\nleaf text\r\n"
    for i in range(depth):
        s = (b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i)) + s + (b"\r\n--b%d--\r\n" % i)
    return b"Subject: deep\r\n" + s


def test_nesting_past_the_parser_stack_and_past_max_depth_is_contained():
    p = mime.parse(nested(2000))          # the email package itself recurses too deep
    assert p.subject == "deep" and p.fallback == "raw" and p.problems
    p = mime.parse(nested(50))                  # deeper than MAX_DEPTH: nothing walked, the source shown
    assert any("nested" in x for x in p.problems) and p.fallback == "raw" and "leaf text" in p.text
    p = mime.parse(nested(mime.MAX_DEPTH - 1))
    assert p.text.strip() == "leaf text" and not p.problems


def test_part_count_is_limited():
    parts = b"".join(b"--b\r\nContent-Type: text/plain\r\n\r\npart %d\r\n" % i for i in range(mime.MAX_PARTS + 50))
    raw = b"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n" + parts + b"--b--\r\n"
    p = mime.parse(raw)
    assert any("parts" in x for x in p.problems)
    assert p.text.count("part ") < mime.MAX_PARTS


def test_attachments_inside_attached_messages_are_listed_and_fetched():
    inner = (b"From: x@y.example\r\nSubject: inner\r\nContent-Type: multipart/mixed; boundary=i\r\n\r\n"
             b"--i\r\nContent-Type: text/plain\r\n\r\ninner text\r\n--i\r\n"
             b"Content-Type: application/pdf\r\nContent-Disposition: attachment;\r\n"
             b" filename*=UTF-8''%C3%A9..%2F..%2Fevil%E2%80%AEfdp.exe\r\nContent-Transfer-Encoding: base64\r\n\r\n"
             + base64.b64encode(b"%PDF-inner") + b"\r\n--i--\r\n")
    raw = (b"Subject: outer\r\nContent-Type: multipart/mixed; boundary=o\r\n\r\n--o\r\nContent-Type: text/plain\r\n\r\n"
           b"outer text\r\n--o\r\nContent-Type: message/rfc822\r\n\r\n" + inner + b"\r\n--o--\r\n")
    p = mime.parse(raw)
    assert p.text.strip() == "outer text"
    assert [(a.content_type, a.nested) for a in p.attachments] == [("message/rfc822", False), ("application/pdf", True)]
    a, data = mime.attachment_bytes(raw, 1)
    assert data == b"%PDF-inner" and a.filename == "é../../evil\u202efdp.exe"
    assert display.safe_filename(a.filename) == "evilfdp.exe"
    assert b"inner text" in mime.attachment_bytes(raw, 0)[1]


def test_display_names_that_look_like_addresses_are_flagged():
    p = mime.parse(b'From: "ceo@corp.example" <x@evil.example>\r\nTo: "a@b.example, c" <d@e.example>\r\n\r\nx')
    assert p.from_ == [("ceo@corp.example", "x@evil.example")]      # one address, not two
    assert display.person(*p.from_[0])["suspicious"] is True
    assert display.person("Bob", "bob@x.example")["suspicious"] is False
    assert display.list_sender('"ceo@corp.example" <x@evil.example>') == "ceo@corp.example <x@evil.example>"
    # unquoted: the parser of this interpreter drops <bob@...> (CVE-2023-27043 shape): show it as written
    p = mime.parse(b"From: alice@example.com <bob@evil.example>\r\n\r\nx")
    assert p.from_ == [("alice@example.com <bob@evil.example>", "")]
    assert display.list_sender("alice@example.com <bob@evil.example>") == "alice@example.com <bob@evil.example>"


def test_headers_for_display_lose_controls_and_bidi_and_are_bounded():
    p = mime.parse(b"Subject: =?utf-8?q?Invoice=0D=0ABcc:_x@y_=E2=80=AEtxt.exe?=\r\n\r\n")
    shown = display.clean_line(p.subject)
    assert "\r" not in shown and "\n" not in shown and "\u202e" not in shown
    assert len(display.clean_line("x" * 5000, 200)) == 200


# -- sanitising ----------------------------------------------------------------------------
PNG = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==")


def test_cid_images_become_data_uris_within_the_budget():
    html = '<img src="cid:logo@x"><img src="cid:%3Clogo@x%3E"><img src="cid:svg@x"><img src="cid:missing">'
    c = sanitize.clean(html, {"logo@x": ("image/png", PNG), "svg@x": ("image/svg+xml", b"<svg onload=alert(1)>")})
    assert c.html.count('src="data:image/png;base64,') == 2 and c.inlined == 2 and c.dropped_inline == 2
    big = {f"i{i}@x": ("image/png", b"\0" * (2 * 1024 * 1024)) for i in range(6)}
    c = sanitize.clean("".join(f'<img src="cid:i{i}@x">' for i in range(6)), big)
    assert 0 < c.inlined < 6 and c.dropped_inline == 6 - c.inlined
    assert len(c.html) <= sanitize.MAX_INLINE_BYTES + 1000


def test_remote_images_are_counted_and_only_https_kept_on_request():
    html = '<img src="http://t.example/p.gif"><img src="https://t.example/q.gif"><img src="HTTPS://t.example/r">'
    c = sanitize.clean(html)
    assert c.remote_blocked == 3 and "t.example" not in c.html
    r = sanitize.clean(html, remote=True)
    assert r.html.count('src="https://') == 2 and r.remote_blocked == 1 and "http://t.example" not in r.html
    assert_clean(r.html, remote=True)


def test_protocol_relative_images_are_counted_and_relative_urls_never_kept():
    html = ('<img src="//t.example/p.gif"><img src="rel.png"><a href="/rel">r</a><a href="//t.example/x">p</a>'
            '<blockquote cite="../c">q</blockquote><video poster="//t.example/v.jpg"></video>')
    for remote in (False, True):
        c = sanitize.clean(html, remote=remote)
        assert c.remote_blocked == 1, remote
        assert "t.example" not in c.html and "rel" not in c.html.replace('rel="noopener', "")
        assert "href=" not in c.html and "cite=" not in c.html and "poster" not in c.html
        assert_clean(c.html, remote=remote)


HOSTILE = [
    '<svg><animate attributeName="href" to="javascript:alert(1)"/><a><text>x</text></a></svg>',
    '<svg><set attributeName="onmouseover" to="alert(1)"/></svg><svg><rect fill="url(http://c/x)"/></svg>',
    '<math href="javascript:alert(1)">m</math><math><mi xlink:href="javascript:alert(1)">x</mi></math>',
    '<base href="http://evil.example/"><a href="/x">rel</a>',
    '<a href="jav&#x09;ascript:alert(1)">a</a><a href="&#106;avascript:alert(1)">b</a><a href=" javascript:alert(1)">c</a>',
    '<a href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">d</a><a href="data:application/xhtml+xml,x">e</a>',
    '<noscript><p title="</noscript><img src=x onerror=alert(1)>"></noscript>',
    '<style><img src="</style><img src=x onerror=alert(1)>"></style>',
    '<template><img src=x onerror=alert(1)></template><svg><style><img src=x onerror=alert(1)></style></svg>',
    '<div style="background:url(http://c/a)">1</div><div style="background-image:image-set(\'http://c/b\' 1x)">2</div>',
    '<div style="color:var(--x,url(http://c/c))">3</div><div style="font-family:x;src:url(http://c/d)">4</div>',
    '<div style="background:u\\72l(http://c/e)">5</div><div style="width:expression(alert(1))">6</div>',
    '<style>@import "http://c/f.css"; @font-face{src:url(http://c/g)}</style>',
    '<meta http-equiv="refresh" content="0;url=http://c/h"><link rel="stylesheet" href="http://c/i.css">',
    '<a href="https://ok.example/" ping="http://c/j">ping</a><form action="http://c/k"><input name=q><button>go</button></form>',
    '<img srcset="http://c/l 1x"><picture><source srcset="http://c/m"><img src="http://c/n"></picture><video poster="http://c/o"></video>',
    '<iframe src="http://c/p"></iframe><object data="http://c/q"></object><embed src="http://c/r"><audio src="http://c/s"></audio>',
    '<body background="http://c/t" onload="alert(1)"><table background="http://c/u"><tr><td>x</td></tr></table>',
    '<img src=x onerror=alert(1)><img src="data:image/svg+xml;base64,PHN2Zz4=">',
    '<![CDATA[<img src=x onerror=alert(1)>]]><!--><img src=x onerror=alert(1)>-->',
]


@pytest.mark.parametrize("html", HOSTILE)
def test_hostile_html_comes_out_inert(html):
    c = sanitize.clean(html)
    assert_clean(c.html)
    assert "alert(" not in c.html or "onerror" not in c.html


def test_style_keeps_layout_and_drops_fetches():
    assert sanitize.style("color: red; font-weight:bold; background:url(x)") == "color:red; font-weight:bold"
    assert sanitize.style("position:fixed; top:0") is None
    assert sanitize.style("margin:0 auto; border:1px solid #ccc") == "margin:0 auto; border:1px solid #ccc"


def test_the_body_document_is_re_encoded_utf8_html():
    doc = sanitize.document(sanitize.clean("<p>Grüße</p>").html)
    assert doc.startswith("<!doctype html>") and '<meta charset="utf-8">' in doc and "Grüße" in doc
    assert "<pre>&lt;b&gt;</pre>" in sanitize.text_document("<b>")


# -- plain text and downloads --------------------------------------------------------------
def test_linkify_escapes_first_and_links_only_http():
    out = str(display.linkify('see <http://x.example"onmouseover=alert(1)> and javascript:alert(2) '
                              "and https://a.example/p?x=1&y=2."))
    assert '<a href="http://x.example" rel="noopener noreferrer" target="_blank">' in out
    assert "onmouseover=alert(1)" in out and '"onmouseover' not in out      # stays text, escaped
    assert 'href="https://a.example/p?x=1&amp;y=2"' in out and "javascript:alert(2)" in out
    assert out.count("<a ") == 2 and "&lt;" in out


@pytest.mark.parametrize("name", ['a"; filename=evil.exe', "x\r\nSet-Cookie: a=b", "../../etc/passwd",
                                  "C:\\Windows\\evil.bat", "\u202egpj.exe", "<script>.html", "", "." * 10,
                                  "名前" * 200 + ".pdf"])
def test_content_disposition_is_safe_for_any_name(name):
    safe = display.safe_filename(name, 2)
    cd = display.content_disposition(safe)
    assert "\r" not in cd and "\n" not in cd and "/" not in safe and "\\" not in safe and "\u202e" not in safe
    assert cd.startswith('attachment; filename="') and cd.count('"') == 2 and "filename*=UTF-8''" in cd
    assert len(safe) <= display.MAX_FILENAME and safe


def test_content_types_are_validated_and_active_ones_downgraded():
    assert display.safe_content_type("image/png") == "image/png"
    assert display.safe_content_type("application/pdf") == "application/pdf"
    for bad in ("text/html", "image/svg+xml", "application/xhtml+xml", "text/xml", "application/javascript",
                "image/png\r\nX-Evil: 1", "<b>/x", "", "text/calendar", "message/rfc822"):
        assert display.safe_content_type(bad) == "application/octet-stream"
