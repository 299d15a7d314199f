"""A raw SMTP client over asyncio streams, for tests that need to control every byte (a PROXY
header before the greeting, a session that stops inside DATA): ``await RawSMTP.connect(port,
prefix)``, ``reply()`` (one whole reply, all its lines; b"" once the server has closed),
``cmd(line)`` (str or bytes, CRLF added)."""
from __future__ import annotations

import asyncio


class RawSMTP:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.r, self.w = reader, writer

    @classmethod
    async def connect(cls, port: int, prefix: bytes = b"", host: str = "127.0.0.1"):
        """Connect and send ``prefix`` (a PROXY header, or bytes before the greeting) at once;
        the greeting is left unread."""
        r, w = await asyncio.open_connection(host, port)
        if prefix:
            w.write(prefix)
        return cls(r, w)

    async def reply(self, timeout: float = 10.0) -> bytes:
        """One whole reply (all its lines); b"" if the server closed the connection."""
        out = b""
        while True:
            line = await asyncio.wait_for(self.r.readline(), timeout)
            out += line
            if not line or line[3:4] == b" ":
                return out

    async def cmd(self, line: str | bytes) -> bytes:
        self.w.write((line.encode() if isinstance(line, str) else line) + b"\r\n")
        return await self.reply()

    async def close(self) -> None:
        self.w.close()
        try:
            await self.w.wait_closed()
        except OSError:
            pass
