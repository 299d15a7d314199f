"""Configuration checks beyond a key's type: used by gateway/config.py, each raising or returning
errors that config.py reports as ``FILE: KEY: MESSAGE`` (ConfigError).

Three kinds, in the order load() runs them:

* per value (pydantic ``AfterValidator``, raise ValueError): ``trusted_network`` refuses a
  network wide enough to make an open relay; ``alert_url`` refuses an apprise URL that apprise
  cannot use, naming only its scheme (the rest of an apprise URL is often a token).
* across keys of one file (``across_keys``): ``minimal_backoff <= maximal_backoff``; each
  ``continuity.drill_recipients`` address in ``relay.accepted_domains``.
* against other files (``with_files``, only from load()): the round-trip probe's return address
  must not be an address of the recipient directory (the probe mailbox would swallow that
  user's mail). An unreadable directory is left to ``serve``, which reports it at start-up.

Reads no queue state. Issue 6 item 11; docs/relay-and-filtering.md and docs/health.md.
"""
from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import Config

__all__ = ["dotted", "trusted_network", "alert_url", "across_keys", "with_files",
           "drill_recipient", "drill_domains",
           "return_address_conflict", "MIN_PREFIX", "MIN_PUBLIC_PREFIX"]

MIN_PREFIX = {4: 8, 6: 8}             # shorter prefixes are refused, whatever the addresses
MIN_PUBLIC_PREFIX = {4: 16, 6: 32}    # shorter prefixes only for private ranges (10/8, fd00::/8)
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,31})://")


def dotted(loc: tuple) -> str:
    """A pydantic error location as the key people write: ``continuity.alert_urls[1]``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def trusted_network(cidr: str) -> str:
    """``relay.trusted_networks`` entry: a CIDR or bare address that TrustedNetworks accepts
    (no host bits), at least /8 (IPv4 and IPv6), and at least /16 (IPv4) or /32 (IPv6) unless the
    whole network is private (RFC 1918, RFC 4193). Raises ValueError; returns ``cidr``."""
    from policies.relay_networks import TrustedNetworks
    TrustedNetworks([cidr])                      # syntax, host bits, /0: its own message
    net = ipaddress.ip_network(cidr.strip().replace("[", "").replace("]", ""), strict=False)
    if isinstance(net, ipaddress.IPv6Network) and net.network_address.ipv4_mapped is not None \
            and net.prefixlen >= 96:
        net = ipaddress.ip_network(f"{net.network_address.ipv4_mapped}/{net.prefixlen - 96}")
    v = net.version
    if net.prefixlen < MIN_PREFIX[v] or (net.prefixlen < MIN_PUBLIC_PREFIX[v] and not net.is_private):
        raise ValueError(
            f"trusted network {cidr!r} is too wide: it would let a large part of the internet "
            f"relay through us (an open relay); IPv{v} networks must be at least "
            f"/{MIN_PUBLIC_PREFIX[v]}, or /{MIN_PREFIX[v]} when wholly private")
    return cidr


def proxy_trusted(cidr: str) -> str:
    """``smtp.listeners[i].proxy_trusted`` entry: an address or CIDR of a proxy allowed to send
    the PROXY header (no host bits, never /0: whoever may send it chooses the client address
    that relay control sees). Raises ValueError; returns ``cidr``."""
    from policies.relay_networks import TrustedNetworks
    try:
        TrustedNetworks([cidr])
    except ValueError as e:
        if "every address" in str(e):
            raise ValueError(f"proxy_trusted {cidr!r} trusts every address: anyone could claim "
                             "any client address (and relay as a trusted network)") from None
        raise ValueError(str(e).replace("trusted network", "proxy_trusted entry")) from None
    return cidr


def alert_url(url: str) -> str:
    """``continuity.alert_urls`` entry: a URL apprise can use. The error names the scheme only:
    user, password, host and path of an apprise URL are often the secret. Raises ValueError."""
    import apprise          # only when alert URLs are configured: it loads many plugins
    if apprise.Apprise.instantiate(url) is None:
        m = _SCHEME.match(url)
        scheme = f"scheme {m.group(1)!r}" if m else "no scheme://"
        raise ValueError(f"apprise cannot use this URL ({scheme}; the rest is not shown, it may "
                         "hold a secret); see https://github.com/caronc/apprise/wiki")
    return url


def drill_recipient(address: str, where: str = "") -> str:
    """A drill recipient (``continuity.drill_recipients``, ``mailgate drill --rcpt``): one
    address, RFC 5321 §4.1.2 (policies.rcpt_address). Returns its mailbox key (local part
    case-folded, IDNA domain). Raises ValueError naming the entry."""
    from policies.rcpt_address import AddressError, parse_rcpt
    try:
        return parse_rcpt(address).key
    except AddressError as e:
        raise ValueError(f"{where + ': ' if where else ''}{address!r} is not an address: {e}") from None


def drill_domains(cfg: Config, keys: list[str]) -> list[str]:
    """The drill recipients (mailbox keys) that are not in an accepted domain: a drill holds
    only mail for Exchange (a smarthost route), so such a recipient would never be held."""
    accepted = {d.casefold() for d in cfg.relay.accepted_domains}
    return [k for k in keys if k.rpartition("@")[2].casefold() not in accepted]


def across_keys(cfg: Config) -> list[tuple[str, str]]:
    """(key, message) for every rule between keys of one file that ``cfg`` breaks."""
    errors = []
    outside = drill_domains(cfg, [drill_recipient(a) for a in cfg.continuity.drill_recipients])
    if outside:
        errors.append(("continuity.drill_recipients",
                       f"{', '.join(outside)}: not in relay.accepted_domains (a drill holds only mail "
                       "for Exchange)"))
    d = cfg.delivery
    if d.minimal_backoff > d.maximal_backoff:
        errors.append(("delivery.minimal_backoff",
                       f"must not exceed delivery.maximal_backoff ({d.minimal_backoff:g} s > "
                       f"{d.maximal_backoff:g} s): the retry interval doubles from the minimal "
                       "up to the maximal"))
    return errors


def with_files(cfg: Config) -> list[tuple[str, str]]:
    """(key, message) for rules that need another file: the round-trip return address against
    the recipient directory (when both are configured and the directory can be read), and each
    webmail DKIM key file (readable, a key of its algorithm)."""
    return dkim_key_files(cfg) + _roundtrip_return(cfg)


def dkim_key_files(cfg: Config) -> list[tuple[str, str]]:
    """(``webmail.dkim[i].key_file``, why) for each DKIM key the webmail could not sign with."""
    if not cfg.webmail.enabled or not cfg.webmail.dkim:
        return []
    from webmail.dkim_sign import DkimError, keys_for, load_private_key
    errors = []
    for i, k in enumerate(cfg.webmail.dkim):
        try:
            load_private_key(keys_for([k], k.domain)[0])
        except DkimError as e:
            errors.append((f"webmail.dkim[{i}].key_file", str(e)))
    return errors


def _roundtrip_return(cfg: Config) -> list[tuple[str, str]]:
    if not (cfg.probes.roundtrip and cfg.directory.file):
        return []
    from policies.directory import Directory, DirectoryError
    try:
        directory = Directory.load(cfg.directory.file)
    except DirectoryError:
        return []                   # serve refuses to start and names the directory's own error
    conflict = return_address_conflict(cfg.probes.roundtrip_return, directory)
    return [("probes.roundtrip_return", conflict)] if conflict else []


def return_address_conflict(address: str, directory) -> str | None:
    """Why ``address`` cannot be the round-trip return address of ``directory``
    (policies.directory.Directory), or None. Used at load and on every directory reload."""
    entry = directory.lookup(address.strip("<>"))
    if entry is None:
        return None
    what = entry.kind if entry.address == address.strip("<>").lower() else f"alias of {entry.address}"
    return (f"{address!r} is in the recipient directory {directory.source} ({what}): the probe "
            "mailbox would swallow that recipient's mail; use an address of its own")
