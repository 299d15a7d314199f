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
