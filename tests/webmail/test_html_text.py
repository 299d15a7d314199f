"""webmail.html_text: the one HTML-to-text helper of the webmail view, quoting and the
continuity search index (gateway.continuity.filing)."""
from email.message import EmailMessage

from gateway.continuity.filing import describe
from webmail.html_text import html_to_text


def test_blocks_end_lines_and_scripts_styles_and_head_are_dropped():
    html = ("<html><head><title>t</title><style>p{}</style></head><body><p>one <b>two</b></p>"
            "<div>three</div><script>alert(1)</script>four<br>five &amp; six</body></html>")
    assert html_to_text(html) == "one two\n\nthree\nfour\nfive & six"


def test_malformed_markup_never_raises_and_keeps_what_was_parsed():
    assert html_to_text("<p>kept<scr<<>ipt x='") .startswith("kept")
    assert html_to_text("") == ""


def test_limit_bounds_the_html_read():
    assert html_to_text("<p>" + "a" * 100, limit=10) == "a" * 7


def test_the_search_index_uses_the_same_text():
    msg = EmailMessage()
    msg["From"], msg["To"], msg["Subject"] = "a@example.net", "b@example.com", "s"
    msg.set_content("<p>quarterly <i>figures</i></p><script>secret()</script>", subtype="html")
    entry = describe("Q1", msg.as_bytes())
    assert "quarterly figures" in entry.body_text
    assert "secret" not in entry.body_text
