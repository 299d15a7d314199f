"""Verdict: the SMTP reply a policy decides on, and the named replies the policies use.

A verdict is one line: reply code (RFC 5321 §4.2), enhanced status code (RFC 3463, RFC 5248)
and human text. It carries no state and does no I/O; the intake turns it into a reply with
`reply()`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "Verdict",
    "RCPT_OK",
    "RCPT_BAD_SYNTAX",
    "RCPT_TOO_LONG",
    "RCPT_USER_UNKNOWN",
    "RCPT_NO_DOMAIN",
    "RELAY_DENIED",
    "RELAY_ROUTING_DENIED",
    "RCPT_TOO_MANY",
    "RCPT_NEEDS_SMTPUTF8",
    "RCPT_AUTH_REQUIRED",
    "MAIL_OK",
    "MAIL_BAD_SYNTAX",
    "MAIL_CONTROL_CHAR",
    "MAIL_NEEDS_SMTPUTF8",
    "TEMP_FAILURE",
]

_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")


@dataclass(frozen=True)
class Verdict:
    """An SMTP reply: `code` (e.g. 550), RFC 3463 `status` (e.g. "5.1.1") and `text`.

    Raises ValueError at construction if the code is not 2xx/4xx/5xx, if the status is not
    `class.subject.detail`, or if the status class differs from the code's first digit.
    """

    code: int
    status: str
    text: str

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599 or self.code // 100 == 3:
            raise ValueError(f"bad SMTP reply code {self.code!r}")
        if not _STATUS.match(self.status) or int(self.status[0]) != self.code // 100:
            raise ValueError(f"bad enhanced status {self.status!r} for code {self.code}")

    @property
    def ok(self) -> bool:
        """True for a positive completion reply (2xx)."""
        return 200 <= self.code < 300

    @property
    def temporary(self) -> bool:
        """True for a transient failure (4xx): the client should retry later."""
        return 400 <= self.code < 500

    def reply(self) -> str:
        """The reply line, e.g. "550 5.1.1 Recipient address rejected: User unknown".

        One line without CRLF: any CR or LF in the text becomes a space, so a verdict can
        never inject a second reply line.
        """
        text = " ".join(self.text.splitlines())
        return f"{self.code} {self.status} {text}"


RCPT_OK = Verdict(250, "2.1.5", "Recipient OK")
RCPT_BAD_SYNTAX = Verdict(501, "5.1.3", "Bad recipient address syntax")
RCPT_TOO_LONG = Verdict(501, "5.1.3", "Recipient address too long")  # RFC 5321 §4.5.3.1
RCPT_USER_UNKNOWN = Verdict(550, "5.1.1", "Recipient address rejected: User unknown")
RCPT_NO_DOMAIN = Verdict(550, "5.1.2", "Recipient address rejected: no local domain configured")
RELAY_DENIED = Verdict(550, "5.7.1", "Relay access denied")
RELAY_ROUTING_DENIED = Verdict(550, "5.7.1", "Relay access denied: sender-specified routing")
RCPT_TOO_MANY = Verdict(452, "4.5.3", "Too many recipients")  # RFC 5321 §4.5.3.1.8
# RFC 6531 §3.4: a non-ASCII address needs SMTPUTF8 on MAIL (Postfix's wording)
RCPT_NEEDS_SMTPUTF8 = Verdict(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
# Exchange RequireSenderAuthenticationEnabled: the group takes mail from inside only
RCPT_AUTH_REQUIRED = Verdict(
    550, "5.7.1", "Recipient address rejected: this group accepts mail only from internal senders")
MAIL_OK = Verdict(250, "2.1.0", "Sender OK")
MAIL_BAD_SYNTAX = Verdict(501, "5.1.7", "Bad sender address syntax")
MAIL_CONTROL_CHAR = Verdict(501, "5.1.7", "Bad sender address syntax: control character")
MAIL_NEEDS_SMTPUTF8 = Verdict(553, "5.6.7", "Must declare SMTPUTF8 to send unicode address")
TEMP_FAILURE = Verdict(451, "4.3.0", "Temporary local problem, please try again later")
