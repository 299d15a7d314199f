"""Smarthost / MX resolution: turn a route spec into preference groups of hosts to try.

RFC 5321 §5.1 order: MX first (sorted by preference, shuffled within a preference for load
sharing), then the hosts' A/AAAA; no MX at all (NoAnswer) means the implicit MX, the domain's
own A/AAAA at preference 0; if MX records exist the domain's own A/AAAA is never used; ``[host]``
or an IP literal skips MX (Postfix's syntax). Reads and writes no queue state.

Errors (all ``ResolveError``; ``permanent`` decides bounce vs defer)::

    null MX (RFC 7505 §3: one MX, exchange ".")         permanent 556 5.1.10
    NXDOMAIN for the domain / [host]                    permanent 550 5.1.2
    domain or [host] exists but has no A/AAAA           permanent 550 5.4.4
    no MX target has an address, and every target
      lookup said so definitively (NXDOMAIN/NoAnswer)   permanent 550 5.4.4 (as Postfix bounces
                                                          "Host or domain name not found")
    SERVFAIL/REFUSED (NoNameservers), timeout, or no
      usable MX target while some target lookup failed
      temporarily                                       temporary 451 4.4.3

An MX target without an address is skipped (logged) as long as another target has one.
"""
from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import re
from dataclasses import dataclass
from typing import Iterable, Sequence

import dns.asyncresolver
import dns.exception
import dns.resolver

__all__ = ["Host", "ResolveError", "MxResolver", "parse_target", "order_mx", "is_null_mx",
           "error_from_dns", "format_routes"]

log = logging.getLogger("mailgate.delivery.mx")

_NAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62})"
                   r"(?:\.[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,62}))*\.?$")


@dataclass(frozen=True)
class Host:
    """One host to connect to: ``addresses`` (IPv4/IPv6 strings) in the order to try."""
    name: str
    preference: int
    addresses: tuple[str, ...]
    port: int


class ResolveError(Exception):
    """Route resolution failed. ``permanent`` True → bounce, False → defer; ``status`` is the
    RFC 3463 code (e.g. "5.1.10"), ``code`` the SMTP-style reply code to record (556/550/451)."""

    def __init__(self, message: str, *, permanent: bool, status: str, code: int) -> None:
        super().__init__(message)
        self.permanent, self.status, self.code = permanent, status, code


def _ip(text: str) -> str | None:
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def parse_target(spec: str, default_port: int) -> tuple[str, int, bool]:
    """Split a route spec into ``(host, port, skip_mx)``.

    ``"[host]:port"``, ``"[host]"``, ``"[1.2.3.4]:2525"``, ``"[::1]:25"``, ``"[IPv6:::1]"`` and bare
    literals (``"1.2.3.4"``, ``"1.2.3.4:2525"``, ``"::1"``) skip MX; ``"name"``/``"name:2525"`` do not.
    Raises ValueError on anything else (empty, bad brackets, bad port, bad name)."""
    s = spec.strip()
    if s.startswith("["):
        close = s.find("]")
        if close < 0:
            raise ValueError(f"unclosed bracket in route {spec!r}")
        inner, rest = s[1:close], s[close + 1:]
        if inner[:5].lower() == "ipv6:":
            inner = inner[5:]
            if _ip(inner) is None or ":" not in inner:
                raise ValueError(f"bad IPv6 literal in route {spec!r}")
        if rest and not rest.startswith(":"):
            raise ValueError(f"junk after ']' in route {spec!r}")
        port = _port(rest[1:]) if rest else default_port
        host = _ip(inner) or inner.rstrip(".")
        if not _ip(inner) and not _NAME.match(inner):
            raise ValueError(f"bad host in route {spec!r}")
        return host, port, True
    if _ip(s):                                   # bare IPv4 or IPv6 literal, no port
        return _ip(s), default_port, True
    name, sep, port_text = s.rpartition(":") if ":" in s else (s, "", "")
    if sep and ":" in name:
        raise ValueError(f"IPv6 literal with a port needs brackets: {spec!r}")
    port = _port(port_text) if sep else default_port
    if _ip(name):
        return _ip(name), port, True
    if not _NAME.match(name):
        raise ValueError(f"bad host in route {spec!r}")
    return name.rstrip("."), port, False


def _norm(name: str) -> str:
    return name.rstrip(".").lower()


def is_null_mx(records: Sequence[tuple[int, str]]) -> bool:
    """True for a null MX (RFC 7505 §3): exactly one MX, whose exchange is the root ("." or "")."""
    return len(records) == 1 and _norm(records[0][1]) == ""


def order_mx(records: Iterable[tuple[int, str]], rng: random.Random) -> list[list[tuple[int, str]]]:
    """Group ``(preference, exchange)`` by preference ascending, shuffled within each group.

    Exchanges are compared case-insensitively without the trailing dot; a host listed twice keeps
    its best preference only; root-name targets are dropped (the caller detects a null MX first)."""
    best: dict[str, tuple[int, str]] = {}
    for pref, name in records:
        key = _norm(name)
        if key and (key not in best or pref < best[key][0]):
            best[key] = (int(pref), name.rstrip("."))
    groups: dict[int, list[tuple[int, str]]] = {}
    for pref, name in sorted(best.values()):
        groups.setdefault(pref, []).append((pref, name))
    out = []
    for pref in sorted(groups):
        group = groups[pref]
        rng.shuffle(group)
        out.append(group)
    return out


def error_from_dns(exc: BaseException, name: str, rdtype: str) -> ResolveError:
    """Map a dnspython failure to a ResolveError: NXDOMAIN → permanent 550 5.1.2; everything
    else (NoNameservers = SERVFAIL/REFUSED, LifetimeTimeout, other DNSException) → 451 4.4.3."""
    if isinstance(exc, dns.resolver.NXDOMAIN):
        return ResolveError(f"{name}: host or domain name not found (NXDOMAIN, type={rdtype})",
                            permanent=True, status="5.1.2", code=550)
    what = "timeout" if isinstance(exc, dns.exception.Timeout) else type(exc).__name__
    return ResolveError(f"{name}: temporary DNS failure for type={rdtype} ({what})",
                        permanent=False, status="4.4.3", code=451)


def _no_address(name: str) -> ResolveError:
    return ResolveError(f"{name}: no A/AAAA address", permanent=True, status="5.4.4", code=550)


class MxResolver:
    """Resolve route specs through one shared dnspython async resolver with a cache.

    ``nameservers`` None → the system resolver (/etc/resolv.conf); otherwise only those servers at
    ``port``. ``timeout``/``lifetime`` are seconds per server try / per whole query. A and AAAA
    are looked up concurrently; IPv4 addresses come first unless ``prefer_ipv6``."""

    def __init__(self, nameservers: list[str] | None = None, port: int = 53, timeout: float = 2.0,
                 lifetime: float = 5.0, rng: random.Random | None = None, *,
                 prefer_ipv6: bool = False) -> None:
        if nameservers is None:
            self._resolver = dns.asyncresolver.Resolver()
        else:
            self._resolver = dns.asyncresolver.Resolver(configure=False)
            self._resolver.nameservers = list(nameservers)
            self._resolver.port = port
        self._resolver.timeout, self._resolver.lifetime = timeout, lifetime
        self._resolver.cache = dns.resolver.Cache()
        self._rng = rng or random.Random()
        self.prefer_ipv6 = prefer_ipv6

    async def _records(self, name: str, rdtype: str) -> list:
        return list(await self._resolver.resolve(name, rdtype, search=False))

    async def addresses(self, name: str) -> tuple[str, ...]:
        """A and AAAA of ``name`` in the order to try; ``()`` if it definitively has none.
        Raises ResolveError (NXDOMAIN permanent, else temporary) only if no address was found."""
        results = await asyncio.gather(self._records(name, "A"), self._records(name, "AAAA"),
                                       return_exceptions=True)
        v4, v6, failures = [], [], []
        for rdtype, res, bucket in (("A", results[0], v4), ("AAAA", results[1], v6)):
            if isinstance(res, dns.resolver.NoAnswer):
                continue
            if isinstance(res, BaseException):
                if not isinstance(res, dns.exception.DNSException):
                    raise res
                failures.append(error_from_dns(res, name, rdtype))
            else:
                bucket.extend(r.address for r in res)
        found = tuple(v6 + v4 if self.prefer_ipv6 else v4 + v6)
        if found:
            return found
        temporary = [f for f in failures if not f.permanent]
        if failures:
            raise (temporary or failures)[0]
        return ()

    async def resolve(self, spec: str, default_port: int = 25) -> list[list[Host]]:
        """Preference groups of ``Host`` in the order to try (see the module docstring for the
        RFC 5321 §5.1 / RFC 7505 rules). Raises ValueError on a bad spec, ResolveError on failure."""
        host, port, skip_mx = parse_target(spec, default_port)
        if _ip(host):
            return [[Host(host, 0, (host,), port)]]
        if skip_mx:
            return [[await self._implicit(host, port)]]
        try:
            records = [(r.preference, r.exchange.to_text()) for r in await self._records(host, "MX")]
        except dns.resolver.NoAnswer:
            return [[await self._implicit(host, port)]]
        except dns.exception.DNSException as exc:
            raise error_from_dns(exc, host, "MX") from exc
        if is_null_mx(records):
            raise ResolveError(f"{host}: domain does not accept mail (null MX)",
                               permanent=True, status="5.1.10", code=556)
        groups = order_mx(records, self._rng)
        targets = [name for group in groups for _, name in group]
        found = await asyncio.gather(*(self.addresses(n) for n in targets), return_exceptions=True)
        by_name = dict(zip(targets, found))
        out, errors = [], []
        for group in groups:
            hosts = []
            for pref, name in group:
                res = by_name[name]
                if isinstance(res, tuple) and res:
                    hosts.append(Host(name, pref, res, port))
                    continue
                if isinstance(res, BaseException) and not isinstance(res, ResolveError):
                    raise res
                errors.append(res or _no_address(name))
                log.warning("mx_target_skipped", extra={"domain": host, "target": name,
                                                        "preference": pref, "reason": str(errors[-1])})
            out += [hosts] if hosts else []
        if out:
            return out
        temporary = [e for e in errors if not e.permanent]
        if temporary:
            raise ResolveError(f"{host}: no MX host has an address ({temporary[0]})",
                               permanent=False, status="4.4.3", code=451)
        raise ResolveError(f"{host}: no MX host has an address", permanent=True, status="5.4.4",
                           code=550)

    async def _implicit(self, host: str, port: int) -> Host:
        addrs = await self.addresses(host)
        if not addrs:
            raise _no_address(host)
        return Host(host, 0, addrs, port)


def format_routes(groups: list[list[Host]]) -> str:
    """A table for ``mailgate routes resolve DOMAIN``: a heading, then one line per host in the
    order tried (preference, host, port, addresses); no trailing newline."""
    rows = [("PREF", "HOST", "PORT", "ADDRESSES")]
    rows += [(str(h.preference), h.name, str(h.port), ", ".join(h.addresses) or "-")
             for group in groups for h in group]
    if len(rows) == 1:
        return "(no routes)"
    w = [max(len(r[i]) for r in rows) for i in range(3)]
    return "\n".join(f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  {r[2]:<{w[2]}}  {r[3]}" for r in rows)
