"""MAIL-phase decision: may this reverse-path be accepted, and in which form is it kept?

Pure function of the path aiosmtpd hands to `handle_MAIL` (brackets removed) and whether the
client declared SMTPUTF8; no I/O. The rules are the ones the delivery side enforces
(aiosmtplib refuses to send a command with a control character, an address with whitespace,
`<`, `>` or `"` outside a quoted local part, or non-ASCII without SMTPUTF8), checked here once,
so that a sender accepted with 250 can always be used on the wire and in a bounce. In order:

1. null reverse-path `<>` (RFC 5321 §4.5.5)                       → 250 2.1.0, kept as `<>`
2. source route `@a,@b:user@dom` (RFC 5321 §4.1.1.3, Appendix C)  → route dropped
3. C0 control character (NUL included), DEL, or C1 control        → 501 5.1.7
4. characters the SMTP client cannot carry (whitespace, `<>`, `"` outside a quoted local part,
   RFC 5322 comments or lists that its parser would rewrite)       → 501 5.1.7
5. non-ASCII without SMTPUTF8 on MAIL (RFC 6531 §3.4)             → 553 5.6.7
6. otherwise                                                      → 250 2.1.0

Postfix accepts a control character other than NUL and delivers it; we refuse it instead:
aiosmtplib cannot send it, and a 250 for mail that can never leave is the worse answer.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from email.utils import parseaddr

from policies.verdict import MAIL_BAD_SYNTAX, MAIL_CONTROL_CHAR, MAIL_NEEDS_SMTPUTF8, MAIL_OK, Verdict

__all__ = ["MailFromDecision", "check_mail_from", "has_control"]

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CARRIED = re.compile(r'[\s<>"]')                       # aiosmtplib's ADDRESS_INJECTION_REGEX
_QUOTED_LOCAL = re.compile(r'^"(?:[^"\\\r\n]|\\.)*"')


@dataclass(frozen=True)
class MailFromDecision:
    """`verdict` to send; `address` the reverse-path to keep ("<>" for the null sender, the
    source route dropped); "" when refused."""

    verdict: Verdict
    address: str


def has_control(text: str) -> bool:
    """True if `text` holds a C0 control (NUL to US), DEL or a C1 control (U+0080-U+009F)."""
    return _CONTROL.search(text) is not None


def check_mail_from(path: str, smtputf8: bool) -> MailFromDecision:
    """Decide on one MAIL FROM path (`user@example.com`, `<>`/"" for the null sender);
    `smtputf8` True when the MAIL command carried the SMTPUTF8 parameter."""
    if has_control(path):
        return MailFromDecision(MAIL_CONTROL_CHAR, "")
    address = path.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1].strip()
    if not address:
        return MailFromDecision(MAIL_OK, "<>")
    if address.startswith("@"):
        route, colon, rest = address.partition(":")
        if not colon or not rest:
            return MailFromDecision(MAIL_BAD_SYNTAX, "")
        address = rest
    if _CARRIED.search(_QUOTED_LOCAL.sub("", address, count=1)):
        return MailFromDecision(MAIL_BAD_SYNTAX, "")
    parsed = parseaddr(address)[1]
    if parsed and parsed != address:      # aiosmtplib would send `parsed`, not what we took
        return MailFromDecision(MAIL_BAD_SYNTAX, "")
    if not smtputf8 and not address.isascii():
        return MailFromDecision(MAIL_NEEDS_SMTPUTF8, "")
    return MailFromDecision(MAIL_OK, address)
