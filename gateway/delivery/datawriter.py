"""The DATA phase of a delivery, written by us instead of aiosmtplib's ``data()``.

aiosmtplib's ``data()`` runs two regex passes over every body (line-end normalisation and
dot-stuffing), then writes the body and the final dot in one call: a quarter of the delivery
CPU at 64 KiB, and no moment left to check a claim's deadline before the dot (the fencing rule,
../shared/CLUSTER-NOTES.md "Fencing", issue 9 item 5). ``send_data()`` here:

1. sends ``DATA`` and expects 354 (RFC 5321 §4.1.1.4, §4.5.3.2.2: ``command_timeout``);
2. writes the body but its last chunk in chunks of ``CHUNK`` bytes with ONE dot-stuffing pass
   (RFC 5321 §4.5.2: a line starting with "." gets one more "."), waiting for the socket to
   drain whenever its buffer is over the high-water mark (``block_timeout`` per wait,
   §4.5.3.2.5), so about one chunk sits in our send buffer;
3. calls ``before_final_dot()``: False (or an exception) → neither the last chunk nor the final
   ``CRLF . CRLF`` is sent and the connection is closed, so the server discards the transaction
   (§4.1.1.4: the message exists only once the dot is acknowledged); the caller reports a
   deferral (FinalDotWithheld);
4. writes the last chunk and ``. CRLF`` in one write (a message under 256 KiB: one write for
   the whole body, as aiosmtplib) and reads the final reply (``final_timeout``, §4.5.3.2.6).

The stored bytes are sent on the wire form SMTP needs: every line ends in CRLF (a bare LF or a
bare CR becomes CRLF, as aiosmtplib and Postfix's smtp client do: RFC 5321 §2.3.8) and the body
ends in CRLF. Mail that intake stored with only CRLF line ends (nearly all of it) skips the
normalisation: ``wire_body()`` counts the CR, LF and CRLF bytes (C speed) and only rewrites
when they differ.

The EHLO/STARTTLS/MAIL/RCPT phases stay on the aiosmtplib connection; this module drives that
connection's protocol object (``smtp.protocol``: ``execute_command``, ``write``,
``read_response``, ``_drain_helper``, ``_paused`` and ``_response_pending``, checked against aiosmtplib
5.1.3; ``tests/gateway/delivery/test_datawriter.py`` pins them). Errors are aiosmtplib's
exceptions, so the transport's handling stays one path.
"""
from __future__ import annotations

import asyncio
import inspect
import re
from typing import Awaitable, Callable

import aiosmtplib
from aiosmtplib.errors import (SMTPDataError, SMTPReadTimeoutError, SMTPServerDisconnected,
                              SMTPTimeoutError)

#: Bytes per write (and per dot-stuffing slice): large writes, bounded send buffer.
CHUNK = 256 * 1024

_LINE_ENDS = re.compile(rb"\r\n|\n|\r(?!\n)")

FinalDotCheck = Callable[[], "bool | Awaitable[bool]"]


class FinalDotWithheld(Exception):
    """``before_final_dot()`` said no (or failed): the final dot was not sent, the connection
    is closed, the server discards the transaction. ``reason`` says why (for the deferral)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class BodyTimeout(SMTPTimeoutError):
    """A chunk of the body did not drain within ``block_timeout`` s (before the final dot: the
    outcome is known, nothing was accepted)."""


class FinalReplyTimeout(SMTPReadTimeoutError):
    """No reply within ``final_timeout`` s after the final dot: the outcome is unknown (the
    server may have taken the message; a retry may duplicate it, RFC 1047)."""


def wire_body(data: bytes | bytearray) -> bytes | bytearray:
    """``data`` with every line ending in CRLF (bare LF and bare CR → CRLF) and a final CRLF
    (added if missing; b"" → b"\\r\\n", as aiosmtplib does), NOT dot-stuffed. Returns ``data``
    itself (no copy) when it already is in that form."""
    crlf = data.count(b"\r\n")
    if data.count(b"\n") != crlf or data.count(b"\r") != crlf:
        data = _LINE_ENDS.sub(b"\r\n", bytes(data))
    if not data.endswith(b"\r\n"):
        data = bytes(data) + b"\r\n"
    return data


def stuffed_chunks(data, chunk: int = CHUNK):
    """Yield the dot-stuffed wire form of ``data`` (already CRLF, from ``wire_body``) in slices
    of about ``chunk`` bytes: one pass, every "." at the start of a line doubled (RFC 5321
    §4.5.2). A line start split across two slices (the slice ends in LF) is carried over."""
    view = memoryview(data)
    n, pos, bol = len(view), 0, True
    while pos < n:
        seg = bytes(view[pos:pos + chunk])
        pos += len(seg)
        if bol and seg[:1] == b".":
            seg = b"." + seg
        yield seg.replace(b"\n.", b"\n..")
        bol = seg.endswith(b"\n")


async def send_data(smtp: aiosmtplib.SMTP, data, *, before_final_dot: FinalDotCheck | None = None,
                    command_timeout: float = 300.0, block_timeout: float = 180.0,
                    final_timeout: float = 600.0) -> aiosmtplib.SMTPResponse:
    """Send the DATA phase of the open transaction on ``smtp`` (MAIL and RCPT accepted) with the
    stored message ``data`` (bytes; our Received: header first); return the final reply (2xx).

    Timeouts in seconds: ``command_timeout`` for the 354, ``block_timeout`` per written chunk,
    ``final_timeout`` for the reply to the final dot (RFC 5321 §4.5.3.2).

    Raises: FinalDotWithheld (dot not sent, connection closed); SMTPDataError (not 354, or a
    non-2xx final reply); BodyTimeout, or SMTPServerDisconnected (connection closed), before
    the dot (nothing accepted); FinalReplyTimeout after the dot (outcome unknown: the server
    may hold the message).
    """
    proto = smtp.protocol
    if proto is None or not smtp.is_connected:
        raise SMTPServerDisconnected("Connection lost")
    start = await proto.execute_command(b"DATA", timeout=command_timeout)
    if start.code != 354:
        raise SMTPDataError(start.code, start.message)
    body = wire_body(data)
    try:
        # an early reply (a 5xx mid-body) must be kept for the read after the dot
        proto._response_pending = True      # noqa: SLF001 - aiosmtplib drops unsolicited data
        chunks = stuffed_chunks(body)
        last = next(chunks)                 # wire_body's result is never empty
        for seg in chunks:                  # all but the last chunk; waits only when the
            proto.write(last)               # socket's buffer is over its high-water mark
            if proto._paused:               # noqa: SLF001
                await asyncio.wait_for(proto._drain_helper(), block_timeout)   # noqa: SLF001
            last = seg
    except (asyncio.TimeoutError, TimeoutError):
        smtp.close()
        raise BodyTimeout(f"body not taken within {block_timeout:g} s") from None
    except (ConnectionError, OSError) as e:
        smtp.close()
        raise SMTPServerDisconnected(f"Connection lost during DATA: {e}") from e
    except SMTPServerDisconnected:
        smtp.close()
        raise
    del body
    reason = await _check(before_final_dot)
    if reason:
        smtp.close()
        raise FinalDotWithheld(reason)
    try:
        proto.write(last + b".\r\n")     # the last chunk and the dot: one write
    except SMTPServerDisconnected:
        smtp.close()
        raise
    try:
        reply = await proto.read_response(timeout=final_timeout)
    except SMTPTimeoutError as e:
        smtp.close()
        raise FinalReplyTimeout(f"no reply to the final dot within {final_timeout:g} s") from e
    except SMTPServerDisconnected:
        smtp.close()
        raise
    if not 200 <= reply.code < 300:
        raise SMTPDataError(reply.code, reply.message)
    return reply


async def _check(before_final_dot: FinalDotCheck | None) -> str:
    """'' if the dot may go; else the reason it may not."""
    if before_final_dot is None:
        return ""
    try:
        ok = before_final_dot()
        if inspect.isawaitable(ok):
            ok = await ok
    except Exception as e:      # a check that cannot answer is a no: never a blind dot
        return f"final-dot check failed ({type(e).__name__}: {e})"[:200]
    return "" if ok else "the claim's deadline passed before the final dot"
