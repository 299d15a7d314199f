"""SMTP session check of `mailgate doctor`: one smarthost address as the gateway would use it.

``check_host()`` connects to ADDRESS:PORT, reads the 220 greeting, sends EHLO with our hostname,
looks for STARTTLS (RFC 3207), and runs the TLS handshake with certificate verification against
the host's *name* (the MX target or smarthost name, as delivery does), trusting
``routing.smarthost_ca_file`` or else the system store. On a valid certificate it reports the days
to its notAfter. It then sends ``MAIL FROM:<probe@HOSTNAME>`` and ``RCPT TO:<canary>`` (the SMTP
probe's session: no DATA, no message), RSET and QUIT, and reports the canary's reply. When the
verified handshake fails but the gateway does not verify (``routing.smarthost_verify_tls = false``),
the canary is tried on a second connection with the gateway's own unverified TLS. The whole check
is bounded by ``timeout`` seconds.

``check_routes()`` resolves every distinct next hop of the accepted domains as the router does
(gateway.router, gateway.delivery.mx) and runs ``check_host()`` on each address (the first
MAX_ADDRESSES per route), all concurrently; ``check_canary()`` then judges the canary's replies.
Reads and writes no queue state.
"""
from __future__ import annotations

import asyncio
import ssl
import time
from dataclasses import dataclass

import aiosmtplib

from gateway.delivery.transport import client_tls_context
from gateway.doctor import Check, Context

__all__ = ["HostReport", "check_host", "check_routes", "check_canary"]

SMTP_TIMEOUT = 10.0            # seconds for one smarthost session
MAX_ADDRESSES = 10             # smarthost addresses checked per route
CERT_WARN_DAYS = 14            # a certificate expiring sooner is a WARN


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


async def check_routes(ctx: Context) -> list[Check]:
    from gateway.delivery.mx import MxResolver, ResolveError
    from gateway.router import Router
    cfg, r = ctx.cfg, ctx.cfg.routing
    d = cfg.dns
    resolver = MxResolver(d.nameservers or None, d.port, d.timeout, d.lifetime)
    router = Router(cfg)
    hops: dict[str, tuple[list[str], object]] = {}
    for domain in cfg.relay.accepted_domains:
        hop = router.for_domain(domain)
        hops.setdefault(hop.spec, ([], hop))[0].append(domain)
    canary = cfg.probes.canary_rcpt or f"postmaster@{cfg.relay.accepted_domains[0]}"
    want_canary = cfg.continuity.mode != "off" and cfg.probes.smtp
    async def one(spec: str, domains: list[str], hop) -> list[Check]:
        name = f"route {','.join(domains)}"
        try:
            groups = await resolver.resolve(spec, hop.port)
        except (ResolveError, ValueError) as e:
            return [Check("FAIL", name, f"{spec}: {e}", f"fix the DNS of {spec} or "
                          "routing.default_smarthost / routing.routes")]
        hosts = [(h.name, a, h.port) for g in groups for h in g for a in h.addresses]
        out = [Check("OK", name, f"{spec} → " + "; ".join(
            f"pref {g[0].preference}: " + ", ".join(f"{h.name} [{' '.join(h.addresses)}]" for h in g)
            for g in groups))]
        reports = await asyncio.gather(*(check_host(
            n, a, p, helo=ctx.hostname, tls_mode=r.smarthost_tls, verify=r.smarthost_verify_tls,
            ca_file=str(r.smarthost_ca_file) if r.smarthost_ca_file else None,
            canary=canary if want_canary else None, timeout=SMTP_TIMEOUT)
            for n, a, p in hosts[:MAX_ADDRESSES]))
        for (n, a, p), rep in zip(hosts, reports):
            out.append(_host_check(f"smarthost {n}[{a}]:{p}", rep, r))
            ctx.canary_replies.append((f"{n}[{a}]", rep.canary, rep.error))
        return out

    # the routes concurrently: resolution (dns.lifetime) plus one session (SMTP_TIMEOUT) each
    done = await asyncio.gather(*(one(spec, domains, hop) for spec, (domains, hop) in hops.items()))
    return [c for checks in done for c in checks]


def _host_check(name: str, rep, r) -> Check:
    if not rep.connected:
        return Check("FAIL", name, rep.error, "start it or open the port from here; while it is "
                     "down the router skips it (delivery.dead_host_ttl) and the probe counts it failed")
    tls = "TLS off (routing.smarthost_tls = none)"
    if r.smarthost_tls != "none" and not rep.starttls:
        level = "FAIL" if r.smarthost_tls == "required" else "WARN"
        return Check(level, name, f"EHLO ok, no STARTTLS offered ({rep.ehlo})",
                     "enable STARTTLS on the Exchange receive connector")
    if rep.tls_error:
        what = f"EHLO ok, STARTTLS offered, certificate invalid: {rep.tls_error}"
        fix = ("renew or replace the certificate (its name must match the host name); "
               "routing.smarthost_ca_file must hold its CA")
        if r.smarthost_verify_tls:
            return Check("FAIL", name, what + " (delivery verifies it: mail to this host fails)", fix)
        return Check("WARN", name, what + " (not verified: routing.smarthost_verify_tls = false)", fix)
    if r.smarthost_tls != "none":
        tls = f"STARTTLS {rep.tls_version}, certificate valid for {rep.days_left:.0f} days"
    detail = f"EHLO ok, {tls}" + (f"; {rep.error}" if rep.error else "")
    if rep.days_left is not None and rep.days_left < CERT_WARN_DAYS:
        return Check("WARN", name, detail, "renew the certificate before it expires")
    if r.smarthost_tls == "none":
        return Check("WARN", name, detail, "set routing.smarthost_tls = \"required\"")
    return Check("OK", name, detail)


def check_canary(ctx: Context) -> list[Check]:
    cfg = ctx.cfg
    canary = cfg.probes.canary_rcpt or f"postmaster@{cfg.relay.accepted_domains[0]}"
    name = f"canary {canary}"
    if cfg.continuity.mode == "off":
        return [Check("OK", name, "continuity.mode = off: no probe")]
    if not cfg.probes.smtp:
        return [Check("WARN", name, "probes.smtp = false: no SMTP probe watches Exchange",
                      "set probes.smtp = true (or configure probes.http)")]
    replies = [f"{h}: {c[0]} {c[1]}" if c else f"{h}: {e or 'not reached'}"
               for h, c, e in ctx.canary_replies]
    if any(c and c[0] // 100 == 2 for _, c, _ in ctx.canary_replies):
        return [Check("OK", name, "accepted at RCPT by " + "; ".join(replies))]
    if not any(c for _, c, _ in ctx.canary_replies):
        return [Check("FAIL", name, "not tried: no smarthost session got as far as RCPT (see the smarthost lines)",
                      "bring a smarthost up; until then the probe fails and continuity holds mail")]
    return [Check("FAIL", name, "no smarthost accepts it: " + "; ".join(replies),
                  "set probes.canary_rcpt to a mailbox Exchange accepts, or the probe fails and "
                  "starts a false continuity event")]
