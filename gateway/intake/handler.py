"""Intake policy hooks in SMTP order (aiosmtpd handler): EHLO, MAIL, RCPT, DATA.

RCPT runs the recipient-filtering and relay-control chain (policies.rcpt_chain) so an unknown
recipient is refused during the session (550 5.1.1), never bounced later. DATA prepends our
Received: header, commits the message and its envelope to the spool (group commit, fsync), and
only then answers ``250 2.0.0 Ok: queued as QUEUEID``. Any error in our code answers 451 4.3.0
and is logged with the queue ID; no Python exception ever reaches the client.

Round-trip probe messages (gateway.health.roundtrip_probe) are consumed before the commit: the
``probe_mailbox`` accepts its return address at RCPT (alone in its transaction: 452 4.5.3 to
mixing it with other recipients), and a message it recognises is answered ``250 2.0.0 Ok: probe
consumed`` and neither spooled nor delivered.
"""
from __future__ import annotations

import asyncio
import time
from typing import Callable

from gateway.config import Config
from gateway.intake import replies
from gateway.intake.received import count_received, protocol_name, received_header
from policies.mail_from import check_mail_from
from policies.rcpt_chain import RcptContext, check_rcpt
from policies.verdict import RCPT_OK
from spool import NewMessage, Spool, SpoolError

#: Postfix's hopcount_limit: more Received: fields than this means a mail loop.
HOP_LIMIT = 50


class IntakeHandler:
    """The aiosmtpd handler. ``rcpt_context()`` returns the current RcptContext (the directory
    may be reloaded at any time); ``on_queued(queue_id)`` is called after each durable commit."""

    def __init__(self, cfg: Config, spool: Spool, rcpt_context: Callable[[], RcptContext],
                 on_queued: Callable[[str], None], log, probe_mailbox=None):
        self.cfg, self.spool, self.rcpt_context, self.on_queued = cfg, spool, rcpt_context, on_queued
        self.probe_mailbox = probe_mailbox      # gateway.health.ProbeMailbox or None
        self.log = log
        self._inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self.accepting = True

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        session.host_name = hostname
        out = [r for r in responses if not r.startswith("250-AUTH")]
        extra = ["250-ENHANCEDSTATUSCODES"]
        if self.cfg.smtp.pipelining:
            extra.insert(0, "250-PIPELINING")
        return out[:-1] + extra + out[-1:]

    async def handle_PROXY(self, server, session, envelope, proxy_data):
        """A valid PROXY header from a trusted proxy (aiosmtpd calls this before the greeting;
        without it every PROXY connection is dropped): the session takes the real client's
        address (server.accept_proxy); False closes the connection."""
        try:
            return await server.accept_proxy(proxy_data)
        except Exception:
            self.log.exception("proxy_error", proxy=_client_ip(session))
            return False

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if not self.accepting:
            return replies.SHUTTING_DOWN
        # envelope.smtp_utf8 is set by aiosmtpd from the MAIL parameters before this hook
        decision = check_mail_from(address, envelope.smtp_utf8)
        if not decision.verdict.ok:
            self.log.info("mail_rejected", **_who(session), mail_from=ascii(address),
                          reply=decision.verdict.reply())
            return decision.verdict.reply()
        envelope.mail_from = decision.address  # '<>' for the null sender (truthy for aiosmtpd)
        envelope.mail_options.extend(mail_options)
        return replies.SENDER_OK

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if len(envelope.rcpt_tos) >= self.cfg.smtp.max_recipients:
            return replies.TOO_MANY_RECIPIENTS  # RFC 5321 §4.5.3.1.8: the client sends the rest later
        client_ip = _client_ip(session)
        mb = self.probe_mailbox
        if mb is not None and not mb.disabled and (mb.accepts(address)
                                                   or mb.return_address in envelope.rcpt_tos):
            if envelope.rcpt_tos not in ([], [mb.return_address]) or not mb.accepts(address):
                return replies.TOO_MANY_RECIPIENTS    # the probe return address travels alone
            envelope.rcpt_tos[:] = [mb.return_address]
            return RCPT_OK.reply()
        decision = check_rcpt(address, client_ip, self.rcpt_context(),
                              smtputf8=envelope.smtp_utf8)
        if not decision.verdict.ok:
            self.log.info("rcpt_rejected", **_who(session), mail_from=envelope.mail_from,
                          rcpt=address, reply=decision.verdict.reply())
            return decision.verdict.reply()
        rcpt = decision.mailbox.address
        if rcpt not in envelope.rcpt_tos:  # duplicates are delivered once (as Postfix's cleanup)
            envelope.rcpt_tos.append(rcpt)
            envelope.rcpt_options.extend(rcpt_options)
        return decision.verdict.reply()

    async def handle_DATA(self, server, session, envelope):
        queue_id = self.spool.new_queue_id()   # unique across nodes on a shared spool
        self._enter()
        try:
            return await self._queue(queue_id, session, envelope)
        except Exception:
            self.log.exception("intake_error", queue_id=queue_id, **_who(session))
            return replies.LOCAL_ERROR
        finally:
            self._leave()

    async def _queue(self, queue_id: str, session, envelope) -> str:
        data = envelope.original_content   # bytearray: unstuffed and line-checked by intake.data
        if count_received(data, HOP_LIMIT + 1) > HOP_LIMIT:
            self.log.warning("rejected_loop", queue_id=queue_id, **_who(session))
            return replies.TOO_MANY_HOPS
        if self.probe_mailbox is not None:
            consumed = self.probe_mailbox.consume(envelope, data)
            if consumed:
                self.log.info("probe_consumed", queue_id=queue_id, outcome=consumed.outcome,
                              token=consumed.token, **_who(session),
                              mail_from=envelope.mail_from, rcpt=",".join(envelope.rcpt_tos))
                return replies.PROBE_CONSUMED
        now = time.time()
        tls = session.ssl is not None
        header = received_header(
            helo=session.host_name or "", client_ip=_client_ip(session),
            hostname=self.cfg.server.hostname,
            protocol=protocol_name(session.extended_smtp, tls, envelope.smtp_utf8),
            queue_id=queue_id, rcpt_tos=envelope.rcpt_tos, timestamp=now)
        mail_from = "" if envelope.mail_from == "<>" else envelope.mail_from
        body_8bit = ("BODY=8BITMIME" in envelope.mail_options) or not data.isascii()
        if isinstance(data, bytearray):   # intake.data's buffer: prepend in place, no second copy
            data[0:0] = header
        else:
            data = header + data
        msg = NewMessage(
            queue_id=queue_id, mail_from=mail_from, rcpt_tos=tuple(envelope.rcpt_tos),
            data=data, client_addr=_client_ip(session),
            client_helo=session.host_name or "", smtputf8=envelope.smtp_utf8,
            body_8bit=body_8bit)
        try:
            await self.spool.commit(msg)
        except SpoolError as e:    # the disk full: 452 4.3.1; another storage failure: 451 4.3.0
            self.log.error("spool_commit_failed", queue_id=queue_id, error=str(e), full=e.full)
            return replies.INSUFFICIENT_STORAGE if e.full else replies.SPOOL_ERROR
        self.log.info("queued", queue_id=queue_id, **_who(session),
                      mail_from=mail_from or "<>", nrcpt=len(msg.rcpt_tos), size=len(msg.data))
        self.on_queued(queue_id)
        return replies.queued(queue_id)

    async def handle_exception(self, error: Exception) -> str:
        self.log.error("smtp_session_error", error=f"{type(error).__name__}: {error}")
        return replies.LOCAL_ERROR

    # -- draining on shutdown -------------------------------------------------------------------
    def _enter(self) -> None:
        self._inflight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._idle.set()

    async def drain(self, timeout: float = 30.0) -> None:
        """Refuse new transactions and wait (up to ``timeout`` s) for commits in flight."""
        self.accepting = False
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            self.log.warning("drain_timeout", inflight=self._inflight)


def _client_ip(session) -> str:
    """The client's IP address: the PROXY header's source on a PROXY listener (set by
    GatewaySMTP), else the connecting peer's; "" if unknown."""
    client = getattr(session, "client_ip", None)
    if client:
        return client
    peer = session.peer
    if isinstance(peer, tuple) and peer:
        return str(peer[0])
    return ""


def _who(session) -> dict[str, str]:
    """Log fields naming the client, and the proxy it came through (``proxy=``) if any."""
    proxy = getattr(session, "proxy_ip", None)
    return {"client": _client_ip(session), **({"proxy": proxy} if proxy else {})}
