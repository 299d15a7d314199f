"""Hostile mail in a real browser: a set of XSS and remote-fetch vectors (WEBMAIL-NOTES.md, "Test
vector classes") filed into a user's continuity mailbox of a real gateway, then opened in every
view where mail content appears (folder list, message view, ?remote=1, ?view=text, the body URL
opened directly in a tab, search results, the reply and forward forms that quote it, attachment
downloads) in Debian's chromium.

Every payload that runs fetches the canary ("the internet", a real HTTP server process counting
hits), sets top.document.title and calls alert(). Asserted for every view: zero canary hits, no
request to any other origin (Recorder.foreign), no dialog, no popup, title unchanged. A control
test loads the same vectors into a page without our sanitiser and CSP and sees them fire, so the
harness can detect what it is asserting is absent.
"""
from __future__ import annotations

import base64
import re
import time

import pytest

from tests.webmail.conftest import (Recorder, browser_page, fetch, file_raw, open_session, settle,
                                    start_webmail)

USER = "alice@example.com"
TITLE = "XSSRAN"


def js(name: str, c: str) -> str:
    return (f"fetch('{c}/js/{name}');new Image().src='{c}/img/{name}';"
            f"top.document.title='{TITLE}';alert('{name}')")


# (name, html body) — "C" is replaced by the canary's base URL, "JS" by a payload naming the vector
VECTORS = [
    ("script", "<script>JS</script><img src=x onerror=\"JS\"><body onload=\"JS\">"),
    ("svg_animate", '<svg><a><animate attributeName="href" values="javascript:JS"/>'
                    '<text x="20" y="20">click</text></a><animate onbegin="JS" attributeName="x" dur="1s"/></svg>'),
    ("svg_set", '<svg><set attributeName="onload" to="JS"/><set onbegin="JS" attributeName="x" to="1"/></svg>'
                '<svg onload="JS"></svg>'),
    ("svg_onrepeat", '<svg><animate onrepeat="JS" attributeName="x" dur="0.01s" repeatCount="3"/></svg>'),
    ("funciri", '<svg width="20" height="20"><rect width="10" height="10" fill="url(C/funciri-fill#x)" '
                'filter="url(C/funciri-filter#f)" stroke="url(C/funciri-stroke#s)" mask="url(C/funciri-mask#m)"/></svg>'
                '<div style="filter:url(C/css-filter#f)">f</div>'),
    ("math_href", '<math href="javascript:JS"><mtext>x</mtext></math><math><maction actiontype="statusline" '
                  'xlink:href="javascript:JS">y</maction></math>'),
    ("cdata", '<svg><![CDATA[><img src=x onerror="JS">]]></svg><![CDATA[<img src=x onerror="JS">]]>'),
    ("base", '<base href="C/base/"><img src="pixel.gif"><link rel="stylesheet" href="base.css">'),
    ("obfuscated_js", '<iframe src="jav&#x09;ascript:JS"></iframe><iframe src="&#106;avascript:JS"></iframe>'
                      '<a href=" javascript:JS" id="a1">a</a><object data="javascript:JS"></object>'),
    ("data_documents", '<iframe src="data:text/html,<script>JS</script>"></iframe>'
                       '<object data="data:application/xhtml+xml;base64,'
                       + base64.b64encode(b'<html xmlns="http://www.w3.org/1999/xhtml"><script>JS</script></html>').decode()
                       + '"></object><embed src="data:image/svg+xml,<svg onload=JS xmlns=%22http://www.w3.org/2000/svg%22/>">'),
    ("mxss_noscript", '<noscript><p title="</noscript><img src=x onerror=JS>"></noscript>'),
    ("mxss_style", '<style><img src="</style><img src=x onerror=JS>"></style><svg><style><img src=x onerror=JS></style></svg>'),
    ("mxss_template", '<template><img src=x onerror=JS></template><math><mtext><table><mglyph><style>'
                      '<img src=x onerror=JS>'),
    ("mxss_namespace", '<svg></p><style><a id="</style><img src=1 onerror=JS>">'),
    ("css_url", '<div style="background:url(C/css-bg)">1</div><div style="background-image:url(\'C/css-bgimg\')">2</div>'
                '<p style="list-style-image:url(C/css-list)">3</p><p style="cursor:url(C/css-cursor),auto">4</p>'),
    ("css_escapes", '<div style="background:u\\72l(C/css-escaped)">e</div><div style="background:&#117;rl(C/css-entity)">f</div>'),
    ("css_imageset_var", '<div style="background-image:image-set(\'C/css-imageset\' 1x)">1</div>'
                         '<div style="--u:url(C/css-var);background:var(--u)">2</div>'),
    ("css_import_fontface", '<style>@import url(C/import.css); @font-face{font-family:evil;src:url(C/font)} '
                            'body{background:url(C/style-bg)}</style><p style="font-family:evil">t</p>'),
    ("meta_refresh", '<meta http-equiv="refresh" content="0;url=C/refresh.html"><meta http-equiv="refresh" content="0;url=javascript:JS">'),
    ("a_ping", '<a href="https://example.org/" ping="C/ping" id="p">link with ping</a>'),
    ("forms", '<form action="C/form" method="post"><input name="q" value="x" autofocus onfocus="JS">'
              '<button formaction="C/formaction">go</button></form><input autofocus onfocus="JS">'),
    ("img_srcset_picture", '<img srcset="C/srcset 1x, C/srcset2 2x"><picture><source srcset="C/picture-source">'
                           '<img src="C/picture-img"></picture>'),
    ("video_audio", '<video poster="C/poster" src="C/video"></video><audio src="C/audio" autoplay></audio>'
                    '<video><source src="C/video-source"></video>'),
    ("link_rel", '<link rel="stylesheet" href="C/link.css"><link rel="preload" as="image" href="C/preload">'
                 '<link rel="prefetch" href="C/prefetch"><link rel="dns-prefetch" href="C/dns">'),
    ("svg_image_use_feimage", '<svg><image href="C/svg-image"/><image xlink:href="C/svg-ximage"/><use href="C/use.svg#x"/>'
                              '<filter id="f"><feImage href="C/feimage"/></filter></svg>'),
    ("iframe_object_embed", '<iframe src="C/iframe.html"></iframe><object data="C/object.html"></object>'
                            '<embed src="C/embed.html"><frameset><frame src="C/frame.html"></frameset>'),
    ("tracking_pixels", '<img src="C/pixel-http.gif" width="1" height="1"><img src="HTTPS_C/pixel-https.gif">'
                        '<img src="//127.0.0.1:CPORT/pixel-relative.gif">'),
    ("body_background", '<body background="C/body-bg" onload="JS"><table background="C/table-bg"><tr>'
                        '<td background="C/td-bg">cell</td></tr></table>'),
    ("expression", '<div style="width:expression(JS)">x</div><div style="behavior:url(C/x.htc)">y</div>'),
]


def hostile_message(i: int, name: str, html: str, c: str, port: int) -> bytes:
    body = (html.replace("HTTPS_C", c.replace("http://", "https://")).replace("CPORT", str(port))
            .replace("JS", js(name, c)).replace("C/", c + "/"))
    token = f"vector{i:02d}"
    return (f"From: \"<img src=x onerror={js(name, c)}>\" <evil{i}@attacker.test>\r\n"
            f"To: {USER}\r\nSubject: {token} <script>{js(name, c)}</script> {name}\r\n"
            f"Date: Mon, 30 Nov 2026 10:00:{i:02d} +0000\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/alternative; boundary=\"ALT\"\r\n\r\n"
            f"--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{token} text <b>{name}</b>\r\n"
            f"--ALT\r\nContent-Type: text/html; charset=utf-8\r\n\r\n<p>{token}</p>{body}\r\n--ALT--\r\n").encode()


def plain_and_attachments(c: str) -> list[bytes]:
    """Plain-text linkification traps, markup in names and types, active attachments, hostile cid."""
    p = js("plain", c)
    plain = (f"From: plain@attacker.test\r\nTo: {USER}\r\nSubject: vector90 plain <i>text</i>\r\n"
             "Content-Type: text/plain; charset=utf-8\r\n\r\n"
             f"see <http://x.example\"onmouseover=\"{p}\"> and http://y.example/'onfocus='{p}' autofocus x\r\n"
             f"javascript:{p}\r\n<script>{p}</script>\r\n{c}/plain-link-not-fetched\r\n").encode()
    a = js("att", c)
    svg = f'<svg xmlns="http://www.w3.org/2000/svg" onload="{a}"><image href="{c}/svg-att"/></svg>'.encode()
    html = f"<script>{a}</script><img src={c}/html-att>".encode()
    ics = (f"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDESCRIPTION:<img src={c}/ics onerror={a}>\r\n"
           "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()
    xml = f'<?xml version="1.0"?><x:script xmlns:x="http://www.w3.org/1999/xhtml">{a}</x:script>'.encode()

    def part(ctype_line: str, disp: str, data: bytes) -> str:
        return (f"--MIX\r\n{ctype_line}\r\n{disp}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
                f"{base64.b64encode(data).decode()}\r\n")
    atts = (f"From: atts@attacker.test\r\nTo: {USER}\r\nSubject: vector91 attachments\r\nMIME-Version: 1.0\r\n"
            "Content-Type: multipart/mixed; boundary=\"MIX\"\r\n\r\n"
            "--MIX\r\nContent-Type: text/html\r\n\r\n<p>vector91 see attachments</p><img src=\"cid:evil@svg\">\r\n"
            + part("Content-Type: image/svg+xml", 'Content-Disposition: attachment; filename="<img src=x onerror=alert(1)>.svg"', svg)
            + part("Content-Type: text/html; name=\"a.html\"", "Content-Disposition: inline", html)
            + part("Content-Type: text/calendar; method=REQUEST", 'Content-Disposition: attachment; filename="invite.ics"', ics)
            + part("Content-Type: text/xml", 'Content-Disposition: attachment; filename="x.xml"', xml)
            + part('Content-Type: text/html"><script>alert(1)</script>; name="t.txt"',
                   "Content-Disposition: attachment; filename*=UTF-8''%3Cscript%3Ealert(1)%3C%2Fscript%3E%E2%80%AEgpj.exe", b"x")
            + part("Content-Type: image/svg+xml\r\nContent-ID: <evil@svg>", "Content-Disposition: inline", svg)
            + part("Content-Type: image/png; name=\"x\r\n Content-Type: text/html\"", 'Content-Disposition: attachment; filename="crlf.png"', b"\x89PNG")
            + "--MIX--\r\n").encode()
    return [plain, atts]


@pytest.fixture
def hostile_mailbox(peers, tmp_path, canary):
    gw = start_webmail(peers, tmp_path)
    cookie = open_session(gw.spool_path, USER)
    ids = {}
    for i, (name, html) in enumerate(VECTORS):
        ids[name] = file_raw(gw.spool_path, USER, hostile_message(i, name, html, canary.base, canary.port),
                             now=time.time() + i)
    for j, raw in enumerate(plain_and_attachments(canary.base)):
        ids[f"extra{j}"] = file_raw(gw.spool_path, USER, raw, now=time.time() + 100 + j)
    return gw, cookie, ids


class Watch:
    """Recorder plus popups, per-frame titles and the canary."""

    def __init__(self, page, base, canary):
        self.page, self.canary = page, canary
        self.rec = Recorder(page, base)
        self.popups: list[str] = []
        self.remote_tried: list[str] = []
        page.context.on("page", lambda p: self.popups.append(p.url))

    def visit(self, url: str, expect_download: bool = False, remote: bool = False) -> None:
        try:
            if expect_download:
                with self.page.expect_download(timeout=10_000) as d:
                    self.page.evaluate("u => { const a = document.createElement('a'); a.href = u; a.download = ''; "
                                       "document.body.appendChild(a); a.click(); }", url)
                assert d.value.url == url
            else:
                self.page.goto(url)
                settle(self.page, 0.25)
        finally:
            self.check(url, remote)

    def check(self, where: str, remote: bool = False) -> None:
        titles = []
        for f in self.page.frames:
            try:
                titles.append(f.title())
            except Exception:
                pass
        assert TITLE not in titles, f"{where}: a payload set the title"
        assert not self.rec.dialogs, f"{where}: dialogs {self.rec.dialogs}"
        if remote:       # "show remote images": https images only (the canary does not speak TLS)
            self.remote_tried += [u for u in self.rec.foreign if u.startswith("https://")]
            self.rec.foreign[:] = [u for u in self.rec.foreign if not u.startswith("https://")]
        assert not self.rec.foreign, f"{where}: foreign requests {self.rec.foreign}"
        assert not self.popups, f"{where}: popups {self.popups}"
        assert self.canary.hits() == [], f"{where}: canary hits {self.canary.hits()}"


def test_hostile_mail_stays_inert_in_every_view(hostile_mailbox, browser, canary):
    gw, cookie, ids = hostile_mailbox
    page = browser_page(browser, gw, cookie)
    w = Watch(page, gw.base, canary)
    w.visit(gw.base + "/mail/inbox")
    assert page.locator("table.msglist tbody tr").count() == len(ids)
    assert "<script>" in page.locator("table.msglist").inner_text()          # shown as text
    for name, mid in ids.items():
        for suffix in ("", "?remote=1", "?view=text", "/body", "/body?remote=1",
                       "/reply", "/reply-all", "/forward", "/forward?as=attachment"):   # the quoting forms
            w.visit(f"{gw.base}/msg/{mid}{suffix}", remote="remote" in suffix)
        page.goto(f"{gw.base}/msg/{mid}")
        assert page.locator("iframe.body").count() in (0, 1)
        if page.locator("iframe.body").count():
            assert page.locator("iframe.body").get_attribute("sandbox") == "allow-popups allow-popups-to-escape-sandbox"
        settle(page, 0.2)
        w.check(f"/msg/{mid} again")
    # with ?remote=1 the https pixel (and only it) was tried, from the message view and the body URL
    assert sorted(set(w.remote_tried)) == [canary.base.replace("http://", "https://") + "/pixel-https.gif"]
    for i in range(len(VECTORS)):
        w.visit(f"{gw.base}/mail/search?q=vector{i:02d}")
        assert page.locator("ol.results li").count() == 1, f"search vector{i:02d}"
    w.visit(f"{gw.base}/mail/search?q=script")               # matches the <script> text in subjects
    assert page.locator("ol.results li").count() >= len(VECTORS)
    assert page.locator("ol.results mark").count() >= len(VECTORS)
    page.context.close()


def test_plain_text_and_attachments_in_the_browser(hostile_mailbox, browser, canary):
    gw, cookie, ids = hostile_mailbox
    page = browser_page(browser, gw, cookie)
    w = Watch(page, gw.base, canary)
    w.visit(f"{gw.base}/msg/{ids['extra0']}")
    links = page.locator("pre.plain a")
    hrefs = [links.nth(k).get_attribute("href") for k in range(links.count())]
    assert {"http://x.example", "http://y.example/", f"{canary.base}/plain-link-not-fetched"} <= set(hrefs)
    assert all(re.fullmatch(r"https?://[^\s\"'<>`]+", h) for h in hrefs), hrefs     # no quote broke out
    assert all(links.nth(k).get_attribute("rel") == "noopener noreferrer" for k in range(links.count()))
    assert page.locator("pre.plain a[onmouseover], pre.plain a[onfocus], pre.plain script").count() == 0

    mid = ids["extra1"]
    w.visit(f"{gw.base}/msg/{mid}")
    names = page.locator(".attachments li a")
    assert names.count() == 7
    shown = " ".join(names.nth(k).inner_text() for k in range(names.count()))
    assert "_img src=x onerror=alert(1)_.svg" in shown and "\u202e" not in shown and "<" not in shown
    for n in range(names.count()):
        url = f"{gw.base}/msg/{mid}/att/{n}"
        status, h, body = fetch(url, cookie)
        assert status == 200 and h["content-disposition"].startswith("attachment; filename=\"")
        assert h["x-content-type-options"] == "nosniff" and h["cache-control"] == "private, no-store"
        assert h["content-security-policy"] == "default-src 'none'; sandbox"
        assert not any(t in h["content-type"] for t in ("html", "svg", "xml", "calendar"))
        assert "\r" not in h["content-disposition"] and "\u202e" not in h["content-disposition"]
        w.visit(url, expect_download=True)
    # the cid: image that points at an SVG part is not inlined
    status, h, body = fetch(f"{gw.base}/msg/{mid}/body", cookie)
    assert b"cid:" not in body and b"data:image/svg" not in body


def test_the_vectors_fire_without_our_defences(browser, canary):
    """Control: the same HTML in a page with no sanitiser and no CSP does fetch the canary, run
    script and change the title, so the assertions above can fail."""
    context = browser.new_context()
    fired = set()
    for i, (name, html) in enumerate(VECTORS):
        page = context.new_page()
        rec = Recorder(page, "http://127.0.0.1:1")
        raw = hostile_message(i, name, html, canary.base, canary.port).decode()
        page.set_content(raw.split("Content-Type: text/html; charset=utf-8\r\n\r\n", 1)[1].rsplit("--ALT--", 1)[0])
        settle(page, 0.4)
        if rec.foreign or rec.dialogs or page.title() == TITLE:
            fired.add(name)
        page.close()
    context.close()
    # the rest need a click, focus, or a sanitiser to mutate them (mXSS) before they fire
    assert len(fired) >= 15, f"only {sorted(fired)} fired"
    assert {"script", "svg_set", "funciri", "base", "obfuscated_js", "data_documents", "css_url", "css_escapes",
            "css_import_fontface", "img_srcset_picture", "tracking_pixels", "iframe_object_embed",
            "body_background"} <= fired
