"""The supervisor <-> worker notify socketpair (gateway/notify_wire.py): frames survive reads that
split them anywhere or join several, over a real socketpair too; a writer whose socket is full
keeps the rest and sends it in order; an unknown byte is an error, not a guess."""
from __future__ import annotations

import asyncio
import socket

import pytest

from gateway.notify_wire import (FrameReader, FrameWriter, WireError, consumed_frame, frame,
                                 parse_consumed)

TOKEN = "0123456789abcdef" * 2
STREAM = (b"R" + frame(b"E", TOKEN.encode()) + b"q" + b"p\x02" + consumed_frame(
    TOKEN, False, "bounced: Undeliverable: mailgate round-trip probe " + TOKEN) + b"q"
    + frame(b"F", TOKEN.encode()) + b"p\x00")
FRAMES = [("R", b""), ("E", TOKEN.encode()), ("q", b""), ("p", b"\x02"),
          ("C", consumed_frame(TOKEN, False, "bounced: Undeliverable: mailgate round-trip probe "
                               + TOKEN)[3:]),
          ("q", b""), ("F", TOKEN.encode()), ("p", b"\x00")]


def test_one_read_of_everything_joined():
    assert FrameReader().feed(STREAM) == FRAMES


@pytest.mark.parametrize("cut", range(1, len(STREAM)))
def test_split_anywhere_in_two_reads(cut):
    r = FrameReader()
    got = r.feed(STREAM[:cut])
    assert r.pending == cut - sum(len(_wire(k, p)) for k, p in got)   # the partial tail is kept
    assert got + r.feed(STREAM[cut:]) == FRAMES
    assert r.pending == 0


def test_byte_by_byte():
    r = FrameReader()
    got = [f for i in range(len(STREAM)) for f in r.feed(STREAM[i:i + 1])]
    assert got == FRAMES


def test_consumed_payload_round_trips_and_bad_ones_are_errors():
    (kind, payload), = FrameReader().feed(consumed_frame(TOKEN, True, ""))
    assert kind == "C" and parse_consumed(payload) == (TOKEN, True, "")
    with pytest.raises(WireError):
        parse_consumed(b"not json")
    with pytest.raises(WireError):
        parse_consumed(b'{"ok": true}')


def test_unknown_kind_is_an_error_and_the_stream_starts_over():
    r = FrameReader()
    with pytest.raises(WireError, match="0x5a after 1 frames"):
        r.feed(b"qZq")
    assert r.pending == 0 and r.feed(b"R") == [("R", b"")]


def test_frame_sizes_are_checked():
    with pytest.raises(ValueError):
        frame(b"p")                      # p carries one byte
    with pytest.raises(ValueError):
        frame(b"E", b"x" * 0x10000)
    with pytest.raises(ValueError):
        frame(b"Z", b"")


async def test_writer_keeps_what_a_full_socket_did_not_take_and_sends_it_in_order():
    """A socketpair with small buffers: many frames written at once do not fit; the writer
    keeps the rest, and the reader, reading in small pieces, gets every frame once, in order."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.setblocking(False)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    w = FrameWriter(a)
    sent = [frame(b"E", f"{i:032x}".encode()) for i in range(3000)]      # ~105 KB
    for f in sent:
        w.send(f)
    assert w.pending > 0                  # the socket took only part of it
    w.send(b"q", droppable=True)          # below the limit: kept, after the others
    r, got = FrameReader(), []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 20
    while len(got) < len(sent) + 1 and loop.time() < deadline:
        try:
            got += r.feed(b.recv(1000))   # reads that split frames
        except BlockingIOError:
            await asyncio.sleep(0.001)    # the writer's add_writer callback runs meanwhile
    assert [k for k, _ in got] == ["E"] * len(sent) + ["q"]
    assert [p for _k, p in got[:-1]] == [f"{i:032x}".encode() for i in range(len(sent))]
    assert w.pending == 0 and w.dropped == 0
    w.close()
    a.close()
    b.close()


async def test_writer_on_a_closed_peer_drops_silently():
    a, b = socket.socketpair()
    a.setblocking(False)
    b.close()
    w = FrameWriter(a)
    w.send(b"q")                           # EPIPE: dropped, no exception
    w.send(frame(b"F", TOKEN.encode()))
    assert w.pending == 0
    a.close()
    w.send(b"q")                           # a closed socket: nothing happens


def _wire(kind: str, payload: bytes) -> bytes:
    return frame(kind.encode(), payload)
