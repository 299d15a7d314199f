"""Synthetic round-trip probe: can Exchange send mail? A token mail out through Exchange and back.

``RoundTripProbe.check()`` submits one small message carrying a unique token (in the header
``X-Mailgate-Probe`` and in the Subject) to the downstream (the smarthost, or an authenticated
submission endpoint), addressed to a canary mailbox that Exchange forwards to ``return_address``,
an address Exchange routes back to the gateway. It passes when the token comes back through the
gateway's own intake before the deadline; ``latency`` is the round trip.

``ProbeMailbox`` is the meeting point of probe and intake: the probe registers the token it
awaits (an asyncio future); intake calls ``consume(envelope, data)`` for every message before it
commits it. Only mail to the return address is ever consumed (never spooled, never delivered),
and only the probe's own envelope (MAIL FROM and RCPT TO both the return address, as the probe
sends it and a forward keeps it) with an awaited token passes the check. A bounce of the probe
(null sender, to the return address, the token anywhere inside) fails the check at once with its
Subject. Mail to the return address with an unknown or expired token, or under another sender,
is consumed too (and logged by intake). Mail to anyone else is never a probe, whatever it quotes.

With ``directory`` (a callable returning the current policies.directory.Directory) the mailbox
is disabled while the directory lists the return address (checked again after every reload,
logged once as ``probe_mailbox_disabled``): mail to it is then that recipient's, and the probe
fails at once without submitting, never as critical. Reads and writes no queue state.

With ``server.workers`` > 1 the returning message reaches whichever intake worker the kernel
gave the connection to, while the probe awaits it in the supervisor: the supervisor's mailbox
calls ``on_change("expect"|"forget", token)`` for every token (gateway.supervisor sends them to
every worker), each worker runs a ``RelayedProbeMailbox`` (the same ``consume``: every check
above, its own directory) that reports what would resolve an awaited token instead of resolving
it, and the supervisor ``settle``s the probe's future with that report.
"""
from __future__ import annotations

import asyncio
import re
import secrets
import ssl
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import formatdate
from typing import Awaitable, Callable

import aiosmtplib

from gateway.config_checks import return_address_conflict
from gateway.delivery.transport import client_tls_context

from .result import check_budget, ProbeResult, describe, failure

__all__ = ["RoundTripProbe", "ProbeMailbox", "RelayedProbeMailbox", "Consumed", "PROBE_HEADER"]

PROBE_HEADER = "X-Mailgate-Probe"
SUBJECT_PREFIX = "mailgate round-trip probe"
_HEADER_RE = re.compile(rb"^X-Mailgate-Probe:[ \t]*([0-9a-f]{32})[ \t]*\r?$", re.I | re.M)
_SUBJECT_RE = re.compile(rb"^Subject:[ \t]*(?:(?:FW|FWD|WG|TR|RE):[ \t]*)*"
                         + SUBJECT_PREFIX.encode() + rb"[ \t]+([0-9a-f]{32})\b", re.I | re.M)
_ANY_SUBJECT = re.compile(rb"^Subject:[ \t]*(.*?)\r?$", re.I | re.M)
HostList = list[tuple[str, str, int]]


@dataclass(frozen=True)
class Consumed:
    """What ``ProbeMailbox.consume`` did with a message. ``outcome``: ``returned`` (an awaited
    token: the check passes), ``bounced`` (a bounce of an awaited probe: the check fails),
    ``late`` (a token whose check already ended), ``unknown`` (no token we ever sent),
    ``forged`` (an awaited token under another envelope than the probe's: it does not pass)."""

    outcome: str
    token: str = ""


class ProbeMailbox:
    """Tokens awaited by round-trip probes, and the intake hook that consumes probe messages."""

    def __init__(self, return_address: str, remember: int = 64, *,
                 directory: Callable[[], object] | None = None, log=None) -> None:
        self.return_address = return_address.strip("<>").lower()
        self._awaited: dict[str, asyncio.Future] = {}
        self._ended: OrderedDict[str, None] = OrderedDict()   # recent tokens, to tell late from forged
        self._remember = remember
        self._directory, self._log = directory, log
        self._checked: object = None             # the Directory last checked
        self._disabled: str | None = None
        #: called with ("expect" | "forget", token) after each change (gateway.supervisor)
        self.on_change: Callable[[str, str], None] | None = None

    @property
    def disabled(self) -> str | None:
        """Why the mailbox is disabled (the current directory lists the return address), or None."""
        if self._directory is None:
            return None
        current = self._directory()
        if current is not self._checked:
            self._checked, was = current, self._disabled
            self._disabled = return_address_conflict(self.return_address, current)
            if self._log is not None and self._disabled and self._disabled != was:
                self._log.error("probe_mailbox_disabled", address=self.return_address,
                                reason=self._disabled)
            elif self._log is not None and was and not self._disabled:
                self._log.info("probe_mailbox_enabled", address=self.return_address)
        return self._disabled

    def accepts(self, address: str) -> bool:
        """True for the return address (intake accepts it at RCPT, whatever the directory says),
        unless the mailbox is disabled."""
        return address.strip("<>").lower() == self.return_address and not self.disabled

    def expect(self, token: str) -> asyncio.Future:
        """Register ``token``; the future gets (ok, detail, monotonic time) when it comes back."""
        fut = asyncio.get_running_loop().create_future()
        self._awaited[token] = fut
        if self.on_change is not None:
            self.on_change("expect", token)
        return fut

    def forget(self, token: str) -> None:
        """The check that awaited ``token`` ended (passed or not)."""
        self._awaited.pop(token, None)
        self._ended[token] = None
        self._ended.move_to_end(token)
        while len(self._ended) > self._remember:
            self._ended.popitem(last=False)
        if self.on_change is not None:
            self.on_change("forget", token)

    @property
    def awaited(self) -> int:
        return len(self._awaited)

    def snapshot(self) -> tuple[list[str], list[str]]:
        """(recently ended tokens, oldest first; awaited tokens): what a worker started now needs
        to consume as this process would."""
        return list(self._ended), list(self._awaited)

    def settle(self, token: str, ok: bool, detail: str = "") -> bool:
        """Resolve the check awaiting ``token`` with what another process's intake consumed (a
        worker's RelayedProbeMailbox): ok for a return, else ``detail`` (``bounced: SUBJECT``).
        The time is this process's monotonic clock now. False if no check awaits it any more."""
        fut = self._awaited.get(token)
        if fut is None or fut.done():
            return False
        self._resolve(token, ok, detail)
        return True

    def consume(self, envelope, data: bytes) -> Consumed | None:
        """None if ``data`` is not a probe message (intake queues it as usual); otherwise what was
        done with it (intake answers 250 and neither spools nor delivers it)."""
        to_return = any(self.accepts(r) for r in envelope.rcpt_tos)
        if not to_return:
            return None                # mail to anyone else is theirs, whatever token it quotes
        ends = [i for i in (data.find(b"\r\n\r\n"), data.find(b"\n\n")) if i >= 0]
        head = data[:min(ends)] if ends else data      # the header block only, without copying the body
        m = _HEADER_RE.search(head) or _SUBJECT_RE.search(head)
        token = m.group(1).decode().lower() if m else ""
        sender = envelope.mail_from.strip("<>").lower()
        if not sender:
            for awaited in list(self._awaited):
                if awaited.encode() in data:      # a bounce quoting our probe
                    s = _ANY_SUBJECT.search(head)
                    subject = s.group(1).decode(errors="replace")[:120] if s else ""
                    self._resolve(awaited, False, f"bounced: {subject or 'null sender'}")
                    return Consumed("bounced", awaited)
        if token in self._awaited:
            if sender != self.return_address or len(envelope.rcpt_tos) != 1:
                return Consumed("forged", token)       # not the envelope the probe sent
            self._resolve(token, True, "")
            return Consumed("returned", token)
        return Consumed("late" if token in self._ended else "unknown", token)

    def _resolve(self, token: str, ok: bool, detail: str) -> None:
        fut = self._awaited.get(token)
        if fut is not None and not fut.done():
            fut.set_result((ok, detail, time.monotonic()))


class RelayedProbeMailbox(ProbeMailbox):
    """An intake worker's mailbox (server.workers > 1): it awaits the tokens the supervisor's
    mailbox sends (``track``, ``forget``), consumes exactly as ProbeMailbox does, and passes what
    would resolve an awaited token to ``report(token, ok, detail)`` (gateway.worker sends it to
    the supervisor, which ``settle``s the probe's future)."""

    def __init__(self, return_address: str, report: Callable[[str, bool, str], None],
                 remember: int = 64, *, directory: Callable[[], object] | None = None,
                 log=None) -> None:
        super().__init__(return_address, remember, directory=directory, log=log)
        self._report = report

    def track(self, token: str) -> None:
        """The supervisor's probe awaits ``token``."""
        self._awaited[token] = None
        self._ended.pop(token, None)

    def expect(self, token: str) -> asyncio.Future:
        raise TypeError("a worker's mailbox awaits the supervisor's tokens: use track()")

    def _resolve(self, token: str, ok: bool, detail: str) -> None:
        if token in self._awaited:
            self._report(token, ok, detail)


class RoundTripProbe:
    """See the module docstring. ``resolve`` lists the (name, address, port) of the submission
    hosts (``smtp_probe.mx_hosts`` over the delivery resolver); they are tried in order until one
    accepts the message. ``timeout`` is the deadline, counted from the start of the check.
    With ``username`` the session must be TLS (STARTTLS) before AUTH: a password never goes out
    in clear."""

    def __init__(self, name: str, resolve: Callable[[], Awaitable[HostList]], mailbox: ProbeMailbox,
                 *, rcpt: str, helo: str, deadline: float = 120.0, interval: float = 300.0,
                 critical: bool = False, tls: str = "opportunistic", verify_tls: bool = False,
                 ca_file: str | None = None, username: str = "", password: str = "") -> None:
        if deadline <= 0 or interval <= 0:
            raise ValueError("interval and deadline must be positive")
        if tls not in ("none", "opportunistic", "required"):
            raise ValueError(f"bad tls mode {tls!r}")
        self.name, self.interval, self.timeout, self.critical = name, interval, deadline, critical
        self.resolve, self.mailbox, self.rcpt, self.helo = resolve, mailbox, rcpt, helo
        self.tls = "required" if username else tls
        self.verify_tls, self.ca_file = verify_tls, ca_file
        self.username, self.password = username, password


    def message(self, token: str) -> bytes:
        """The probe message: small, plain text, the token in a header and in the Subject."""
        sender = self.mailbox.return_address
        return ("\r\n".join([
            f"From: mailgate probe <{sender}>", f"To: <{self.rcpt}>",
            f"Subject: {SUBJECT_PREFIX} {token}", f"Date: {formatdate(localtime=False)}",
            f"Message-ID: <{token}@{self.helo}>", f"{PROBE_HEADER}: {token}",
            "MIME-Version: 1.0", "Content-Type: text/plain; charset=us-ascii", "",
            "Automatic test message of the mail gateway: it goes out through Exchange and comes",
            "back to the gateway, which consumes it. Nobody receives it.", ""]) + "\r\n").encode()

    async def check(self) -> ProbeResult:
        started = time.monotonic()
        disabled = self.mailbox.disabled
        if disabled:          # a configuration fault of ours, not Exchange's: never critical
            return failure(self.name, started, f"disabled: {disabled}", False)
        budget = check_budget(self.timeout)
        token = secrets.token_hex(16)
        waiter = self.mailbox.expect(token)
        phase = ["resolve"]
        try:
            async with asyncio.timeout(budget):
                hosts = list(await self.resolve())
                if not hosts:
                    return failure(self.name, started, "resolve: no hosts", self.critical)
                submitted = await self._submit(hosts, token, started, budget, phase)
                if not submitted.startswith("submitted"):
                    return failure(self.name, started, submitted, self.critical)
                phase[0] = f"no return ({submitted})"
                ok, detail, back = await waiter
        except TimeoutError:
            return failure(self.name, started, f"{phase[0]}: timeout after {budget:.1f}s", self.critical)
        except Exception as e:             # ResolveError, a bad spec, ...
            return failure(self.name, started, f"{phase[0]}: {describe(e)}", self.critical)
        finally:
            self.mailbox.forget(token)
        if not ok:
            return failure(self.name, started, f"{detail} ({submitted})", self.critical)
        latency = back - started
        return ProbeResult(self.name, True, time.time(), latency,
                           f"returned after {latency:.2f}s ({submitted})", self.critical)

    async def _submit(self, hosts: HostList, token: str, started: float, budget: float,
                      phase: list[str]) -> str:
        """Try each host in turn; ``submitted via HOST: REPLY`` or the last host's error."""
        errors = []
        data = self.message(token)
        for host, address, port in hosts:
            label = f"{host}[{address}]:{port}" if host != address else f"[{address}]:{port}"
            phase[0] = f"submit {label}"
            step = ["connect"]
            remaining = max(budget - (time.monotonic() - started), 0.01)
            smtp = aiosmtplib.SMTP(hostname=address, port=port, local_hostname=self.helo,
                                   timeout=remaining, start_tls=False)
            try:
                reply = await self._session(smtp, host, data, step)
                return f"submitted via {label}: {reply}"
            except aiosmtplib.SMTPResponseException as e:
                errors.append(f"submit {label} {step[0]}: {e.code} {e.message}".strip())
            except (aiosmtplib.SMTPException, OSError, ssl.SSLError, ValueError) as e:
                cause = e.__cause__ if isinstance(e, aiosmtplib.SMTPConnectError) and e.__cause__ else e
                errors.append(f"submit {label} {step[0]}: {describe(cause)}")
            finally:
                smtp.close()
        return "; ".join(errors)[:400]

    async def _session(self, smtp: aiosmtplib.SMTP, host: str, data: bytes, step: list[str]) -> str:
        await smtp.connect()
        step[0] = "EHLO"
        await smtp.ehlo()
        if self.tls != "none" and smtp.supports_extension("starttls"):
            step[0] = "STARTTLS"
            await smtp.starttls(server_hostname=host, tls_context=self._tls_context())
            await smtp.ehlo()
        elif self.tls == "required":
            step[0] = "STARTTLS"
            raise aiosmtplib.SMTPNotSupported("not offered (required before AUTH)" if self.username
                                              else "not offered (tls=required)")
        if self.username:
            step[0] = "AUTH"
            await smtp.login(self.username, self.password)
        step[0] = "MAIL FROM"          # the return address: a bounce of the probe comes back too
        await smtp.mail(self.mailbox.return_address)
        step[0] = "RCPT TO"
        await smtp.rcpt(self.rcpt)
        step[0] = "DATA"
        reply = await smtp.data(data)
        try:
            await smtp.quit()
        except (aiosmtplib.SMTPException, OSError):
            pass
        return f"{reply.code} {reply.message}".strip()

    def _tls_context(self) -> ssl.SSLContext:
        return client_tls_context(self.verify_tls, self.ca_file)
