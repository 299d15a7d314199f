"""SMTP session check of `mailgate doctor`: one smarthost address as the gateway would use it.

``check_host()`` connects to ADDRESS:PORT, reads the 220 greeting, sends EHLO with our hostname,
looks for STARTTLS (RFC 3207), and runs the TLS handshake with certificate verification against
the host's *name* (the MX target or smarthost name, as delivery does), trusting
``routing.smarthost_ca_file`` or else the system store. On a valid certificate it reports the days
to its notAfter. It then sends ``MAIL FROM:<probe@HOSTNAME>`` and ``RCPT TO:<canary>`` (the SMTP
probe's session: no DATA, no message), RSET and QUIT, and reports the canary's reply. When the
verified handshake fails but the gateway does not verify (``routing.smarthost_verify_tls = false``),
the canary is tried on a second connection with the gateway's own unverified TLS. The whole check
is bounded by ``timeout`` seconds. Reads and writes no queue state.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from gateway.delivery.transport import client_tls_context

__all__ = ["HostReport", "check_host"]


@dataclass
class HostReport:
    """What one session showed. ``connected``: a 220 greeting; ``error``: why the session ended
    early; ``starttls``: offered after EHLO; ``tls_error``: the handshake's or the verification's
    failure ("" when it verified); ``days_left``: days to the certificate's notAfter (None when
    not verified); ``canary``: (code, text) of RCPT TO the canary, or None if not reached."""
    connected: bool = False
    error: str = ""
    ehlo: str = ""
    starttls: bool = False
    tls_error: str = ""
    tls_version: str = ""
    days_left: float | None = None
    canary: tuple[int, str] | None = None
    seconds: float = 0.0


def _describe(e: BaseException) -> str:
    if isinstance(e, ssl.SSLCertVerificationError):
        return e.verify_message or str(e)
    if isinstance(e, (asyncio.TimeoutError, TimeoutError, aiosmtplib.SMTPTimeoutError)):
        return "timeout"
    return str(e) or type(e).__name__


async def _session(address: str, port: int, helo: str, timeout: float) -> aiosmtplib.SMTP:
    smtp = aiosmtplib.SMTP(hostname=address, port=port, timeout=timeout, start_tls=False,
                           local_hostname=helo)
    await smtp.connect()
    await smtp.ehlo()
    return smtp


async def _canary(smtp: aiosmtplib.SMTP, mail_from: str, rcpt: str) -> tuple[int, str]:
    r = await smtp.mail(mail_from)
    if r.code // 100 != 2:
        return r.code, f"MAIL FROM refused: {r.message}"
    try:
        r = await smtp.rcpt(rcpt)
    except aiosmtplib.SMTPRecipientRefused as e:
        return e.code, e.message
    return r.code, r.message


async def _quit(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
        await smtp.quit()
    except Exception:
        smtp.close()


async def check_host(name: str, address: str, port: int, *, helo: str, tls_mode: str,
                     verify: bool, ca_file: str | None, canary: str | None,
                     timeout: float = 10.0) -> HostReport:
    """See the module docstring. ``tls_mode`` is routing.smarthost_tls ("none" skips TLS);
    ``canary`` None skips MAIL/RCPT. Never raises: failures are in the report."""
    rep = HostReport()
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            await _run(rep, name, address, port, helo, tls_mode, verify, ca_file, canary, timeout)
    except TimeoutError:
        rep.error = rep.error or f"no answer within {timeout:.0f}s"
    rep.seconds = time.monotonic() - started
    return rep


async def _run(rep, name, address, port, helo, tls_mode, verify, ca_file, canary, timeout):
    try:
        smtp = await _session(address, port, helo, timeout)
    except Exception as e:
        rep.error = f"connect: {_describe(e)}"
        return
    rep.connected = True
    rep.ehlo = (smtp.last_ehlo_response.message.splitlines() or [""])[0] \
        if smtp.last_ehlo_response else ""
    rep.starttls = smtp.supports_extension("starttls")
    if tls_mode != "none" and rep.starttls:
        try:
            await smtp.starttls(server_hostname=name, tls_context=client_tls_context(True, ca_file))
            ssl_obj = smtp.transport.get_extra_info("ssl_object")
            rep.tls_version = ssl_obj.version() or ""
            not_after = ssl.cert_time_to_seconds(ssl_obj.getpeercert()["notAfter"])
            rep.days_left = (not_after - time.time()) / 86400
        except Exception as e:
            rep.tls_error = _describe(e)
            smtp.close()
            if verify or canary is None:
                return
            try:                   # the gateway itself would go on, unverified: so does the canary
                smtp = await _session(address, port, helo, timeout)
                await smtp.starttls(server_hostname=name, tls_context=client_tls_context(False))
            except Exception as e2:
                rep.error = f"unverified TLS: {_describe(e2)}"
                return
    if canary is not None:
        try:
            rep.canary = await _canary(smtp, f"probe@{helo}", canary)
        except Exception as e:
            rep.error = f"MAIL/RCPT: {_describe(e)}"
    await _quit(smtp)
