"""One SMTP transaction to one next-hop address, over pooled aiosmtplib connections.

``SmtpTransport.send()`` connects (or reuses an idle connection to the same address, port and TLS
policy), sends MAIL FROM, one RCPT TO per recipient (aiosmtplib), and DATA with the stored bytes
through our own writer (gateway.delivery.datawriter: one dot-stuffing pass, a bare LF or CR
turned into CRLF as Postfix does when it relays, RFC 5321 §2.3.8, and the ``before_final_dot``
check of a claim's deadline just before the final dot), and returns a per-recipient result. It never raises for an SMTP or
network failure: those are results. Connections are limited per destination address and kept
idle for reuse for ``idle_timeout`` seconds.

SMTPUTF8 (RFC 6531): the envelope goes on the wire with A-label domains (``bücher.de`` →
``xn--bcher-kva.de``, RFC 5890) unless the transaction uses SMTPUTF8, which it does when the
message was declared SMTPUTF8, or needs it, and the next hop offers it. A message that needs it
(a non-ASCII local part in the envelope, or, when declared SMTPUTF8, non-ASCII in its header)
to a next hop that does not offer it fails every recipient at once with ``550 5.6.7`` (RFC 6531
§3.2, as Postfix: "SMTPUTF8 is required, but was not offered by host X"): a bounce, never a retry.

The Transport protocol is the boundary; tests of the scheduler may pass a double, the end-to-end
tests use this class against real SMTP sink processes.
"""
from __future__ import annotations

import asyncio
import functools
import os
import ssl
import time
from dataclasses import dataclass, field
from typing import Protocol

import aiosmtplib

from gateway.delivery.datawriter import (FinalDotCheck, FinalDotWithheld, FinalReplyTimeout,
                                         send_data)
from policies.mail_from import has_control
from policies.rcpt_address import AddressError, to_ascii_domain


@dataclass(frozen=True)
class TlsPolicy:
    """mode: "none" (never STARTTLS), "opportunistic" (when offered), "required"; ``verify``
    checks the certificate against ``server_name`` (the MX or smarthost name, not the IP)."""

    mode: str = "opportunistic"
    verify: bool = False
    ca_file: str | None = None


@dataclass
class TransactionResult:
    """Outcome of one transaction. ``connected`` False: no SMTP session (connection refused,
    timeout, TLS failure, 421 greeting): the host counts as down. ``rcpt`` maps each recipient
    to (code, text); recipients missing from it were not attempted. ``unknown_outcome`` marks a
    timeout after the final dot: the message may have been accepted (a retry may duplicate).
    ``fenced`` marks a final dot withheld by ``before_final_dot`` (every accepted recipient
    deferred with 451 4.3.0; the claim is no longer ours, so no other host should be tried)."""

    connected: bool
    rcpt: dict[str, tuple[int, str]] = field(default_factory=dict)
    error: str = ""
    unknown_outcome: bool = False
    fenced: bool = False


class Transport(Protocol):
    async def send(self, address: str, port: int, server_name: str, tls: TlsPolicy,
                   mail_from: str, rcpts: list[str], data: bytes, *, smtputf8: bool,
                   body_8bit: bool, before_final_dot: FinalDotCheck | None = None
                   ) -> TransactionResult: ...

    async def close(self) -> None: ...


class SmtpTransport:
    """aiosmtplib connections, pooled per (address, port, TLS mode)."""

    def __init__(self, local_hostname: str, *, connect_timeout: float = 5.0,
                 command_timeout: float = 300.0, data_timeout: float = 600.0,
                 per_destination: int = 20, idle_timeout: float = 10.0):
        self.local_hostname = local_hostname
        self.connect_timeout, self.command_timeout = connect_timeout, command_timeout
        self.data_timeout, self.per_destination, self.idle_timeout = data_timeout, per_destination, idle_timeout
        self._idle: dict[tuple, list[tuple[float, aiosmtplib.SMTP]]] = {}
        self._slots: dict[tuple, asyncio.Semaphore] = {}

    async def send(self, address, port, server_name, tls, mail_from, rcpts, data, *,
                   smtputf8=False, body_8bit=False, before_final_dot=None) -> TransactionResult:
        """One transaction (see the module doc); ``before_final_dot`` is a callable (sync or
        async) asked just before the final dot: False withholds it (result ``fenced``)."""
        key = (address, port, tls.mode, server_name)
        sem = self._slots.setdefault(key, asyncio.Semaphore(self.per_destination))
        async with sem:
            try:
                smtp = await self._connection(key, address, port, server_name, tls)
            except (aiosmtplib.SMTPException, OSError, asyncio.TimeoutError, ssl.SSLError) as e:
                return TransactionResult(False, error=_describe(e))
            result, reusable = await self._transaction(smtp, server_name, mail_from, rcpts, data,
                                                       smtputf8, body_8bit, before_final_dot)
            if reusable and smtp.is_connected:
                self._idle.setdefault(key, []).append((time.monotonic(), smtp))
            else:
                smtp.close()
            return result

    async def _connection(self, key, address, port, server_name, tls) -> aiosmtplib.SMTP:
        pool = self._idle.get(key)
        now = time.monotonic()
        while pool:
            since, smtp = pool.pop()
            if smtp.is_connected and now - since < self.idle_timeout:
                return smtp
            smtp.close()
        smtp = aiosmtplib.SMTP(hostname=address, port=port, local_hostname=self.local_hostname,
                               timeout=self.command_timeout, start_tls=False)
        await smtp.connect(timeout=self.connect_timeout)
        try:
            await smtp.ehlo()
            if tls.mode != "none" and smtp.supports_extension("starttls"):
                await smtp.starttls(server_hostname=server_name, tls_context=_client_context(tls))
                await smtp.ehlo()
            elif tls.mode == "required":
                raise aiosmtplib.SMTPException("TLS required but the server does not offer STARTTLS")
        except BaseException:
            smtp.close()
            raise
        return smtp

    async def _transaction(self, smtp: aiosmtplib.SMTP, server_name, mail_from, rcpts, data,
                           smtputf8, body_8bit, before_final_dot=None):
        res = TransactionResult(True)
        if any(has_control(a) for a in (mail_from, *rcpts)):   # queued before intake checked it
            return _fail_rest(res, rcpts, 553, "5.1.7 control character in the envelope"), True
        offered = smtp.supports_extension("smtputf8")
        needed = needs_smtputf8(mail_from, rcpts, data, smtputf8)
        if needed and not offered:
            return _fail_rest(res, rcpts, 550, f"5.6.7 SMTPUTF8 is required, but was not offered "
                                               f"by host {server_name or smtp.hostname}"), True
        utf8 = offered and (smtputf8 or needed)
        options = ["SMTPUTF8"] if utf8 else []
        if body_8bit and smtp.supports_extension("8bitmime"):
            options.append("BODY=8BITMIME")
        enc = "utf-8" if utf8 else "ascii"
        wire = {r: r if utf8 else wire_address(r) for r in rcpts}
        phase = "MAIL FROM"
        try:
            try:
                await smtp.mail(mail_from if utf8 else wire_address(mail_from), options=options,
                                encoding=enc)
            except aiosmtplib.SMTPSenderRefused as e:
                _fail_rest(res, rcpts, e.code, f"MAIL FROM: {e.message}")
                await _rset(smtp)
                return res, e.code != 421 and smtp.is_connected
            phase = "RCPT TO"
            accepted = []
            for r in rcpts:
                try:
                    await smtp.rcpt(wire[r], encoding=enc)
                    accepted.append(r)
                except aiosmtplib.SMTPRecipientRefused as e:
                    res.rcpt[r] = (e.code, e.message)
            if not accepted:
                await _rset(smtp)
                return res, smtp.is_connected
            phase = "DATA"
            try:
                resp = await send_data(smtp, data, before_final_dot=before_final_dot,
                                       command_timeout=self.command_timeout,
                                       block_timeout=self.command_timeout,
                                       final_timeout=self.data_timeout)
            except aiosmtplib.SMTPDataError as e:
                return _fail_rest(res, accepted, e.code, e.message), False
            except FinalDotWithheld as e:
                res.error, res.fenced = e.reason, True
                return _fail_rest(res, accepted, 451, f"4.3.0 final dot not sent: {e.reason}"), False
            return _fail_rest(res, accepted, resp.code, resp.message), True
        except (aiosmtplib.SMTPException, OSError, ValueError, asyncio.TimeoutError) as e:
            res.error = _describe(e)
            # a timeout waiting for the reply to the final dot: the peer may have taken it
            res.unknown_outcome = isinstance(e, FinalReplyTimeout)
            smtp.close()
            return _fail_rest(res, rcpts, 451, f"{phase}: {res.error}"), False

    async def close(self) -> None:
        for pool in self._idle.values():
            for _since, smtp in pool:
                try:
                    smtp.close()
                except Exception:
                    pass
        self._idle.clear()


def wire_address(address: str) -> str:
    """``address`` with its domain as an A-label (``jörg@bücher.de`` → ``jörg@xn--bcher-kva.de``);
    the null sender, ASCII domains and domains that cannot be encoded are left as they are."""
    local, at, domain = address.rpartition("@")
    if not at or domain.isascii():
        return address
    try:
        return f"{local}@{to_ascii_domain(domain.lower())}"
    except AddressError:
        return address


def needs_smtputf8(mail_from: str, rcpts: list[str], data: bytes, declared: bool) -> bool:
    """True if the transaction cannot go without SMTPUTF8: an envelope address still non-ASCII
    with its domain as an A-label, or, for mail ``declared`` SMTPUTF8, a non-ASCII header
    (RFC 6532; an 8-bit body alone needs only 8BITMIME)."""
    if any(not wire_address(a).isascii() for a in (mail_from, *rcpts)):
        return True
    if not declared:
        return False
    end = data.find(b"\r\n\r\n")
    head = data[:end] if end >= 0 else data[:65536]
    return not head.isascii()


def _client_context(tls: TlsPolicy) -> ssl.SSLContext:
    return client_tls_context(tls.verify, tls.ca_file)


def client_tls_context(verify: bool, ca_file: str | os.PathLike | None = None) -> ssl.SSLContext:
    """Client TLS for SMTP: verified against ``ca_file`` (default: the system's CAs), or, with
    ``verify`` False, encrypted without authentication (RFC 3207 §4.1, RFC 7435). One context
    per (verify, CA file) policy, built (and the CA bundle read) on first use and shared by every
    later connection and probe: callers must not modify it. A changed CA file is read at the
    next start. Raises OSError/ssl.SSLError for an unreadable CA file."""
    return _client_tls_context(bool(verify), os.fspath(ca_file) if verify and ca_file else None)


@functools.lru_cache(maxsize=None)
def _client_tls_context(verify: bool, ca_file: str | None) -> ssl.SSLContext:
    if verify:
        return ssl.create_default_context(cafile=ca_file)
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


def _fail_rest(res: TransactionResult, rcpts, code, text) -> TransactionResult:
    for r in rcpts:
        res.rcpt.setdefault(r, (code, text))
    return res


async def _rset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except Exception:
        smtp.close()


def _describe(e: BaseException) -> str:
    msg = str(e) or type(e).__name__
    return f"{type(e).__name__}: {msg}"[:300]
