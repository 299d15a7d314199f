"""Trusted networks: the clients allowed to relay mail to the internet (Postfix's mynetworks).

Membership is by client IP only. IPv4-mapped IPv6 clients (`::ffff:192.0.2.1`, what a
dual-stack socket reports for an IPv4 peer) are checked as IPv4; IPv6 zone ids are ignored.
A CIDR with host bits set (`10.0.0.1/8`) or a zero-length prefix (`0.0.0.0/0`, an open relay)
is refused at start-up rather than silently widened.
"""
from __future__ import annotations

import ipaddress
from collections.abc import Iterable

__all__ = ["TrustedNetworks"]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedNetworks:
    """A set of networks: `"127.0.0.1" in TrustedNetworks(["127.0.0.0/8", "::1"])`.

    `cidrs` are CIDRs or bare addresses (a /32 or /128); Postfix-style `[::1]/128` is accepted.
    Raises ValueError naming the bad entry.
    """

    def __init__(self, cidrs: Iterable[str]) -> None:
        nets: list[_Network] = []
        for raw in cidrs:
            nets.append(_parse_network(raw))
        self._networks: tuple[_Network, ...] = tuple(nets)

    def __contains__(self, ip: object) -> bool:
        """True if `ip` lies in one of the networks; False for anything unparsable."""
        if not isinstance(ip, str):
            return False
        try:
            addr = ipaddress.ip_address(ip.strip().strip("[]").split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        return any(addr in net for net in self._networks if net.version == addr.version)

    def __len__(self) -> int:
        return len(self._networks)

    def __repr__(self) -> str:
        return f"TrustedNetworks({[str(n) for n in self._networks]!r})"


def _parse_network(raw: str) -> _Network:
    text = raw.strip() if isinstance(raw, str) else ""
    addr, slash, prefix = text.partition("/")
    addr = addr.strip("[]")
    try:
        net = ipaddress.ip_network(f"{addr}{slash}{prefix}", strict=True)
    except ValueError as exc:
        loose = ""
        try:
            loose = f"; did you mean {ipaddress.ip_network(addr + slash + prefix, strict=False)}?"
        except ValueError:
            pass
        raise ValueError(f"trusted network {raw!r} is not a valid CIDR ({exc}){loose}") from None
    if net.prefixlen == 0:
        raise ValueError(f"trusted network {raw!r} trusts every address: that is an open relay")
    if isinstance(net, ipaddress.IPv6Network):
        mapped = net.network_address.ipv4_mapped
        if mapped is not None and net.prefixlen >= 96:
            return ipaddress.ip_network(f"{mapped}/{net.prefixlen - 96}")
    return net
