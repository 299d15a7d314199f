"""The SMTP listener: aiosmtpd's protocol class run in the application's own event loop, with the
limits aiosmtpd lacks (LIBRARY-NOTES.md): connections in total and per client address
(421 4.7.0 beyond), concurrent DATA transfers (each buffers the whole message in memory), a
DATA timeout separate from the command timeout, and an enhanced status code on every reply.
Policy lives in intake.handler; this module owns only the session mechanics.
"""
from __future__ import annotations

import asyncio
import ssl
from collections import Counter

from aiosmtpd.smtp import MISSING, SMTP

from gateway.config import Config, parse_listen
from gateway.intake import replies
from gateway.intake.data import DataTooLarge, LineTooLong, read_data


class ConnectionLimits:
    """Counts open SMTP sessions, in total and per client IP."""

    def __init__(self, total: int, per_client: int):
        self.total, self.per_client = total, per_client
        self.open = 0
        self.by_ip: Counter[str] = Counter()

    def acquire(self, ip: str) -> str | None:
        """Take a slot for ``ip``; return None, or the 421 reply to send if over a limit."""
        if self.open >= self.total:
            return replies.TOO_MANY_CONNECTIONS
        if self.by_ip[ip] >= self.per_client:
            return replies.TOO_MANY_CONNECTIONS_FROM_YOU
        self.open += 1
        self.by_ip[ip] += 1
        return None

    def release(self, ip: str) -> None:
        self.open -= 1
        self.by_ip[ip] -= 1
        if self.by_ip[ip] <= 0:
            del self.by_ip[ip]


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with mailgate's session limits. One instance per connection."""

    def __init__(self, handler, *, limits: ConnectionLimits, data_slots: asyncio.Semaphore,
                 data_timeout: float, line_length_limit: int, **kw):
        self.line_length_limit = line_length_limit  # read by SMTP.__init__ for the stream limit
        self._max_line = line_length_limit          # longest message line (intake.data)
        super().__init__(handler, **kw)
        self._limits = limits
        self._data_slots = data_slots
        self._data_timeout = data_timeout
        self._slot_ip: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the STARTTLS re-wrap
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else ""
            refusal = self._limits.acquire(ip)
            if refusal is not None:
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self._slot_ip = ip
        super().connection_made(transport)

    def connection_lost(self, error: Exception | None) -> None:
        if self._slot_ip is None:  # refused in connection_made: aiosmtpd never started
            return
        self._limits.release(self._slot_ip)
        self._slot_ip = None
        super().connection_lost(error)

    async def push(self, status) -> None:
        if isinstance(status, str):
            status = replies.enhance(status)
        await super().push(status)

    async def smtp_DATA(self, arg: str) -> None:
        """DATA, read in bulk (gateway.intake.data) instead of aiosmtpd's line-by-line loop;
        the checks before 354 and the handler call after the dot are aiosmtpd's own."""
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        async with self._data_slots:
            self._reset_timeout(self._data_timeout)
            try:
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                try:
                    content = await read_data(self._reader, self.data_size_limit or (1 << 62),
                                              self._max_line)
                except DataTooLarge:
                    self._set_post_data_state()
                    await self.push(replies.SIZE_EXCEEDED)
                    return
                except LineTooLong:
                    self._set_post_data_state()
                    await self.push(replies.LINE_TOO_LONG)
                    return
                except asyncio.IncompleteReadError:  # the client went away before the dot
                    return
                self.envelope.content = self.envelope.original_content = content
                status = await self._call_handler_hook("DATA")
                self._set_post_data_state()
                await self.push("250 OK" if status is MISSING else status)
            finally:
                if self.transport is not None:
                    self._reset_timeout()

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH not supported: this is an MX, not a submission server")


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    """Server TLS context from smtp.tls_cert/tls_key, or None if STARTTLS is not configured."""
    if not cfg.smtp.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cfg.smtp.tls_cert), str(cfg.smtp.tls_key or cfg.smtp.tls_cert))
    return ctx


class IntakeServer:
    """Listens on every ``smtp.listen`` address in the running loop; ``await start()``,
    ``await stop(grace)``."""

    def __init__(self, cfg: Config, handler):
        self.cfg, self.handler = cfg, handler
        self.limits = ConnectionLimits(cfg.smtp.max_connections, cfg.smtp.max_connections_per_client)
        self.data_slots = asyncio.Semaphore(cfg.smtp.max_concurrent_data)
        self._tls = tls_context(cfg)
        self._servers: list[asyncio.base_events.Server] = []

    def _protocol(self) -> GatewaySMTP:
        s = self.cfg.smtp
        return GatewaySMTP(
            self.handler, limits=self.limits, data_slots=self.data_slots,
            data_timeout=s.data_timeout, line_length_limit=s.max_line_length,
            hostname=self.cfg.server.hostname, ident="ESMTP mailgate",
            data_size_limit=s.max_message_size, enable_SMTPUTF8=True, decode_data=False,
            tls_context=self._tls, require_starttls=s.require_tls and self._tls is not None,
            timeout=s.command_timeout, auth_require_tls=True)

    async def start(self) -> list[tuple[str, int]]:
        """Bind every listener; return the bound (host, port) pairs (port 0 → the real one)."""
        loop = asyncio.get_running_loop()
        bound = []
        for spec in self.cfg.smtp.listen:
            host, port = parse_listen(spec)
            srv = await loop.create_server(self._protocol, host, port, reuse_address=True)
            self._servers.append(srv)
            bound.extend(sock.getsockname()[:2] for sock in srv.sockets)
        return bound

    @property
    def serving(self) -> bool:
        """True while every listener accepts connections (for /healthz)."""
        return bool(self._servers) and all(s.is_serving() for s in self._servers)

    async def stop(self) -> None:
        """Stop accepting; sessions already inside DATA finish their commit first."""
        for srv in self._servers:
            srv.close()
        self._servers.clear()
        await self.handler.drain()
