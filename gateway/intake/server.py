"""The SMTP listener: aiosmtpd's protocol class run in the application's own event loop, with the
limits aiosmtpd lacks (LIBRARY-NOTES.md), and an enhanced status code on every reply:

- connections in total and per client address (421 4.7.0 beyond);
- concurrent DATA transfers in total and per client address (each holds its whole message in
  memory): a session over either limit waits for a slot before its 354, so one address's slow
  sessions cannot hold the slots of every other sender;
- slow DATA (intake.data): a per-read timeout, a whole-upload timeout and a minimum average rate
  after a grace period; the client gets 421 4.4.2 and the connection is closed;
- Postfix's error and junk-command limits: after ``hard_error_limit`` error replies (4xx/5xx for
  the client's doing, e.g. unknown recipients, bad syntax) the client gets 421 4.7.0 and the
  connection is closed; NOOP/RSET/VRFY/EXPN/HELP beyond ``junk_command_limit`` each count as an
  error. Both counts restart after a message is queued (Postfix: "without delivering mail");
- on a PROXY listener (``[[smtp.listeners]]`` with ``proxy_protocol``, gateway.intake.proxy): a
  peer outside ``proxy_trusted`` is closed at once, a connection without a valid header within
  ``proxy_timeout`` is closed without a greeting, and the session belongs to the header's client
  (its per-client slot is taken after the header): ``session.client_ip``, ``session.proxy_ip``.

Policy lives in intake.handler; this module owns only the session mechanics.
"""
from __future__ import annotations

import asyncio
import functools
import ssl
from collections import Counter

from aiosmtpd.smtp import MISSING, SMTP
from email._header_value_parser import get_addr_spec, get_angle_addr   # as aiosmtpd.smtp
from email.errors import HeaderParseError

from gateway.config import Config, SmtpConfig, SmtpListener, parse_listen
from gateway.intake import proxy, replies
from gateway.intake.proxy import ProxyPolicy
from gateway.intake.data import DataTimeout, DataTooLarge, LineTooLong, read_data
from gateway.intake.fastinit import init_smtp
from gateway.intake.limits import ConnectionLimits, DataSlots

#: Replies "452 4.5.3 Too many recipients" that do not count as errors (Postfix's
#: smtpd_recipient_overshoot_limit): a client may send more than max_recipients and retry the rest.
RECIPIENT_OVERSHOOT = 1000
#: listen(2) backlog of sockets bound by the supervisor for intake workers (gateway.supervisor):
#: connections wait there while every worker is busy or one restarts (capped by somaxconn).
LISTEN_BACKLOG = 511


class GatewaySMTP(SMTP):
    """aiosmtpd's SMTP protocol with mailgate's session limits. One instance per connection."""

    def __init__(self, handler, *, limits: ConnectionLimits, data_slots: DataSlots,
                 smtp: SmtpConfig, proxy_policy: ProxyPolicy | None = None, **kw):
        self.line_length_limit = smtp.max_line_length  # read by SMTP.__init__ for the stream limit
        self._proxy = proxy_policy           # None: not a PROXY listener
        self._client_ip: str | None = None   # the client: the peer, or the PROXY header's source
        self._proxy_ip: str | None = None    # the proxy that sent the header (its peer address)
        self._peer_ip = ""
        self._started = False                # aiosmtpd runs this connection (not refused at once)
        self._holds_total = False
        self._slot_ip: str | None = None     # the client slot held (ConnectionLimits, DataSlots)
        self._proxy_outcome: str | None = None   # "accepted", "limit" or a proxy.REASONS word
        if proxy_policy is not None:
            kw["proxy_protocol_timeout"] = proxy_policy.timeout
        init_smtp(self, handler, kw)   # SMTP.__init__, its introspection done once (fastinit)
        self._smtp = smtp
        self._limits = limits
        self._data_slots = data_slots
        self._errors = self._junk = self._overshoot = 0
        self._closing = False

    def _create_session(self):
        """aiosmtpd's Session plus ``client_ip`` (the real client) and ``proxy_ip`` (the
        proxy's address, or None): kept across the new session of a STARTTLS re-wrap."""
        session = super()._create_session()
        session.client_ip = self._client_ip
        session.proxy_ip = self._proxy_ip
        return session

    def _log(self):
        return getattr(self.event_handler, "log", None)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if self.transport is None:  # a new connection, not the STARTTLS re-wrap
            peer = transport.get_extra_info("peername")
            ip = peer[0] if peer else ""
            self._peer_ip = ip
            if self._proxy is not None and not self._proxy.trusts(ip):
                self._proxy.refused[proxy.UNTRUSTED] += 1
                self._proxy_outcome = proxy.UNTRUSTED
                log = self._log()
                if log is not None:
                    log.warning("proxy_refused", reason=proxy.UNTRUSTED, proxy=ip,
                                listener=self._proxy.address)
                transport.close()   # no greeting, nothing read: the header is never believed
                return
            if self._proxy is None:
                refusal = self._limits.acquire(ip)
            else:                   # the client slot waits for the header (accept_proxy)
                refusal = self._limits.acquire_total()
            if refusal is not None:
                transport.write(refusal.encode() + b"\r\n")
                transport.close()
                return
            self._holds_total = True
            if self._proxy is None:
                self._slot_ip = self._client_ip = ip
            self._started = True
        super().connection_made(transport)

    async def accept_proxy(self, data) -> bool:
        """Called by the handler's ``handle_PROXY`` with a valid header (aiosmtpd ProxyData)
        from a trusted peer: take the real client's connection slot; True to go on to the
        greeting, False (after a 421 4.7.0 if over the per-client limit) to close."""
        client, from_header = proxy.client_address(data, self._peer_ip)
        refusal = self._limits.acquire_client(client)
        if refusal is not None:
            self._proxy_outcome = "limit"
            log = self._log()
            if log is not None:
                log.warning("session_refused", client=client, proxy=self._peer_ip, reply=refusal)
            await super().push(refusal)
            return False
        self._slot_ip = self._client_ip = client
        self._proxy_ip = self._peer_ip
        self._proxy_outcome = "accepted"
        if self.session is not None:
            self.session.client_ip, self.session.proxy_ip = client, self._peer_ip
        if not from_header:
            log = self._log()
            if log is not None:
                log.debug("proxy_local", proxy=self._peer_ip, version=data.version)
        return True

    def _timeout_cb(self) -> None:
        if self._proxy is not None and self._proxy_outcome is None:
            self._proxy_outcome = proxy.TIMEOUT
        super()._timeout_cb()

    def connection_lost(self, error: Exception | None) -> None:
        if not self._started:  # refused in connection_made: aiosmtpd never started
            return
        if self._proxy is not None and self._proxy_outcome in (None, proxy.TIMEOUT):
            self._header_failed()
        if self._holds_total:
            self._limits.release_total()
            self._holds_total = False
        if self._slot_ip is not None:
            self._limits.release_client(self._slot_ip)
            self._slot_ip = None
        super().connection_lost(error)

    def _header_failed(self) -> None:
        """Count and log a PROXY listener's connection that ended without a usable header."""
        data = self.session.proxy_data if self.session is not None else None
        if self._proxy_outcome == proxy.TIMEOUT:
            reason = proxy.TIMEOUT
        elif data is not None and not data.valid:
            reason = proxy.INVALID
        else:
            reason = proxy.NO_HEADER
        self._proxy_outcome = reason
        self._proxy.refused[reason] += 1
        log = self._log()
        if log is not None:
            log.warning("proxy_refused", reason=reason, proxy=self._peer_ip,
                        listener=self._proxy.address,
                        **({"error": data.error} if data is not None and data.error else {}))

    async def push(self, status) -> None:
        """Send a reply (with an enhanced status code); count it if it is an error, and after
        the ``hard_error_limit``-th send 421 4.7.0 and close. Nothing is sent once closing."""
        if self._closing:
            return
        if isinstance(status, str):
            status = replies.enhance(status)
            if self._is_error(status):
                self._errors += 1
        await super().push(status)
        if self._errors >= self._smtp.hard_error_limit:
            await self.close_with(replies.TOO_MANY_ERRORS)

    def _is_error(self, reply: str) -> bool:
        """A final 4xx/5xx reply for the client's doing: not 421 (we close anyway), not a
        condition of our own system (X.3.X: local error, storage, shutdown, size), not the
        first RECIPIENT_OVERSHOOT replies "too many recipients"."""
        if len(reply) < 9 or reply[3] != " " or reply[0] not in "45" or reply.startswith("421"):
            return False
        if reply[5:7] == ".3":
            return False
        if reply == replies.TOO_MANY_RECIPIENTS:
            self._overshoot += 1
            return self._overshoot > RECIPIENT_OVERSHOOT
        return True

    async def close_with(self, reply: str) -> None:
        """Send ``reply`` (a 421), close the connection and end the session: pipelined commands
        still buffered get no reply."""
        if self._closing or self.transport is None:
            return
        log = getattr(self.event_handler, "log", None)
        if log is not None:
            log.warning("session_closed", client=self._client_ip, reply=reply, errors=self._errors,
                        junk=self._junk, **({"proxy": self._proxy_ip} if self._proxy_ip else {}))
        await super().push(reply)
        self._closing = True
        self.transport.close()
        if self._handler_coroutine is not None:
            self._handler_coroutine.cancel()

    def _count_junk(self) -> None:
        self._junk += 1
        if self._junk > self._smtp.junk_command_limit:
            self._errors += 1

    async def smtp_DATA(self, arg: str) -> None:
        """DATA, read in bulk (gateway.intake.data) instead of aiosmtpd's line-by-line loop;
        the checks before 354 and the handler call after the dot are aiosmtpd's own. Nothing is
        read or queued once the session is closing (a pipelined DATA after a 421)."""
        if self._closing:
            return
        if await self.check_helo_needed() or await self.check_auth_needed("DATA"):
            return
        if not self.envelope.rcpt_tos:
            await self.push("503 5.5.1 Error: need RCPT command")
            return
        if arg:
            await self.push("501 5.5.4 Syntax: DATA")
            return
        s = self._smtp
        async with self._data_slots.hold(self._slot_ip or ""):
            # the whole upload is bounded by read_data (data_timeout, with a 421); this timer
            # is the backstop for the upload and the commit after it
            self._reset_timeout(s.data_timeout + s.command_timeout)
            try:
                await self.push("354 End data with <CR><LF>.<CR><LF>")
                try:
                    content = await read_data(
                        self._reader, self.data_size_limit or (1 << 62), s.max_line_length,
                        read_timeout=s.data_read_timeout, total_timeout=s.data_timeout,
                        min_rate=s.min_data_rate, grace=s.min_data_rate_grace)
                except DataTooLarge:
                    self._set_post_data_state()
                    await self.push(replies.SIZE_EXCEEDED)
                    return
                except LineTooLong:
                    self._set_post_data_state()
                    await self.push(replies.LINE_TOO_LONG)
                    return
                except DataTimeout as e:
                    self._set_post_data_state()
                    await self.close_with(replies.DATA_TOO_SLOW if e.reason == "rate"
                                          else replies.DATA_TIMEOUT)
                    return
                except asyncio.IncompleteReadError:  # the client went away before the dot
                    return
                if self._closing:              # cut off meanwhile: never queue without a 250
                    return
                self.envelope.content = self.envelope.original_content = content
                del content
                status = await self._call_handler_hook("DATA")
                self._set_post_data_state()    # drops the message buffer before the reply
                status = "250 OK" if status is MISSING else status
                if status.startswith("250"):   # mail delivered: the error counts start again
                    self._errors = self._junk = self._overshoot = 0
                await self.push(status)
            finally:
                if self.transport is not None:
                    self._reset_timeout()

    def _getaddr(self, arg: str):
        """aiosmtpd's own address parsing (``email``'s get_angle_addr / get_addr_spec, the
        local-part limit), without the ``typing.Protocol`` class it defines on every call (a
        metaclass run per MAIL and RCPT). Returns (address, rest) or (None, None)."""
        if not arg:
            return "", ""
        try:
            if arg.lstrip().startswith("<"):
                address, rest = get_angle_addr(arg)
            else:
                address, rest = get_addr_spec(arg)
        except HeaderParseError:
            return None, None
        addr = address.addr_spec
        if self.local_part_limit and len(addr.rpartition("@")[0]) > self.local_part_limit:
            return None, None
        return addr, rest

    async def smtp_AUTH(self, arg: str) -> None:
        await self.push("502 5.5.1 AUTH not supported: this is an MX, not a submission server")


def _junk(name: str):
    """GatewaySMTP.smtp_NAME: aiosmtpd's own, counted as a junk command (HELP syntax kept)."""
    base = getattr(SMTP, f"smtp_{name}")

    @functools.wraps(base)
    async def method(self: GatewaySMTP, arg) -> None:
        self._count_junk()
        await base(self, arg)
    return method


for _name in ("NOOP", "RSET", "VRFY", "EXPN", "HELP"):   # Postfix: NOOP, VRFY, ETRN, RSET
    setattr(GatewaySMTP, f"smtp_{_name}", _junk(_name))


def tls_context(cfg: Config) -> ssl.SSLContext | None:
    """Server TLS context from smtp.tls_cert/tls_key, or None if STARTTLS is not configured."""
    if not cfg.smtp.tls_cert:
        return None
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(str(cfg.smtp.tls_cert), str(cfg.smtp.tls_key or cfg.smtp.tls_cert))
    return ctx


class IntakeServer:
    """Listens on every SMTP listener (``smtp.listen`` and ``[[smtp.listeners]]``) in the running
    loop; ``await start()``, ``await stop(grace)``. ``proxy_refused`` counts connections to
    PROXY listeners closed without a greeting, per reason (gateway.intake.proxy.REASONS)."""

    def __init__(self, cfg: Config, handler):
        self.cfg, self.handler = cfg, handler
        self.limits = ConnectionLimits(cfg.smtp.max_connections, cfg.smtp.max_connections_per_client)
        self.data_slots = DataSlots(cfg.smtp.max_concurrent_data,
                                    cfg.smtp.max_concurrent_data_per_client)
        self.proxy_refused: Counter[str] = Counter()
        self._tls = tls_context(cfg)
        self._servers: list[asyncio.base_events.Server] = []

    def _protocol(self, listener: SmtpListener) -> GatewaySMTP:
        s = self.cfg.smtp
        policy = ProxyPolicy(listener, self.proxy_refused) if listener.proxy_protocol else None
        return GatewaySMTP(
            self.handler, limits=self.limits, data_slots=self.data_slots, smtp=s, proxy_policy=policy,
            hostname=self.cfg.server.hostname, ident="ESMTP mailgate",
            data_size_limit=s.max_message_size, enable_SMTPUTF8=True, decode_data=False,
            tls_context=self._tls, require_starttls=s.require_tls and self._tls is not None,
            timeout=s.command_timeout, auth_require_tls=True)

    async def start(self, sockets: dict[int, list] | None = None) -> list[tuple[str, int]]:
        """Bind every listener; return the bound (host, port) pairs (port 0 → the real one).
        ``sockets`` (an intake worker, gateway.worker): listening sockets already bound by the
        supervisor, per index of ``smtp.all_listeners()``; they are served instead of binding."""
        loop = asyncio.get_running_loop()
        bound = []
        for i, listener in enumerate(self.cfg.smtp.all_listeners()):
            factory = functools.partial(self._protocol, listener)
            if sockets is not None:
                for sock in sockets.get(i, []):
                    srv = await loop.create_server(factory, sock=sock, backlog=LISTEN_BACKLOG)
                    self._servers.append(srv)
                    bound.append(sock.getsockname()[:2])
                continue
            host, port = parse_listen(listener.address)
            srv = await loop.create_server(factory, host, port, reuse_address=True)
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
