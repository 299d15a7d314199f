"""Routing: which next hop a recipient's mail goes to, and with which TLS policy.

Recipients in an accepted domain go to that domain's smarthost (``routing.routes``) or the default
smarthost: the Exchange side. Any other domain can only have been accepted from a trusted network
(policies.rcpt_chain refused it otherwise) and goes to the internet: the MX of the recipient's own
domain on ``routing.mx_port`` with opportunistic, unverified TLS (RFC 3207, RFC 7435). Pure: no I/O.
"""
from __future__ import annotations

from dataclasses import dataclass

from gateway.config import Config
from gateway.delivery.transport import TlsPolicy


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
        self.accepted = frozenset(cfg.relay.accepted_domains)
        self.routes = {rt.domain.lower().rstrip("."): rt.smarthost for rt in r.routes}
        self.default = self.routes.pop("*", r.default_smarthost)
        self._smarthost_tls = TlsPolicy(r.smarthost_tls, r.smarthost_verify_tls,
                                        str(r.smarthost_ca_file) if r.smarthost_ca_file else None)
        self._mx_tls = TlsPolicy(r.mx_tls, False)
        self._smarthost_port, self._mx_port = r.smarthost_port, r.mx_port

    def next_hop(self, recipient: str) -> NextHop:
        """The next hop for ``recipient`` (an envelope address, domain already normalised)."""
        domain = recipient.rpartition("@")[2].lower().rstrip(".")
        return self.for_domain(domain)

    def for_domain(self, domain: str) -> NextHop:
        domain = domain.lower().rstrip(".")
        if domain in self.routes:
            return NextHop(self.routes[domain], self._smarthost_port, self._smarthost_tls, "smarthost")
        if domain in self.accepted or not domain:
            return NextHop(self.default, self._smarthost_port, self._smarthost_tls, "smarthost")
        return NextHop(domain, self._mx_port, self._mx_tls, "mx")
