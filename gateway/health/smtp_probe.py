"""Inbound SMTP probe: can Exchange take mail? An RFC 5321 session without DATA.

For every host the route resolves to (as delivery resolves it: MX, then A, then IP literal) the
probe connects, reads the 220 greeting, sends EHLO (HELO if EHLO is refused), STARTTLS when
offered (``tls="opportunistic"``) or demanded (``"required"``), ``MAIL FROM``, ``RCPT TO`` the
canary address, then RSET and QUIT: no message is ever sent. The hosts are checked concurrently,
each within the probe's timeout, so one silent host cannot hide the others.

The probe is ok when at least one host accepts the canary with 2xx (one live host is enough for
Exchange to take mail). A connection failure, a non-220 greeting, a TLS failure, a 4xx/5xx to
MAIL or to the canary's RCPT, or a timeout fails that host. ``last_hosts`` holds one
``ProbeResult`` per host from the last check, named ``smtp:HOST[ADDRESS]:PORT``. Reads and writes
no queue state.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from typing import Awaitable, Callable

import aiosmtplib

from gateway.delivery.transport import client_tls_context

from .result import check_budget, ProbeResult, describe, failure

__all__ = ["SmtpInboundProbe", "mx_hosts"]

HostList = list[tuple[str, str, int]]
TLS_MODES = ("none", "opportunistic", "required")


def mx_hosts(resolver, spec: str, default_port: int = 25) -> Callable[[], Awaitable[HostList]]:
    """A ``resolve`` callable for SmtpInboundProbe over ``gateway.delivery.mx.MxResolver``:
    every (host name, address, port) of ``spec`` in the order delivery would try them."""

    async def resolve() -> HostList:
        groups = await resolver.resolve(spec, default_port)
        return [(h.name, addr, h.port) for group in groups for h in group for addr in h.addresses]

    return resolve


class SmtpInboundProbe:
    """See the module docstring. ``max_hosts`` limits the check to the first N resolved hosts;
    ``ca_file`` is the CA bundle for ``verify_tls`` (default: the system's)."""

    def __init__(self, name: str, resolve: Callable[[], Awaitable[HostList]], *, canary_rcpt: str,
                 mail_from: str, helo: str, tls: str = "opportunistic", verify_tls: bool = False,
                 interval: float = 10.0, timeout: float = 5.0, critical: bool = True,
                 max_hosts: int | None = None, ca_file: str | None = None) -> None:
        if tls not in TLS_MODES:
            raise ValueError(f"tls must be one of {TLS_MODES}, not {tls!r}")
        if timeout <= 0 or interval <= 0:
            raise ValueError("interval and timeout must be positive")
        self.name, self.interval, self.timeout, self.critical = name, interval, timeout, critical
        self.resolve, self.canary_rcpt, self.mail_from, self.helo = resolve, canary_rcpt, mail_from, helo
        self.tls, self.verify_tls, self.ca_file, self.max_hosts = tls, verify_tls, ca_file, max_hosts
        self.last_hosts: list[ProbeResult] = []


    async def check(self) -> ProbeResult:
        started = time.monotonic()
        budget = check_budget(self.timeout)
        try:
            async with asyncio.timeout(budget):
                hosts = list(await self.resolve())
        except TimeoutError:
            self.last_hosts = []
            return failure(self.name, started, f"resolve: timeout after {budget:.1f}s", self.critical)
        except Exception as e:           # ResolveError, ValueError from a bad spec, ...
            self.last_hosts = []
            return failure(self.name, started, f"resolve: {e}", self.critical)
        if self.max_hosts is not None:
            hosts = hosts[: self.max_hosts]
        if not hosts:
            self.last_hosts = []
            return failure(self.name, started, "resolve: no hosts", self.critical)
        remaining = max(budget - (time.monotonic() - started), 0.01)
        results = await asyncio.gather(*(self._host(h, a, p, remaining) for h, a, p in hosts))
        self.last_hosts = list(results)
        good = sum(r.ok for r in results)
        detail = f"{good}/{len(results)} hosts accept the canary: " + "; ".join(
            f"{r.probe.removeprefix('smtp:')} {r.detail}" for r in results)
        return ProbeResult(self.name, good > 0, time.time(), time.monotonic() - started, detail,
                           self.critical)

    async def _host(self, host: str, address: str, port: int, budget: float) -> ProbeResult:
        label = f"smtp:{host}[{address}]:{port}"
        started = time.monotonic()
        state = {"phase": "connect", "accepted": None}
        smtp = aiosmtplib.SMTP(hostname=address, port=port, local_hostname=self.helo,
                               timeout=budget, start_tls=False)
        try:
            async with asyncio.timeout(budget):
                await self._session(smtp, host, state)
        except TimeoutError:             # asyncio's bound, or aiosmtplib's own timeouts
            detail = f"{state['phase']}: timeout after {time.monotonic() - started:.1f}s"
        except aiosmtplib.SMTPConnectResponseError as e:
            detail = f"greeting: {e.code} {e.message}".strip()
        except aiosmtplib.SMTPResponseException as e:
            detail = f"{state['phase']}: {e.code} {e.message}".strip()
        except (aiosmtplib.SMTPException, OSError, ssl.SSLError, ValueError) as e:
            cause = e.__cause__ if isinstance(e, aiosmtplib.SMTPConnectError) and e.__cause__ else e
            detail = f"{state['phase']}: {describe(cause)}"
        else:
            detail = ""
        finally:
            smtp.close()
        if state["accepted"] is not None:   # a slow or rude RSET/QUIT does not change the verdict
            return ProbeResult(label, True, time.time(), time.monotonic() - started,
                               state["accepted"], self.critical)
        return failure(label, started, detail, self.critical)

    async def _session(self, smtp: aiosmtplib.SMTP, host: str, state: dict) -> None:
        await smtp.connect()             # raises SMTPConnectResponseError unless the greeting is 220
        state["phase"] = "EHLO"
        try:
            await smtp.ehlo()
        except aiosmtplib.SMTPHeloError:
            state["phase"] = "HELO"
            await smtp.helo()
        if self.tls != "none" and smtp.supports_extension("starttls"):
            state["phase"] = "STARTTLS"
            await smtp.starttls(server_hostname=host, tls_context=self._tls_context())
            state["phase"] = "EHLO after STARTTLS"
            await smtp.ehlo()
        elif self.tls == "required":
            state["phase"] = "STARTTLS"
            raise aiosmtplib.SMTPNotSupported("not offered (tls=required)")
        state["phase"] = "MAIL FROM"
        await smtp.mail(self.mail_from)
        state["phase"] = "RCPT TO"
        reply = await smtp.rcpt(self.canary_rcpt)
        state["accepted"] = f"{reply.code} {reply.message}".strip()
        try:
            state["phase"] = "RSET"
            await smtp.rset()
            state["phase"] = "QUIT"
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass

    def _tls_context(self) -> ssl.SSLContext:
        return client_tls_context(self.verify_tls, self.ca_file)
