"""The PROXY protocol (HAProxy's v1 text and v2 binary headers) on an SMTP listener.

aiosmtpd parses the header (``proxy_protocol_timeout`` enables v1 and v2; no CRC32C check) but
checks nothing else; this module holds what mailgate adds (docs/cluster.md):

- who may send the header: the connecting peer must be in the listener's ``proxy_trusted``
  networks, or the connection is closed before anything is read or sent;
- which address the session then belongs to: the header's source address for a proxied TCP
  connection; the proxy's own address for v2 LOCAL, v1 ``UNKNOWN`` and a proxied AF_UNIX
  connection (HAProxy's health checks send LOCAL);
- the refusals, counted per reason for /metrics.
"""
from __future__ import annotations

import ipaddress
from collections import Counter

from aiosmtpd.proxy_protocol import V2_CMD, ProxyData

from gateway.config import SmtpListener
from policies.relay_networks import TrustedNetworks

#: Reasons a connection to a PROXY listener is closed without a greeting (the metric's label).
UNTRUSTED = "untrusted"     # the peer is not in proxy_trusted
TIMEOUT = "timeout"         # no complete header within proxy_timeout
INVALID = "invalid"         # a header aiosmtpd could not parse (or none: other bytes first)
NO_HEADER = "no_header"     # the peer closed the connection before a complete header
REASONS = (UNTRUSTED, TIMEOUT, INVALID, NO_HEADER)


class ProxyPolicy:
    """The PROXY settings of one listener: ``timeout`` (seconds, for aiosmtpd's
    ``proxy_protocol_timeout``) and the trusted networks. ``refused`` counts refusals per
    reason (shared by every listener of an IntakeServer)."""

    def __init__(self, listener: SmtpListener, refused: Counter[str]):
        self.address = listener.address
        self.timeout = listener.proxy_timeout
        self.trusted = TrustedNetworks(listener.proxy_trusted)
        self.refused = refused

    def trusts(self, peer_ip: str) -> bool:
        """True if ``peer_ip`` (the connecting address) may send a PROXY header here."""
        return peer_ip in self.trusted


def client_address(data: ProxyData, peer_ip: str) -> tuple[str, bool]:
    """(the address the session belongs to, whether it came from the header).

    ``data`` is a valid header (aiosmtpd's ProxyData). A v1 ``TCP4``/``TCP6`` line or a v2
    PROXY command over IPv4/IPv6 gives its source address (IPv4-mapped IPv6 as IPv4); v2 LOCAL
    (health checks, spec §2.2), v1 ``UNKNOWN`` and v2 AF_UNIX/UNSPEC give ``peer_ip``, the
    proxy's own address."""
    if data.version == 2 and data.command != V2_CMD.PROXY:
        return peer_ip, False
    src = data.src_addr
    if isinstance(src, ipaddress.IPv6Address) and src.ipv4_mapped is not None:
        src = src.ipv4_mapped
    if isinstance(src, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return str(src), True
    return peer_ip, False
