"""`mailgate doctor`: a preflight that says, before an outage, what will break.

One line per check: ``LEVEL  CHECK  DETAIL  — HOW TO FIX`` (the fix only for WARN and FAIL);
``--json`` prints ``{"worst": ..., "seconds": ..., "checks": [{level, check, detail, fix}]}``.
Exit status by the worst level: 0 all OK, 1 a WARN, 2 a FAIL. The checks (docs/doctor.md):

    mx DOMAIN        each accepted domain's MX points at this gateway: a target named
                     server.hostname, or resolving to one of our addresses
    spf DOMAIN       the domain's SPF record (RFC 7208) passes each of our outbound addresses
    dkim SEL._domainkey.DOMAIN   each webmail.dkim key's TXT record carries our public key
    route DOMAIN     the smarthost chain resolves as the router resolves it (MX → hosts → A/AAAA)
    smarthost HOST[ADDR]:PORT    each address answers EHLO, offers STARTTLS, and its certificate
                     verifies (routing.smarthost_ca_file honoured) with days to expiry
    canary ADDRESS   a smarthost accepts the SMTP probe's RCPT TO
    directory        the recipient directory loads; its entries per accepted domain
    alerts           alert channels are configured (continuity.alert_urls, alert_mail_to)
    disk             free space for the spool and at the last 24 h's volume, days left
    spool            a PostgreSQL spool: reachable, the primary, durable commits, schema
                     version, synchronous standby, nodes beating (doctor_spool.py)

Our outbound addresses (for SPF) are the A/AAAA of ``server.hostname`` (the name we say in EHLO
and that receivers check) plus every SMTP listener address (``smtp.listen``,
``[[smtp.listeners]]``) that is globally routable (a public address we are bound to is one we
send from). Every check is bounded: DNS by ``dns.lifetime``,
an SMTP session by CHECK_TIMEOUT, and each check as a whole by CHECK_TIMEOUT. Reads the spool
(volume of the last 24 h); writes nothing. The DNS checks are here (with their DNS, SPF and DKIM
helpers in doctor_dns.py), the smarthost and canary checks in doctor_smtp.py, the directory,
alerts and disk checks in doctor_local.py.
"""
from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import asdict, dataclass

from gateway.config import Config, parse_listen
from gateway.doctor_dns import (Lookup, Missing, SpfEvaluator, TempFail, dkim_public_key,
                                dkim_record_key, parse_tags)

__all__ = ["Check", "run_checks", "format_line", "worst", "CHECK_TIMEOUT"]

CHECK_TIMEOUT = 20.0           # seconds any one check may take
LEVELS = ("OK", "WARN", "FAIL")


@dataclass
class Check:
    level: str          # OK | WARN | FAIL
    check: str
    detail: str
    fix: str = ""


def worst(checks: list[Check]) -> str:
    return max((c.level for c in checks), key=LEVELS.index, default="OK")


def format_line(c: Check, width: int = 0) -> str:
    line = f"{c.level:<4}  {c.check:<{width}}  {c.detail}"
    return line + (f"  — {c.fix}" if c.fix and c.level != "OK" else "")


class Context:
    """What the checks share: the configuration, one DNS lookup, our names and addresses."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        d = cfg.dns
        self.dns = Lookup(d.nameservers or None, d.port, d.timeout, d.lifetime)
        self.hostname = cfg.server.hostname.rstrip(".").lower()
        self.our_addresses: list[str] = []
        self.outbound: list[str] = []
        self.hostname_error = ""
        self.canary_replies: list[tuple[str, tuple[int, str] | None, str]] = []

    async def learn_addresses(self) -> None:
        try:
            mine = await self.dns.addresses(self.hostname)
        except (Missing, TempFail) as e:
            mine, self.hostname_error = [], str(e)
        listen = []
        for spec in [lst.address for lst in self.cfg.smtp.all_listeners()]:
            try:
                ip = ipaddress.ip_address(parse_listen(spec)[0])
            except ValueError:
                continue
            if not (ip.is_loopback or ip.is_unspecified):
                listen.append(ip)
        self.our_addresses = list(dict.fromkeys(mine + [str(ip) for ip in listen]))
        self.outbound = list(dict.fromkeys(mine + [str(ip) for ip in listen if ip.is_global]))


async def check_mx(ctx: Context, domain: str) -> list[Check]:
    name = f"mx {domain}"
    fix = f"publish `{domain}. MX 10 {ctx.hostname}.` (server.hostname)"
    try:
        records = await ctx.dns.mx(domain)
    except Missing:
        return [Check("FAIL", name, f"{domain} does not exist (NXDOMAIN)", fix)]
    except TempFail as e:
        return [Check("WARN", name, f"lookup failed: {e}", "check dns.nameservers and retry")]
    if not records:
        return [Check("FAIL", name, "no MX record (mail goes to the domain's A/AAAA)", fix)]
    if len(records) == 1 and records[0][1] in ("", "."):
        return [Check("FAIL", name, "null MX: the domain refuses all mail (RFC 7505)", fix)]
    ours, others = [], []
    for pref, target in records:
        addrs = []
        try:
            addrs = await ctx.dns.addresses(target)
        except (Missing, TempFail):
            pass
        mine = target == ctx.hostname or bool(set(addrs) & set(ctx.our_addresses))
        (ours if mine else others).append(f"{pref} {target}")
    detail = f"ours: {', '.join(ours) or 'none'}; not ours: {', '.join(others) or 'none'}"
    if not ours:
        return [Check("FAIL", name, detail, fix)]
    if others:
        return [Check("WARN", name, detail, "mail to the other MX hosts bypasses the gateway and "
                      "its continuity: remove them, or run mailgate there too")]
    return [Check("OK", name, detail)]


async def check_spf(ctx: Context, domain: str) -> list[Check]:
    name = f"spf {domain}"
    if not ctx.outbound:
        why = ctx.hostname_error or f"{ctx.hostname} has no A/AAAA"
        return [Check("WARN", name, f"our outbound addresses are unknown ({why})",
                      f"publish A/AAAA records for server.hostname {ctx.hostname}")]
    results = []
    for ip in ctx.outbound:
        results.append((ip, await SpfEvaluator(ctx.dns).check(ip, domain)))
    detail = "; ".join(f"{ip}: {r.result} ({r.detail}, DNS terms: {r.lookups})" for ip, r in results)
    skipped = sorted({t for _, r in results for t in r.skipped})
    if skipped:
        detail += f"; not evaluated: {' '.join(skipped)}"
    bad = [ip for ip, r in results if r.result not in ("pass", "none", "temperror")]
    add = " ".join(f"ip{ipaddress.ip_address(ip).version}:{ip}" for ip in ctx.outbound)
    if bad or any(r.result == "permerror" for _, r in results):
        return [Check("FAIL", name, detail, f"add `{add}` to the v=spf1 record of {domain} "
                      "before its -all/~all (at most 10 DNS-querying terms)")]
    if any(r.result == "none" for _, r in results):
        return [Check("WARN", name, detail, f'publish `{domain}. TXT "v=spf1 {add} ... -all"`')]
    if any(r.result == "temperror" for _, r in results):
        return [Check("WARN", name, detail, "DNS failed: check dns.nameservers and retry")]
    return [Check("OK", name, detail)]


async def check_dkim(ctx: Context, key) -> list[Check]:
    where = f"{key.selector}._domainkey.{key.domain}"
    name = f"dkim {where}"
    try:
        ours = await asyncio.to_thread(dkim_public_key, key.key_file, key.algorithm)
    except (OSError, ValueError) as e:
        return [Check("FAIL", name, f"cannot read the key: {e}",
                      f"mailgate dkim keygen {key.domain} {key.selector}")]
    try:
        texts = await ctx.dns.txt(where)
    except (Missing, TempFail) as e:
        texts, error = [], str(e)
    else:
        error = "no TXT record"
    fix = (f"publish the record `mailgate dkim keygen` printed for this key at {where} "
           f"(k={'ed25519' if key.algorithm.startswith('ed25519') else 'rsa'}; p= from {key.key_file})")
    records = [parse_tags(t) for t in texts if "p=" in t]
    if not records:
        return [Check("FAIL", name, error if not texts else "no DKIM key record", fix)]
    want_k = "ed25519" if key.algorithm == "ed25519-sha256" else "rsa"
    for tags in records:
        if tags.get("k", "rsa").lower() != want_k or not tags.get("p"):
            continue
        try:
            if dkim_record_key(tags["p"], key.algorithm) == ours:
                return [Check("OK", name, f"k={want_k}, p= matches {key.key_file}")]
        except ValueError:
            continue
    seen = ", ".join(f"k={t.get('k', 'rsa')} p={(t.get('p') or '(revoked)')[:16]}…" for t in records)
    return [Check("FAIL", name, f"no record carries our {want_k} key (found {seen})", fix)]


async def _bounded(name: str, coro) -> list[Check]:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT):
            return await coro
    except TimeoutError:
        return [Check("FAIL", name, f"did not finish within {CHECK_TIMEOUT:.0f}s",
                      "check DNS (dns.nameservers) and the network from here")]
    except Exception as e:          # a check's own bug must not hide the other checks
        return [Check("FAIL", name, f"the check failed: {type(e).__name__}: {e}",
                      "report this as a mailgate bug")]


async def _sync(fn, *args) -> list[Check]:
    return await asyncio.to_thread(fn, *args)


async def run_checks(cfg: Config) -> list[Check]:
    """Every check, in the order of the module docstring. Never raises for what it finds."""
    from gateway.doctor_local import check_alerts, check_directory, check_disk
    from gateway.doctor_spool import check_spool
    from gateway.doctor_smtp import check_canary, check_routes
    ctx = Context(cfg)
    await _bounded("server.hostname", ctx.learn_addresses())
    domains = cfg.relay.accepted_domains
    groups = [_bounded(f"mx {d}", check_mx(ctx, d)) for d in domains]
    groups += [_bounded(f"spf {d}", check_spf(ctx, d)) for d in domains]
    groups += [_bounded(f"dkim {k.selector}._domainkey.{k.domain}", check_dkim(ctx, k))
               for k in cfg.webmail.dkim]
    groups.append(_bounded("route", check_routes(ctx)))
    groups += [_bounded("directory", _sync(check_directory, cfg)),
               _bounded("alerts", _sync(check_alerts, cfg)), _bounded("disk", _sync(check_disk, cfg)),
               _bounded("spool", _sync(check_spool, cfg))]
    results = await asyncio.gather(*groups)
    out = [c for group in results for c in group]
    if not cfg.webmail.dkim and cfg.webmail.enabled and cfg.webmail.sending:
        out.insert(2 * len(domains), Check("WARN", "dkim", "webmail.dkim is empty: mail sent from "
                                           "the webmail is not signed", "mailgate dkim keygen DOMAIN SELECTOR"))
    canary = check_canary(ctx)
    at = next(i for i, c in enumerate(out) if c.check == "directory")
    return out[:at] + canary + out[at:]


def as_json(checks: list[Check], seconds: float) -> dict:
    return {"worst": worst(checks), "seconds": round(seconds, 3),
            "checks": [asdict(c) for c in checks]}
