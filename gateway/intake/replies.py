"""SMTP replies sent by intake, with RFC 3463 enhanced status codes.

Named constants for our own replies, and ``enhance()`` that adds an enhanced status code to the
fixed replies aiosmtpd sends by itself (``503 Error: need RCPT command`` and the like), so that
every reply of the session carries one (RFC 2034 §3: once ENHANCEDSTATUSCODES is advertised,
every 2xx/4xx/5xx reply except the greeting carries one).
"""
from __future__ import annotations

import re

OK = "250 2.0.0 OK"
SENDER_OK = "250 2.1.0 Sender OK"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients"
NEED_TLS = "530 5.7.0 Must issue a STARTTLS command first"
TOO_MANY_CONNECTIONS = "421 4.7.0 Too many connections, try again later"
TOO_MANY_CONNECTIONS_FROM_YOU = "421 4.7.0 Too many connections from your address, try again later"
LOCAL_ERROR = "451 4.3.0 Local error in processing, try again later"
SPOOL_ERROR = "451 4.3.0 Message not queued: temporary storage failure, try again later"
#: the spool's disk is full (RFC 3463 4.3.1 "mail system full"; Postfix's wording)
INSUFFICIENT_STORAGE = "452 4.3.1 Insufficient system storage, try again later"
SIZE_EXCEEDED = "552 5.3.4 Message size exceeds fixed maximum message size"
LINE_TOO_LONG = "500 5.5.2 Line too long (see RFC5321 4.5.3.1.6)"
TOO_MANY_HOPS = "554 5.4.6 Too many hops (mail loop?)"
NO_VALID_RECIPIENTS = "554 5.5.1 No valid recipients"
SHUTTING_DOWN = "421 4.3.2 Service shutting down, try again later"
PROBE_CONSUMED = "250 2.0.0 Ok: probe consumed"     # a round-trip probe came back


def queued(queue_id: str) -> str:
    """The 250 after DATA, carrying the queue ID as Postfix does."""
    return f"250 2.0.0 Ok: queued as {queue_id}"


_HAS_ENHANCED = re.compile(r"^[245]\d\d[ -][245]\.\d{1,3}\.\d{1,3}\b")
# aiosmtpd's own replies that carry no enhanced status code: (prefix, enhanced status)
_FIXED = (
    ("250 OK", "2.0.0"), ("250 Supported commands", "2.0.0"), ("250 Syntax: ", "2.0.0"),  # HELP
    ("252 ", "2.0.0"),  # VRFY
    ("221 ", "2.0.0"), ("220 Ready to start TLS", "2.0.0"),
    ("500 ", "5.5.2"), ("501 ", "5.5.4"), ("502 ", "5.5.1"), ("503 ", "5.5.1"), ("504 ", "5.5.4"),
    ("530 ", "5.7.0"), ("552 ", "5.3.4"), ("553 ", "5.1.3"), ("554 ", "5.7.0"), ("555 ", "5.5.4"),
    ("454 ", "4.7.0"), ("421 ", "4.7.0"), ("451 ", "4.3.0"), ("452 ", "4.3.1"),
)
_REWRITE = {
    "552 Error: Too much mail data": SIZE_EXCEEDED,
    "552 Error: message size exceeds fixed maximum message size": SIZE_EXCEEDED,
    "530 Must issue a STARTTLS command first": NEED_TLS,
}


def enhance(reply: str) -> str:
    """Add an RFC 3463 enhanced status code to a single-line reply that lacks one.
    Multi-line EHLO parts (``250-...``), the greeting and ``354`` pass through unchanged."""
    if len(reply) < 4 or reply[3] != " " or _HAS_ENHANCED.match(reply):
        return reply
    if reply in _REWRITE:
        return _REWRITE[reply]
    for prefix, status in _FIXED:
        if reply.startswith(prefix):
            return f"{reply[:4]}{status} {reply[4:]}"
    return reply

# Session limits (intake.server, issue 6 item 9): each is sent before the connection is closed.
TOO_MANY_ERRORS = "421 4.7.0 Error: too many errors, closing connection"
DATA_TIMEOUT = "421 4.4.2 Timeout exceeded while reading the message data, closing connection"
DATA_TOO_SLOW = "421 4.4.2 Message data arrives too slowly (minimum data rate), closing connection"
