"""Parse the RCPT TO path as aiosmtpd hands it to `handle_RCPT` into a `Mailbox`.

Input is the text between `<` and `>` (brackets already removed; a stray pair is tolerated).
Grammar: RFC 5321 §4.1.2 (Path, Mailbox, Local-part, Domain, address-literal) with the UTF-8
extensions of RFC 6531 (SMTPUTF8). What the parser does with each oddity:

- source route `@a,@b:user@dom` (RFC 5321 §4.1.1.3, Appendix C): syntax checked, route ignored;
- quoted local part `"a@b"@dom`: kept as given in `local`; `routed` reports the `@` inside;
- domain: surrounding spaces and one trailing dot dropped, lower-cased, ideographic full stops
  read as dots (RFC 3490 §3.1); internationalised labels (non-ASCII or `xn--`) mapped and checked
  by the `idna` package (UTS #46 mapping, IDNA 2008 rules) and kept as U-labels, so
  `xn--bcher-kva.de`, `BÜCHER.de` and `bücher.de` are one domain; `to_ascii_domain` gives the
  A-label form for the wire and DNS;
- address literal `[192.0.2.1]`, `[IPv6:2001:db8::1]`: validated, kept in canonical form;
- `postmaster` with no domain (RFC 5321 §4.5.1): `Mailbox("postmaster", "")`;
- empty path `<>`, anything else without a domain, bad characters: `AddressError` (501 5.1.3).

Consecutive or edge dots in an unquoted local part (`a..b@`) are accepted, as Postfix does:
real mailboxes have them and they carry no routing.
"""
from __future__ import annotations

import ipaddress
import unicodedata
from dataclasses import dataclass

import idna

from policies.verdict import RCPT_BAD_SYNTAX, RCPT_TOO_LONG, Verdict

__all__ = ["Mailbox", "AddressError", "parse_rcpt", "normalize_domain", "to_ascii_domain"]

_ATEXT = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
                   "!#$%&'*+-/=?^_`{|}~")
_LDH = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-_")
_FULL_STOPS = str.maketrans({"\u3002": ".", "\uff0e": ".", "\uff61": "."})
_ROUTING_CHARS = frozenset("%!@")
MAX_LOCAL = 64      # octets, RFC 5321 §4.5.3.1.1
MAX_DOMAIN = 255    # octets, RFC 5321 §4.5.3.1.2
MAX_ADDRESS = 254   # 256-octet path minus the angle brackets, RFC 5321 §4.5.3.1.3


class AddressError(ValueError):
    """The RCPT path cannot be parsed. `.verdict` is the reply to send (501 5.1.3)."""

    def __init__(self, message: str, verdict: Verdict = RCPT_BAD_SYNTAX) -> None:
        super().__init__(message)
        self.verdict = verdict


@dataclass(frozen=True)
class Mailbox:
    """A parsed recipient.

    `local` is the local part as given (case and quotes kept: RFC 5321 §2.4 lets a server
    treat it as case-sensitive); `domain` is normalised (see `normalize_domain`), "" only for
    the bare `postmaster`. Lookups use `key`, which is case-insensitive, as Exchange is.
    """

    local: str
    domain: str

    @property
    def address(self) -> str:
        """`local@domain`, or just `local` for the bare `postmaster`."""
        return f"{self.local}@{self.domain}" if self.domain else self.local

    @property
    def key(self) -> str:
        """Case-folded canonical address for directory lookups: `"john"@X` keys as `john@x`."""
        content = _unquote(self.local)
        if content and all(_is_atext(c) or c == "." for c in content):
            local = content
        else:
            local = '"' + content.replace("\\", "\\\\").replace('"', '\\"') + '"'
        address = f"{local}@{self.domain}" if self.domain else local
        return unicodedata.normalize("NFC", address).casefold()

    @property
    def routed(self) -> bool:
        """True if the local part carries sender-specified routing: `%`, `!` or a quoted `@`
        (`user%other@dom`, `other!user@dom`, `"user@other"@dom`); Postfix's
        allow_untrusted_routing refuses these from untrusted clients."""
        return any(c in _ROUTING_CHARS for c in _unquote(self.local))


def parse_rcpt(addr: str) -> Mailbox:
    """Parse an RCPT path (`user@example.com`, `@relay:user@example.com`, `"a b"@x`, ...).

    Raises AddressError (verdict 501 5.1.3) for an empty path, a missing domain (except the
    bare `postmaster`), bad characters, a bad domain or literal, or over-long parts.
    """
    text = addr.strip()
    if text.startswith("<") and text.endswith(">"):
        text = text[1:-1].strip()
    if not text:
        raise AddressError("empty recipient address")
    if text.startswith("@"):
        text = _strip_route(text)
    if text.startswith('"'):
        end = _quoted_end(text)
        local, rest = text[:end], text[end:]
        if rest and not rest.startswith("@"):
            raise AddressError(f"junk after quoted local part in {addr!r}")
        domain = rest[1:] if rest else None
    else:
        local, at, domain = text.partition("@")
        _check_dot_atom(local, addr)
        domain = domain if at else None
    if domain is None:
        if local.lower() == "postmaster":
            return Mailbox(local, "")
        raise AddressError(f"no domain in {addr!r}")
    if len(local.encode()) > MAX_LOCAL:
        raise AddressError(f"local part over {MAX_LOCAL} octets", RCPT_TOO_LONG)
    box = Mailbox(local, normalize_domain(domain))
    if len(box.address.encode()) > MAX_ADDRESS:
        raise AddressError(f"address over {MAX_ADDRESS} octets", RCPT_TOO_LONG)
    return box


def normalize_domain(domain: str) -> str:
    """`Example.COM.` → `example.com`; `xn--bcher-kva.de`, `BÜCHER.de` → `bücher.de`;
    `[IPv6:::1]` → `[ipv6:::1]`. The one normalisation for configuration, RCPT, routing and
    continuity mailboxes: IDNA labels via the `idna` package (UTS #46, non-transitional, so
    `faß.de` stays `faß.de`). Raises AddressError (501 5.1.3) for an empty label, bad
    characters, a label IDNA 2008 refuses, a bad literal, or a name over 255 octets."""
    name = domain.strip()
    if name.startswith("["):
        return _normalize_literal(name)
    name = name.translate(_FULL_STOPS)
    if name.endswith("."):
        name = name[:-1]
    if not name:
        raise AddressError(f"empty domain in {domain!r}")
    if not name.isascii():
        try:  # UTS #46 mapping: case, width, compatibility forms (the Kelvin sign → k)
            name = idna.uts46_remap(name, std3_rules=False, transitional=False)
        except idna.IDNAError as exc:
            raise AddressError(f"bad domain {domain!r}: {exc}") from None
        name = unicodedata.normalize("NFC", name)
    labels = [_normalize_label(label, domain) for label in name.lower().split(".")]
    result = ".".join(labels)
    if len(to_ascii_domain(result)) > MAX_DOMAIN:
        raise AddressError(f"domain over {MAX_DOMAIN} octets", RCPT_TOO_LONG)
    return result


def to_ascii_domain(domain: str) -> str:
    """The A-label form of a normalised domain (`bücher.de` → `xn--bcher-kva.de`), for DNS and
    for the SMTP wire without SMTPUTF8 (RFC 5890 §2.3.2.1). ASCII names and address literals
    are returned unchanged. Raises AddressError for a label that cannot be encoded."""
    if domain.isascii():
        return domain
    try:
        return ".".join(label if label.isascii() else idna.alabel(label).decode("ascii")
                        for label in domain.split("."))
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"bad IDNA domain {domain!r}: {exc}") from None


def _normalize_label(label: str, domain: str) -> str:
    if not label or len(label) > 63:
        raise AddressError(f"empty or over-long label in domain {domain!r}")
    if label.isascii() and not label.startswith("xn--"):
        for c in label:
            if c not in _LDH:
                raise AddressError(f"bad character {c!r} in domain {domain!r}")
        return label
    try:
        # A-label in: must decode and re-encode to itself (RFC 5891 §5.4); U-label in: must be
        # valid IDNA 2008. Either way the result is the U-label.
        ulabel = idna.ulabel(label)
        if len(idna.alabel(ulabel)) > 63:
            raise idna.IDNAError("A-label over 63 octets")
    except (idna.IDNAError, UnicodeError) as exc:
        raise AddressError(f"bad IDNA label {label!r} in domain {domain!r}: {exc}") from None
    if ulabel.isascii():
        raise AddressError(f"bad IDNA label {label!r} in domain {domain!r}")
    return ulabel


def _normalize_literal(text: str) -> str:
    if not text.endswith("]"):
        raise AddressError(f"unterminated address literal {text!r}")
    inner = text[1:-1]
    try:
        if inner[:5].lower() == "ipv6:":
            return f"[ipv6:{ipaddress.IPv6Address(inner[5:]).compressed}]"
        return f"[{ipaddress.IPv4Address(inner)}]"
    except ValueError:
        raise AddressError(f"bad address literal {text!r}") from None


def _strip_route(text: str) -> str:
    """Check `@a,@b:` (RFC 5321 At-domain list) and return what follows the colon."""
    route, colon, rest = text.partition(":")
    if not colon:
        raise AddressError(f"source route without ':' in {text!r}")
    for hop in route.split(","):
        if not hop.startswith("@"):
            raise AddressError(f"bad source route {route!r}")
        normalize_domain(hop[1:])
    if not rest:
        raise AddressError(f"nothing after source route {route!r}")
    return rest


def _quoted_end(text: str) -> int:
    """Index just past the closing quote of the quoted string at the start of `text`."""
    i = 1
    while i < len(text):
        c = text[i]
        if c == "\\":
            if i + 1 >= len(text) or not (32 <= ord(text[i + 1]) <= 126):
                raise AddressError(f"bad quoted-pair in {text!r}")
            i += 2
            continue
        if c == '"':
            return i + 1
        if not _is_qtext(c):
            raise AddressError(f"bad character {c!r} in quoted local part")
        i += 1
    raise AddressError(f"unterminated quoted local part in {text!r}")


def _check_dot_atom(local: str, addr: str) -> None:
    if not local or local.strip(".") == "":
        raise AddressError(f"empty local part in {addr!r}")
    for c in local:
        if c != "." and not _is_atext(c):
            raise AddressError(f"bad character {c!r} in local part of {addr!r}")


def _unquote(local: str) -> str:
    """Content of a quoted local part with quoted-pairs resolved; unquoted ones unchanged."""
    if not (local.startswith('"') and local.endswith('"') and len(local) >= 2):
        return local
    out, escaped = [], False
    for c in local[1:-1]:
        if escaped or c != "\\":
            out.append(c)
            escaped = False
        else:
            escaped = True
    return "".join(out)


def _is_atext(c: str) -> bool:
    return c in _ATEXT or (not c.isascii() and unicodedata.category(c)[0] not in "ZC")


def _is_qtext(c: str) -> bool:
    if c.isascii():
        return 32 <= ord(c) <= 126 and c not in '"\\'
    return unicodedata.category(c)[0] != "C"
