"""The notify socketpair between the supervisor and each intake worker (gateway.supervisor,
gateway.worker): frames on a stream socket.

A frame is one kind byte and its payload. Fixed-size kinds: ``R`` (the worker serves), ``q``
(commits: wake the queue manager) with no payload, ``p`` + one byte (a PROXY refusal: the index
of its reason in gateway.intake.proxy.REASONS). Sized kinds carry 2 bytes of length (big
endian, at most MAX_PAYLOAD) and that many bytes of payload:

- supervisor → worker: ``E`` + token (the round-trip probe awaits it), ``F`` + token (the check
  that awaited it ended), both ASCII;
- worker → supervisor: ``C`` + JSON ``{"token": str, "ok": bool, "detail": str}`` (the worker's
  intake consumed a return (ok) or a bounce (detail ``bounced: SUBJECT``) of an awaited token).

A read may end inside a frame or hold several: ``FrameReader.feed`` keeps the partial tail for
the next read. A write may be partial on a full socket: ``FrameWriter`` keeps the rest and
sends it when the socket is writable again, in order. End of file means the other process is
gone (both sides handle it as before).
"""
from __future__ import annotations

import asyncio
import json
import socket

__all__ = ["FrameReader", "FrameWriter", "WireError", "frame", "consumed_frame", "parse_consumed",
           "MAX_PAYLOAD"]

MAX_PAYLOAD = 0xFFFF
FIXED = {ord("R"): 0, ord("q"): 0, ord("p"): 1}     # kind -> payload bytes
SIZED = frozenset(b"EFC")
BUFFER_LIMIT = 1 << 20    # bytes a writer holds before it drops droppable frames (q, p)


class WireError(ValueError):
    """A byte that starts no known frame: the stream is out of step (a bug on one side)."""


def frame(kind: bytes, payload: bytes = b"") -> bytes:
    """One frame: ``kind`` (one byte) + payload; a sized kind gets its 2-byte length. Raises
    ValueError for a payload of the wrong size."""
    k = kind[0]
    if k in FIXED:
        if len(payload) != FIXED[k]:
            raise ValueError(f"frame {kind!r} carries {FIXED[k]} bytes, got {len(payload)}")
        return kind + payload
    if k not in SIZED:
        raise ValueError(f"unknown frame kind {kind!r}")
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"frame payload of {len(payload)} bytes (at most {MAX_PAYLOAD})")
    return kind + len(payload).to_bytes(2, "big") + payload


def consumed_frame(token: str, ok: bool, detail: str) -> bytes:
    """The ``C`` frame a worker sends for what its probe mailbox consumed (detail cut to fit)."""
    return frame(b"C", json.dumps({"token": token, "ok": ok, "detail": detail[:1000]}).encode())


def parse_consumed(payload: bytes) -> tuple[str, bool, str]:
    """(token, ok, detail) of a ``C`` payload; raises WireError if it is not one."""
    try:
        d = json.loads(payload)
        return str(d["token"]), bool(d["ok"]), str(d.get("detail", ""))
    except (ValueError, KeyError, TypeError) as e:
        raise WireError(f"bad C frame: {e}") from None


class FrameReader:
    """Splits a byte stream into frames across reads."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """The frames ``data`` completes, in order, as (kind as a 1-character str, payload); an
        incomplete last frame waits for the next feed. Raises WireError on an unknown kind byte
        (the buffer is then discarded: nothing after it can be read in step)."""
        self._buf += data
        out, buf, i = [], self._buf, 0
        while i < len(buf):
            k = buf[i]
            if k in FIXED:
                end = i + 1 + FIXED[k]
                if end > len(buf):
                    break
                out.append((chr(k), bytes(buf[i + 1:end])))
            elif k in SIZED:
                if i + 3 > len(buf):
                    break
                end = i + 3 + int.from_bytes(buf[i + 1:i + 3], "big")
                if end > len(buf):
                    break
                out.append((chr(k), bytes(buf[i + 3:end])))
            else:
                self._buf = bytearray()
                raise WireError(f"unknown frame kind byte 0x{k:02x} after {len(out)} frames")
            i = end
        del buf[:i]
        return out

    @property
    def pending(self) -> int:
        """Bytes of an incomplete frame held for the next read."""
        return len(self._buf)


class FrameWriter:
    """Writes frames to a non-blocking stream socket from the event loop: what the socket does
    not take now is kept and sent, in order, when it is writable (loop.add_writer). A broken
    socket drops what is written (the reader on that side sees end of file)."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self._out = bytearray()
        self._watching = False
        self.dropped = 0          # droppable frames left out while BUFFER_LIMIT bytes waited

    @property
    def pending(self) -> int:
        """Bytes written but not yet taken by the socket."""
        return len(self._out)

    def send(self, data: bytes, droppable: bool = False) -> None:
        """Write ``data`` (whole frames). ``droppable`` (q, p): left out while the socket has not
        taken BUFFER_LIMIT bytes already waiting (the supervisor's scan finds commits anyway)."""
        if self.sock.fileno() < 0:
            return
        if self._out:
            if droppable and len(self._out) >= BUFFER_LIMIT:
                self.dropped += 1
            else:
                self._out += data
            return
        try:
            n = self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            n = 0
        except OSError:
            return
        if n < len(data):
            self._out += data[n:]
            self._watch()

    def _watch(self) -> None:
        if not self._watching:
            asyncio.get_running_loop().add_writer(self.sock.fileno(), self._flush)
            self._watching = True

    def _flush(self) -> None:
        try:
            n = self.sock.send(self._out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            n = len(self._out)
        del self._out[:n]
        if not self._out:
            self._unwatch()

    def close(self) -> None:
        """Drop what waits and stop watching the socket (call before closing it)."""
        self._out.clear()
        self._unwatch()

    def _unwatch(self) -> None:
        if self._watching:
            self._watching = False
            if self.sock.fileno() >= 0:
                asyncio.get_running_loop().remove_writer(self.sock.fileno())
