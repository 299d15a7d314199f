"""RCPT-phase decision: may this recipient be accepted from this client, and where does it go?

Pure function of the RCPT path, the client IP and an `RcptContext`; no I/O. Postfix is the
yardstick (smtpd_recipient_restrictions = permit_mynetworks, reject_unauth_destination with
relay_recipient_maps and allow_untrusted_routing = no). In order:

1. path syntax (RFC 5321 §4.1.2)                          → 501 5.1.3
   non-ASCII path without SMTPUTF8 on MAIL (RFC 6531 §3.4) → 553 5.6.7
   (`Kate@…` with a Kelvin sign would case-fold to a real user; it cannot go on the wire)
2. bare `postmaster` (RFC 5321 §4.5.1)                    → local postmaster@<postmaster domain>
3. untrusted client, routing in the local part             → 550 5.7.1
   (`a%b@us`, `b!a@us`, `"a@b"@us`: never an open relay, even in our own domain)
4. domain accepted (exact match, no implicit subdomains):
   filtering on and address not in the directory           → 550 5.1.1
   (postmaster@<accepted domain> is always accepted, RFC 5321 §4.5.1)
   untrusted client, recipient with RequireSenderAuthenticationEnabled (Exchange groups take
   mail only from internal senders by default)             → 550 5.7.1
   otherwise                                               → 250 2.1.5, local
5. trusted client                                          → 250 2.1.5, relay to the internet
6. otherwise                                               → 550 5.7.1 Relay access denied
"""
from __future__ import annotations

from dataclasses import dataclass

from policies.directory import Directory
from policies.rcpt_address import AddressError, Mailbox, normalize_domain, parse_rcpt
from policies.relay_networks import TrustedNetworks
from policies.verdict import (
    RCPT_AUTH_REQUIRED,
    RCPT_NEEDS_SMTPUTF8,
    RCPT_NO_DOMAIN,
    RCPT_OK,
    RCPT_USER_UNKNOWN,
    RELAY_DENIED,
    RELAY_ROUTING_DENIED,
    Verdict,
)

__all__ = ["RcptContext", "RcptDecision", "check_rcpt"]


@dataclass(frozen=True)
class RcptContext:
    """What the RCPT decision needs, built once per directory reload or config change.

    `accepted_domains` are normalised on construction (case, trailing dot, `xn--` → Unicode)
    so they compare with `Mailbox.domain`; a bad one raises AddressError (a ValueError).
    `postmaster_domain` completes a bare `<postmaster>`; default: the alphabetically first
    accepted domain (a frozenset has no "first").
    """

    accepted_domains: frozenset[str]
    directory: Directory
    filtering: bool
    trusted: TrustedNetworks
    postmaster_domain: str = ""

    def __post_init__(self) -> None:
        domains = frozenset(normalize_domain(d) for d in self.accepted_domains)
        object.__setattr__(self, "accepted_domains", domains)
        if self.postmaster_domain:
            pm = normalize_domain(self.postmaster_domain)
            if pm not in domains:
                raise ValueError(f"postmaster_domain {pm!r} is not an accepted domain")
        else:
            pm = min(domains, default="")
        object.__setattr__(self, "postmaster_domain", pm)


@dataclass(frozen=True)
class RcptDecision:
    """`verdict` to send; `mailbox` parsed (None on a syntax error); `local` True when the
    recipient is in an accepted domain (goes to Exchange), False when relayed outbound."""

    verdict: Verdict
    mailbox: Mailbox | None
    local: bool


def check_rcpt(addr: str, client_ip: str, ctx: RcptContext, *,
               smtputf8: bool = True) -> RcptDecision:
    """Decide on one RCPT TO path (as aiosmtpd passes it) from `client_ip`; `smtputf8` is
    whether the transaction's MAIL command declared SMTPUTF8 (False: ASCII paths only)."""
    try:
        box = parse_rcpt(addr)
    except AddressError as exc:
        return RcptDecision(exc.verdict, None, False)
    if not smtputf8 and not addr.isascii():
        return RcptDecision(RCPT_NEEDS_SMTPUTF8, box, False)
    if not box.domain:  # bare <postmaster>: only a postmaster can be without a domain
        if not ctx.postmaster_domain:
            return RcptDecision(RCPT_NO_DOMAIN, box, False)
        return RcptDecision(RCPT_OK, Mailbox(box.local, ctx.postmaster_domain), True)
    trusted = client_ip in ctx.trusted
    if box.routed and not trusted:
        return RcptDecision(RELAY_ROUTING_DENIED, box, False)
    if box.domain in ctx.accepted_domains:
        if not ctx.filtering or _is_postmaster(box):
            return RcptDecision(RCPT_OK, box, True)
        entry = ctx.directory.lookup(box.key)
        if entry is None:
            return RcptDecision(RCPT_USER_UNKNOWN, box, True)
        if entry.internal_only and not trusted:
            return RcptDecision(RCPT_AUTH_REQUIRED, box, True)
        return RcptDecision(RCPT_OK, box, True)
    if trusted:
        return RcptDecision(RCPT_OK, box, False)
    return RcptDecision(RELAY_DENIED, box, False)


def _is_postmaster(box: Mailbox) -> bool:
    return box.key.partition("@")[0] == "postmaster"
