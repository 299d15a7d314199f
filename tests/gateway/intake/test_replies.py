"""Every reply aiosmtpd sends by itself gets an RFC 3463 enhanced status code from
replies.enhance() (RFC 2034 §3), except the greeting and the EHLO/HELO replies, which pass through
unchanged. The fixed replies are read from the installed aiosmtpd's own source, so a new string
in a future aiosmtpd release fails here instead of reaching clients without a code."""
from __future__ import annotations

import ast
import inspect
import re

import aiosmtpd.smtp
import pytest

from gateway.intake import replies
from gateway.intake.replies import enhance

ENHANCED = re.compile(r"^([245])\d\d [245]\.\d{1,3}\.\d{1,3} \S")

#: Replies aiosmtpd pushes itself, with the enhanced status we send (RFC 3463 §3.5 / Postfix).
KNOWN = {
    "503 Error: need RCPT command": "503 5.5.1 Error: need RCPT command",
    "503 Error: need MAIL command": "503 5.5.1 Error: need MAIL command",
    "503 Error: nested MAIL command": "503 5.5.1 Error: nested MAIL command",
    "503 Error: send HELO first": "503 5.5.1 Error: send HELO first",
    "500 Error: bad syntax": "500 5.5.2 Error: bad syntax",
    "500 Command line too long": "500 5.5.2 Command line too long",
    '500 Error: command "FOO" not recognized': '500 5.5.2 Error: command "FOO" not recognized',
    "501 Syntax: MAIL FROM: <address>": "501 5.5.4 Syntax: MAIL FROM: <address>",
    "501 Syntax: RCPT TO: <address>": "501 5.5.4 Syntax: RCPT TO: <address>",
    "501 Syntax: EHLO hostname": "501 5.5.4 Syntax: EHLO hostname",
    "502 EXPN not implemented": "502 5.5.1 EXPN not implemented",
    "552 Error: Too much mail data": replies.SIZE_EXCEEDED,
    "552 Error: message size exceeds fixed maximum message size": replies.SIZE_EXCEEDED,
    "530 Must issue a STARTTLS command first": replies.NEED_TLS,
    "555 MAIL FROM parameters not recognized or not implemented":
        "555 5.5.4 MAIL FROM parameters not recognized or not implemented",
    "454 TLS not available": "454 4.7.0 TLS not available",
    "221 Bye": "221 2.0.0 Bye",
    "250 OK": "250 2.0.0 OK",
    "252 Cannot VRFY user, but will accept message and attempt delivery":
        "252 2.0.0 Cannot VRFY user, but will accept message and attempt delivery",
}

#: Passed through unchanged: the greeting, EHLO lines (continuations and the last one), HELO.
UNCHANGED = ["220 gw.test ESMTP mailgate", "250-gw.test", "250-SIZE 37748736", "250-8BITMIME",
             "250-SMTPUTF8", "250-ENHANCEDSTATUSCODES", "250 HELP", "250 gw.test",
             "354 End data with <CR><LF>.<CR><LF>", "334 ", replies.LOCAL_ERROR,
             replies.queued("0123456789BCDF")]


@pytest.mark.parametrize("raw", sorted(KNOWN))
def test_known_fixed_replies(raw):
    assert enhance(raw) == KNOWN[raw]
    assert ENHANCED.match(enhance(raw))
    assert enhance(enhance(raw)) == enhance(raw)          # idempotent


@pytest.mark.parametrize("reply", UNCHANGED)
def test_greeting_ehlo_and_enhanced_replies_pass_unchanged(reply):
    assert enhance(reply) == reply


def test_class_digit_agrees():
    for raw in KNOWN:
        out = enhance(raw)
        assert out[0] == out[4], out                    # 4xx gets 4.x.x, 5xx gets 5.x.x


def _aiosmtpd_replies() -> list[str]:
    """Single-line reply literals in aiosmtpd/smtp.py, placeholders filled with 'X'."""
    tree = ast.parse(inspect.getsource(aiosmtpd.smtp))
    out = set()
    parts = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
    for node in ast.walk(tree):
        if id(node) in parts:                            # a piece of an f-string, seen whole
            continue
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "X" for v in node.values)
        else:
            continue
        text = text.replace("{}", "X")
        if re.match(r"^[245]\d\d ", text):
            out.add(text)
        if text.startswith("X Supported commands"):      # '{} Supported commands: {}' (HELP)
            out.update({"250" + text[1:], "501" + text[1:]})
    return sorted(out)


EXEMPT = {"220 X X",        # the greeting (RFC 2034 §3 exempts it)
          "250 X",          # the HELO reply: the hostname
          "250 HELP"}       # the last line of the EHLO reply


def test_every_aiosmtpd_reply_gets_an_enhanced_code():
    found = _aiosmtpd_replies()
    assert "503 Error: need RCPT command" in found and len(found) > 30   # the scan works
    missing = [r for r in found if r not in EXEMPT and not ENHANCED.match(enhance(r))]
    assert missing == []


def test_help_replies():
    assert enhance("250 Syntax: MAIL FROM: <address>") == "250 2.0.0 Syntax: MAIL FROM: <address>"
    assert enhance("250 Supported commands: DATA EHLO") == "250 2.0.0 Supported commands: DATA EHLO"
    assert enhance("501 Supported commands: DATA EHLO") == "501 5.5.4 Supported commands: DATA EHLO"
