"""The bulk DATA reader: terminator, transparency dots, pipelined leftovers, size limit, and
every corpus message dot-stuffed as a client would send it, fed in awkward chunk sizes."""
import asyncio

import pytest

from gateway.intake.data import DataTooLarge, read_data
from tests.conftest import corpus_files


def run(chunks, limit=1 << 20):
    async def go():
        r = asyncio.StreamReader(limit=1001)
        for c in chunks:
            r.feed_data(c)
        r.feed_eof()
        try:
            out = await read_data(r, limit)
        except DataTooLarge:
            out = DataTooLarge
        return out, await r.read()
    return asyncio.run(go())


def stuff(msg: bytes) -> bytes:
    """What an SMTP client sends for ``msg`` (RFC 5321 §4.5.2), CRLF line ends."""
    if msg and not msg.endswith(b"\r\n"):
        msg += b"\r\n"
    body = (b"\r\n" + msg).replace(b"\r\n.", b"\r\n..")[2:]
    return body + b".\r\n"


def test_empty_message_and_pipelined_command_left_in_the_stream():
    assert run([b".\r\nQUIT\r\n"]) == (b"", b"QUIT\r\n")


def test_transparency_dots_removed_from_every_line_including_the_first():
    assert run([b"..one\r\ntwo\r\n...three\r\n.\r\n"])[0] == b".one\r\ntwo\r\n..three\r\n"


def test_only_crlf_dot_crlf_ends_the_data():
    smuggle = b"a\r\n.\nMAIL FROM:<x>\r\nb\n.\r\nc\r\n.\r\n"
    data, rest = run([smuggle])
    # neither LF "." LF nor LF "." CRLF ends it; a line starting with "." (after CRLF or a bare
    # LF) loses that dot
    assert data == b"a\r\n\nMAIL FROM:<x>\r\nb\n\r\nc\r\n" and rest == b""


def test_terminator_split_across_chunks():
    assert run([b"abc\r", b"\n", b".", b"\r", b"\nRSET\r\n"]) == (b"abc\r\n", b"RSET\r\n")


def test_oversized_is_drained_to_the_terminator_and_reported():
    data, rest = run([b"x" * 3000, b"\r\n" + b"y" * 5000 + b"\r\n.\r\nQUIT\r\n"], limit=1000)
    assert data is DataTooLarge and rest == b"QUIT\r\n"


def test_exactly_at_the_limit_is_accepted():
    assert run([b"x" * 998 + b"\r\n.\r\n"], limit=1000)[0] == b"x" * 998 + b"\r\n"


def test_client_disconnect_before_the_dot():
    with pytest.raises(asyncio.IncompleteReadError):
        run([b"partial message\r\n"])


@pytest.mark.parametrize("path", corpus_files()[::7], ids=lambda p: p.name)
def test_corpus_round_trip_in_small_chunks(path):
    msg = path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")
    wire = stuff(msg)
    chunks = [wire[i:i + 777] for i in range(0, len(wire), 777)]
    expected = msg if msg.endswith(b"\r\n") or not msg else msg + b"\r\n"
    assert run(chunks, limit=64 << 20)[0] == expected


def test_dot_after_bare_lf_is_unstuffed_like_after_crlf():
    assert run([b"a\n..b\nc\r\n..d\r\n.\r\n"])[0] == b"a\n.b\nc\r\n.d\r\n"


def test_line_limit_counts_bare_lf_as_a_line_end():
    from gateway.intake.data import LineTooLong

    async def go(wire, max_line):
        r = asyncio.StreamReader(limit=1001)
        r.feed_data(wire)
        r.feed_eof()
        try:
            return await read_data(r, 1 << 20, max_line)
        except LineTooLong:
            return LineTooLong
    ok = b"x" * 99 + b"\n" + b"y" * 98 + b"\r\n"            # lines of 100 and 100 bytes
    assert asyncio.run(go(ok + b".\r\n", 100)) == ok
    assert asyncio.run(go(b"x" * 99 + b"\r\n.\r\n", 100)) is LineTooLong  # 101 with its CRLF


# -- chunked reading: the same content whatever the chunking, one buffer, slow clients ----------
import random  # noqa: E402
import re  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

from gateway.intake.data import DataTimeout, LineTooLong  # noqa: E402

_LF_DOT = re.compile(rb"(?<!\r)\n\.")


def unstuffed_reference(content: bytes) -> bytes:
    """The previous whole-message implementation: dots after CRLF, then after bare LF."""
    body = (b"\r\n" + content).replace(b"\r\n.", b"\r\n")
    return _LF_DOT.sub(b"\n", body[2:])


async def fed(wire: bytes, chunk: int, pause: float = 0.0, **kw):
    """read_data() while another task feeds ``wire`` in ``chunk``-byte pieces, as a socket would."""
    r = asyncio.StreamReader(limit=1001)

    async def feed():
        for i in range(0, len(wire), chunk):
            r.feed_data(wire[i:i + chunk])
            await asyncio.sleep(pause)
        r.feed_eof()
    task = asyncio.create_task(feed())
    try:
        return await read_data(r, kw.pop("limit", 1 << 20), kw.pop("max_line", None), **kw)
    finally:
        task.cancel()


def test_random_messages_in_random_chunks_match_the_whole_message_reference():
    rng = random.Random(6)
    for _ in range(3000):
        content = bytes(rng.choice(b"\r\n.ab") for _ in range(rng.randint(0, 40))) + b"\r\n"
        wire = content.replace(b"\r\n.\r\n", b"\r\n..\r\n")
        if (b"\r\n" + wire + b".\r\n").find(b"\r\n.\r\n") != len(wire):
            continue                          # a terminator inside: not a complete message
        max_line = rng.choice([None, 3, 6, 1000])
        expected = unstuffed_reference(wire)
        if max_line is not None and max(map(len, expected.split(b"\n"))) + 1 > max_line:
            expected = LineTooLong
        try:
            got = asyncio.run(fed(wire + b".\r\n", rng.randint(1, 9), max_line=max_line))
        except LineTooLong:
            got = LineTooLong
        assert got == expected, (wire, max_line)


def test_a_large_message_is_held_once_in_memory():
    line = b"y" * 76 + b"\r\n"
    wire = b"Subject: big\r\n\r\n" + line * (8 * 1024 * 1024 // len(line)) + b".\r\n"
    async def measured():
        tracemalloc.start()
        try:
            out = await fed(wire, 64 * 1024, limit=64 << 20, max_line=65536)
            return out, tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    content, peak = asyncio.run(measured())
    assert len(content) == len(wire) - 3
    assert peak < 1.3 * len(wire), peak / len(wire)    # the content, its slack, a few chunks


def test_no_byte_for_read_timeout_raises_idle():
    async def go():
        r = asyncio.StreamReader()
        r.feed_data(b"Subject: x\r\n\r\npartial")
        return await read_data(r, 1 << 20, read_timeout=0.2)
    with pytest.raises(DataTimeout) as e:
        asyncio.run(go())
    assert e.value.reason == "idle"


def test_below_the_minimum_rate_after_the_grace_period_raises_rate():
    with pytest.raises(DataTimeout) as e:                 # 1 byte per 0.05 s = 20 bytes/s
        asyncio.run(fed(b"x" * 400 + b"\r\n.\r\n", 1, pause=0.05, min_rate=500, grace=0.3,
                        read_timeout=5))
    assert e.value.reason == "rate"


def test_a_fast_message_is_not_cut_by_the_rate_or_the_timeouts():
    wire = b"a" * 70 + b"\r\n"
    assert asyncio.run(fed(wire * 2000 + b".\r\n", 4096, min_rate=500, grace=1.0,
                           read_timeout=5, total_timeout=30)) == wire * 2000


def test_the_whole_upload_is_bounded_by_total_timeout():
    start = time.monotonic()
    with pytest.raises(DataTimeout) as e:             # bytes keep coming, but too long in all
        asyncio.run(fed(b"x" * 2000 + b"\r\n.\r\n", 10, pause=0.01, total_timeout=0.3,
                        read_timeout=5))
    assert e.value.reason == "total" and time.monotonic() - start < 30
