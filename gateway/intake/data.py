"""Reading the DATA section of an SMTP transaction (RFC 5321 §4.1.1.4, §4.5.2), in chunks.

aiosmtpd reads DATA one line at a time (a third of the CPU at 64 KiB messages, and about four
times the message size in memory). This reader takes the section in chunks of up to CHUNK bytes
as they arrive and builds the message once, in one ``bytearray``: the content is unstuffed, size-
and line-checked chunk by chunk, so the only whole-message buffer is the result (plus the
bytearray's growth slack, at most 1/8). The stream is read as if it began with the CRLF that
ended the DATA command line, so the terminator is always CRLF "." CRLF, the empty message
included. Only that sequence ends the data (a bare LF "." never does: no SMTP smuggling,
CVE-2023-51764 class). A transparency dot is removed from every line that starts with one (RFC
5321 §4.5.2), a bare LF counting as a line end as in Postfix (clients such as smtplib dot-stuff
after a bare LF too); what follows the terminator (pipelined commands) is put back in the reader.
Lines longer than ``max_line`` (a bare LF ends a line) make the message LineTooLong.

An oversized or over-long message is read to its end and discarded as it arrives (bounded
memory), then reported, so the reply comes after the final dot (RFC 5321 §4.2.5).

Slow clients (RFC 5321 §4.5.3.2.6, §4.5.3.2.7): ``read_timeout`` bounds each wait for bytes,
``total_timeout`` the whole section, and ``min_rate`` the average: ``grace`` seconds after the
354, a client must have sent ``min_rate`` bytes per second since (Postfix's smtpd_min_data_rate:
every byte received extends the deadline by 1/min_rate s). Each raises DataTimeout; the caller
answers 421 4.4.2 and closes, since the rest of the data is still in flight.
"""
from __future__ import annotations

import asyncio
import time

TERMINATOR = b"\r\n.\r\n"
CHUNK = 256 * 1024          # bytes asked of the reader at a time (asyncio reads 256 KiB at most)


class DataTooLarge(Exception):
    """The message exceeded ``limit`` bytes; it has been read to its end and discarded."""


class LineTooLong(Exception):
    """A line of the message exceeded ``max_line`` bytes; it has been read to its end."""


class DataTimeout(Exception):
    """The client was too slow; ``reason`` is "idle" (no byte for read_timeout s), "total"
    (total_timeout s passed) or "rate" (under min_rate bytes/s after the grace period)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _Content:
    """The unstuffed content built chunk by chunk: transparency, size and line checks."""

    def __init__(self, limit: int, max_line: int | None):
        self.out: bytearray | None = bytearray()
        self.limit, self.max_line = limit, max_line
        self.size = 0
        self.line = 0               # bytes of the current (unfinished) line so far
        self.bol = True             # the next byte starts a line
        self.too_large = self.too_long = False

    def feed(self, seg: bytes) -> None:
        """Add ``seg``: wire bytes before the terminator (still dot-stuffed)."""
        if not seg:
            return
        if self.bol and seg[:1] == b".":
            seg = seg[1:]
        ends_line = seg.endswith(b"\n")
        seg = seg.replace(b"\n.", b"\n")       # returns seg itself when there is no dot to remove
        self.bol = ends_line
        self.size += len(seg)
        if self.size > self.limit:
            self.too_large, self.out = True, None
        if self.out is None:
            return
        if self.max_line is not None and not self._lines_fit(seg):
            self.too_long, self.out = True, None
            return
        self.out += seg

    def _lines_fit(self, seg: bytes) -> bool:
        """Update the current line length; False if a line (with its LF) exceeds max_line."""
        n, m = len(seg), self.max_line
        if self.line + n < m:                       # no line can end over the limit in here
            last = seg.rfind(b"\n")
            self.line = n - last - 1 if last >= 0 else self.line + n
            return True
        p = -1 - self.line                          # index of the last LF (virtual, before seg)
        while True:
            if p + m >= n:                          # the current line may still end in time
                p = max(p, seg.rfind(b"\n", max(p + 1, 0)))
                self.line = n - p - 1
                return True
            q = seg.rfind(b"\n", max(p + 1, 0), p + m + 1)
            if q == -1:
                return False                        # m bytes of this line and no LF among them
            p = q


async def read_data(reader: asyncio.StreamReader, limit: int, max_line: int | None = None, *,
                    read_timeout: float | None = None, total_timeout: float | None = None,
                    min_rate: float = 0.0, grace: float = 0.0) -> bytearray:
    """The message content (dot-unstuffed, ending in CRLF unless empty) read from ``reader``
    right after the 354 reply. ``limit`` is the most content bytes accepted, ``max_line`` the
    longest line in bytes with its line end (None: no limit); timeouts in seconds (None: none),
    ``min_rate`` in bytes per second (0: no minimum), ``grace`` in seconds.

    Raises DataTooLarge or LineTooLong (stream positioned after the terminator), DataTimeout,
    asyncio.IncompleteReadError if the client disconnects before the terminator.
    """
    content = _Content(limit, max_line)
    pending, skip = b"\r\n", 2      # the CRLF that ended "DATA": part of the terminator, not data
    start = time.monotonic()
    received = 0
    while True:
        i = pending.find(TERMINATOR)
        if i >= 0:
            content.feed(pending[skip:i + 2])
            if len(pending) > i + 5:
                reader._buffer[0:0] = pending[i + 5:]  # noqa: SLF001 - pipelined commands go back
            break
        cut = len(pending) - (len(TERMINATOR) - 1)    # the tail may begin a split terminator
        if cut > skip:
            content.feed(pending[skip:cut])
            pending, skip = pending[cut:], 0
        chunk = await _read(reader, start, received, read_timeout, total_timeout, min_rate, grace)
        received += len(chunk)
        pending += chunk
    if content.too_large:
        raise DataTooLarge()
    if content.too_long:
        raise LineTooLong()
    return content.out


async def _read(reader, start, received, read_timeout, total_timeout, min_rate, grace) -> bytes:
    """The next chunk; DataTimeout when the earliest applicable deadline passes first."""
    now = time.monotonic()
    limits = []
    if read_timeout is not None:
        limits.append((read_timeout, "idle"))
    if total_timeout is not None:
        limits.append((start + total_timeout - now, "total"))
    if min_rate > 0:
        limits.append((start + grace + received / min_rate - now, "rate"))
    wait, reason = min(limits, default=(None, ""))
    if wait is not None and wait <= 0:
        raise DataTimeout(reason)
    try:
        async with asyncio.timeout(wait):
            chunk = await reader.read(CHUNK)
    except TimeoutError:
        raise DataTimeout(reason) from None
    if not chunk:
        raise asyncio.IncompleteReadError(b"", None)
    return chunk
