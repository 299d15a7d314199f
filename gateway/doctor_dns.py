"""DNS checks of `mailgate doctor`: the accepted domains' MX, their SPF (RFC 7208) for our
outbound addresses, and the DKIM key records (RFC 6376 §3.6.1, RFC 8463) of ``webmail.dkim``.

All lookups go through one ``Lookup`` (dnspython's async resolver with ``dns.nameservers``,
``dns.port``, ``dns.timeout`` and ``dns.lifetime``), so every query is bounded by the lifetime.
``Lookup`` maps dnspython's outcomes: NXDOMAIN → ``Missing("NXDOMAIN")``, NOERROR without the
type → ``[]``, anything else (SERVFAIL/REFUSED, timeout) → ``TempFail``. Reads no queue state.

SPF: ``SpfEvaluator.check(ip, domain)`` is RFC 7208 §4 check_host() for the mechanisms ``all``,
``include``, ``a``, ``mx``, ``ip4``, ``ip6``, ``exists`` (without macros) and ``ptr`` (counted,
never matched: RFC 7208 §5.5 says do not use it), and the ``redirect`` modifier. At most 10
DNS-querying terms (include, a, mx, ptr, exists, redirect) per evaluation, at most 10 names per
``mx`` and at most 2 void lookups (§4.6.4): beyond that the result is ``permerror``. A domain-spec
with macros (``%{...}``, §7) is not expanded: the term is skipped and named in the detail.
"""
from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass, field

import dns.asyncresolver
import dns.exception
import dns.resolver

__all__ = ["Lookup", "Missing", "TempFail", "SpfEvaluator", "SpfResult", "parse_tags",
           "dkim_public_key", "dkim_record_key"]

MAX_LOOKUPS = 10       # RFC 7208 §4.6.4: DNS-querying terms per check_host()
MAX_VOID = 2           # §4.6.4: lookups answering NXDOMAIN or no records
MAX_MX_NAMES = 10      # §4.6.4: names of one mx mechanism


class Missing(Exception):
    """The name does not exist (NXDOMAIN)."""


class TempFail(Exception):
    """No usable answer now (SERVFAIL, REFUSED, timeout)."""


class Lookup:
    """Bounded DNS queries; ``nameservers`` None → the system resolver."""

    def __init__(self, nameservers: list[str] | None, port: int = 53, timeout: float = 2.0,
                 lifetime: float = 5.0) -> None:
        if nameservers:
            self.r = dns.asyncresolver.Resolver(configure=False)
            self.r.nameservers, self.r.port = list(nameservers), port
        else:
            self.r = dns.asyncresolver.Resolver()
        self.r.timeout, self.r.lifetime = timeout, lifetime
        self.r.cache = dns.resolver.Cache()

    async def _query(self, name: str, rdtype: str) -> list:
        try:
            return list(await self.r.resolve(name, rdtype, search=False))
        except dns.resolver.NXDOMAIN:
            raise Missing(f"{name}: NXDOMAIN") from None
        except dns.resolver.NoAnswer:
            return []
        except dns.exception.Timeout:
            raise TempFail(f"{name} {rdtype}: DNS timeout") from None
        except dns.exception.DNSException as e:
            raise TempFail(f"{name} {rdtype}: {type(e).__name__}") from None

    async def txt(self, name: str) -> list[str]:
        """Each TXT record's strings joined (RFC 7208 §3.3), decoded as UTF-8 (replaced)."""
        return [b"".join(r.strings).decode("utf-8", "replace") for r in await self._query(name, "TXT")]

    async def mx(self, name: str) -> list[tuple[int, str]]:
        """(preference, exchange without the trailing dot, lower case), sorted by preference."""
        recs = await self._query(name, "MX")
        return sorted((r.preference, r.exchange.to_text().rstrip(".").lower()) for r in recs)

    async def addresses(self, name: str) -> list[str]:
        """A then AAAA; ``[]`` if the name has neither. Missing/TempFail only if both failed so."""
        out, errors = [], []
        for rdtype in ("A", "AAAA"):
            try:
                out += [r.address for r in await self._query(name, rdtype)]
            except (Missing, TempFail) as e:
                errors.append(e)
        if not out and errors:
            raise next((e for e in errors if isinstance(e, TempFail)), errors[0])
        return out


@dataclass
class SpfResult:
    """``result``: pass, fail, softfail, neutral, none, permerror, temperror (RFC 7208 §2.6);
    ``detail``: the mechanism that matched or the error; ``lookups``: DNS terms used."""
    result: str
    detail: str
    lookups: int = 0
    skipped: list[str] = field(default_factory=list)


class _PermError(Exception):
    pass


class _TempError(Exception):
    pass


_QUAL = {"+": "pass", "-": "fail", "~": "softfail", "?": "neutral"}
_MECH = re.compile(r"^([+\-~?]?)(all|include|a|mx|ptr|ip4|ip6|exists)(?::([^/]*))?"
                   r"(?:/(\d+))?(?://(\d+))?$", re.I)


class SpfEvaluator:
    """check_host() over ``lookup``; one instance per (ip, domain) check keeps the counters."""

    def __init__(self, lookup: Lookup) -> None:
        self.lookup = lookup

    async def check(self, ip: str, domain: str) -> SpfResult:
        self._lookups, self._void, self._skipped = 0, 0, []
        addr = ipaddress.ip_address(ip)
        try:
            res, detail = await self._check_host(addr, domain.rstrip(".").lower(), top=True)
        except _PermError as e:
            res, detail = "permerror", str(e)
        except _TempError as e:
            res, detail = "temperror", str(e)
        return SpfResult(res, detail, self._lookups, self._skipped)

    async def _record(self, domain: str) -> str | None:
        try:
            texts = await self.lookup.txt(domain)
        except Missing:
            return None
        except TempFail as e:
            raise _TempError(str(e)) from None
        spf = [t for t in texts if re.match(r"^v=spf1(\s|$)", t, re.I)]
        if len(spf) > 1:
            raise _PermError(f"{domain}: {len(spf)} v=spf1 records (RFC 7208 §4.5: one)")
        return spf[0] if spf else None

    def _count(self, term: str) -> None:
        self._lookups += 1
        if self._lookups > MAX_LOOKUPS:
            raise _PermError(f"more than {MAX_LOOKUPS} DNS-querying terms (at {term}; "
                             "RFC 7208 §4.6.4)")

    def _void_lookup(self) -> None:
        self._void += 1
        if self._void > MAX_VOID:
            raise _PermError(f"more than {MAX_VOID} void lookups (RFC 7208 §4.6.4)")

    async def _names(self, coro) -> list:
        try:
            found = await coro
        except Missing:
            found = []
        except TempFail as e:
            raise _TempError(str(e)) from None
        if not found:
            self._void_lookup()
        return found

    async def _check_host(self, ip, domain: str, top: bool = False) -> tuple[str, str]:
        record = await self._record(domain)
        if record is None:
            return "none", f"{domain}: no v=spf1 record"
        redirect = None
        for term in record.split()[1:]:
            name, eq, value = term.partition("=")
            if eq and re.fullmatch(r"[A-Za-z][\w.-]*", name):
                if name.lower() == "redirect":
                    redirect = value
                continue               # exp= and unknown modifiers are ignored (§6)
            m = _MECH.match(term)
            if not m:
                raise _PermError(f"{domain}: unknown term {term!r}")
            qual, mech, arg, c4, c6 = m.groups()
            mech = mech.lower()
            if arg and "%" in arg:
                self._skipped.append(term)
                if mech in ("include", "a", "mx", "ptr", "exists"):
                    self._count(term)
                continue
            if await self._matches(ip, domain, mech, arg, c4, c6, term):
                return _QUAL[qual or "+"], f"{domain}: {term}"
        if redirect:
            self._count(f"redirect={redirect}")
            if "%" in redirect:
                self._skipped.append(f"redirect={redirect}")
                return "neutral", f"{domain}: redirect with macros not evaluated"
            res, detail = await self._check_host(ip, redirect.rstrip(".").lower())
            if res == "none":
                raise _PermError(f"{domain}: redirect={redirect} has no SPF record")
            return res, detail
        return "neutral", f"{domain}: no term matched (default ?all)"

    async def _matches(self, ip, domain, mech, arg, c4, c6, term) -> bool:
        if mech == "all":
            return True
        if mech in ("ip4", "ip6"):
            try:
                net = ipaddress.ip_network(f"{arg}/{c4}" if c4 else arg, strict=False)
            except ValueError:
                raise _PermError(f"{domain}: bad network in {term!r}") from None
            return ip.version == net.version and ip in net
        self._count(term)
        target = (arg or domain).rstrip(".").lower()
        if mech == "include":
            if not arg:
                raise _PermError(f"{domain}: include without a domain")
            res, _ = await self._check_host(ip, target)
            if res == "none":
                raise _PermError(f"{domain}: include:{target} has no SPF record")
            return res == "pass"
        if mech == "ptr":
            self._skipped.append(term)
            return False
        if mech == "exists":
            return bool(await self._names(self.lookup.addresses(target)))
        hosts = [target]
        if mech == "mx":
            hosts = [n for _, n in await self._names(self.lookup.mx(target))]
            if len(hosts) > MAX_MX_NAMES:
                raise _PermError(f"{target}: more than {MAX_MX_NAMES} MX names (RFC 7208 §4.6.4)")
        for host in hosts:
            for a in await self._names(self.lookup.addresses(host)):
                cidr = c4 if ip.version == 4 else c6
                net = ipaddress.ip_network(f"{a}/{cidr}" if cidr else a, strict=False)
                if ip.version == net.version and ip in net:
                    return True
        return False


def parse_tags(text: str) -> dict[str, str]:
    """A DKIM tag list (RFC 6376 §3.2): ``{tag: value}`` with folding whitespace removed."""
    tags = {}
    for part in text.split(";"):
        name, eq, value = part.partition("=")
        if eq:
            tags[name.strip().lower()] = re.sub(r"\s+", "", value)
    return tags


def dkim_public_key(key_file, algorithm: str) -> bytes:
    """The public key of our private key file as a DKIM ``p=`` value would carry it, decoded:
    RSA → (modulus, exponent) serialised as ``b"n:e"``; Ed25519 → the 32 raw bytes (RFC 8463 §4).
    The RSA file is PEM (PKCS#1 or PKCS#8), the Ed25519 file the base64 32-byte seed.
    Raises ValueError for an unreadable or malformed key (OSError for a missing file)."""
    data = open(key_file, "rb").read()
    if algorithm == "ed25519-sha256":
        import nacl.signing
        seed = base64.b64decode(b"".join(data.split()), validate=True)
        if len(seed) != 32:
            raise ValueError(f"{key_file}: an Ed25519 seed is 32 bytes, this is {len(seed)}")
        return bytes(nacl.signing.SigningKey(seed).verify_key)
    import dkim.crypto
    try:
        key = dkim.crypto.parse_pem_private_key(data)
    except Exception as e:                    # UnparsableKeyError, ASN1FormatError, binascii
        raise ValueError(f"{key_file}: not a PEM RSA private key ({e})") from None
    return f"{key['modulus']}:{key['publicExponent']}".encode()


def dkim_record_key(p: str, algorithm: str) -> bytes:
    """The ``p=`` value of a DKIM key record in the form of dkim_public_key(). RSA accepts
    SubjectPublicKeyInfo and bare RSAPublicKey DER. Raises ValueError when it does not parse."""
    try:
        raw = base64.b64decode(p, validate=True)
    except ValueError:
        raise ValueError("p= is not base64") from None
    if algorithm == "ed25519-sha256":
        if len(raw) != 32:
            raise ValueError(f"p= is {len(raw)} bytes, an Ed25519 key is 32")
        return raw
    import dkim.crypto
    try:
        key = dkim.crypto.parse_public_key(raw)
    except Exception as e:
        raise ValueError(f"p= is not an RSA public key ({e})") from None
    return f"{key['modulus']}:{key['publicExponent']}".encode()
