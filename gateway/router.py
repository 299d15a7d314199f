"""Routing: which next hop a recipient's mail goes to, and with which TLS policy.

Recipients in an accepted domain go to that domain's smarthost (``routing.routes``) or the default
smarthost: the Exchange side. Any other domain can only have been accepted from a trusted network
(policies.rcpt_chain refused it otherwise) and goes to the internet: the MX of the recipient's own
domain on ``routing.mx_port`` with opportunistic, unverified TLS (RFC 3207, RFC 7435). Pure: no I/O.

Domains are compared in the one normal form of policies.rcpt_address.normalize_domain (idna,
UTS #46, U-labels), the form the RCPT chain stores, whether the configuration or the client wrote
an A-label or a U-label; the MX name handed to gateway.delivery.mx is the A-label.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Config
from gateway.delivery.transport import TlsPolicy
from policies.rcpt_address import AddressError, normalize_domain, to_ascii_domain


@dataclass(frozen=True)
class NextHop:
    """Where a group of recipients goes. ``spec`` is resolved by gateway.delivery.mx
    ("name" → MX then A/AAAA; "[host]:port" or an IP literal → no MX lookup)."""

    spec: str
    port: int
    tls: TlsPolicy
    kind: str          # "smarthost" or "mx"


class Router:
    def __init__(self, cfg: Config):
        r = cfg.routing
        self.accepted = frozenset(_norm(d) for d in cfg.relay.accepted_domains)
        self.routes = {_norm(rt.domain): rt.smarthost for rt in r.routes}
        self.default = self.routes.pop("*", r.default_smarthost)
        self._smarthost_tls = TlsPolicy(r.smarthost_tls, r.smarthost_verify_tls,
                                        str(r.smarthost_ca_file) if r.smarthost_ca_file else None)
        self._mx_tls = TlsPolicy(r.mx_tls, False)
        self._smarthost_port, self._mx_port = r.smarthost_port, r.mx_port

    def next_hop(self, recipient: str) -> NextHop:
        """The next hop for ``recipient`` (an envelope address; its domain in any IDNA form)."""
        return self.for_domain(recipient.rpartition("@")[2])

    def for_domain(self, domain: str) -> NextHop:
        """The next hop for ``domain`` (A-label or U-label, any case, trailing dot or not)."""
        domain = _norm(domain)
        if domain in self.routes:
            return NextHop(self.routes[domain], self._smarthost_port, self._smarthost_tls, "smarthost")
        if domain in self.accepted or not domain:
            return NextHop(self.default, self._smarthost_port, self._smarthost_tls, "smarthost")
        return NextHop(_ascii(domain), self._mx_port, self._mx_tls, "mx")


def _norm(domain: str) -> str:
    """normalize_domain, or for a name it refuses (old spool rows) a plain lower-casing; "*"
    (the catch-all route) is kept."""
    if domain.strip() in ("*", ""):
        return domain.strip()
    try:
        return normalize_domain(domain)
    except AddressError:
        return domain.strip().rstrip(".").lower()


def _ascii(domain: str) -> str:
    try:
        return to_ascii_domain(domain)
    except AddressError:
        return domain      # mx.py answers for a name it cannot resolve
