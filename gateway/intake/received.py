"""The Received: trace header that intake prepends to every message (RFC 5321 §4.4).

Form (RFC 5321 §4.4, protocol names from RFC 3848 and RFC 6531)::

    Received: from HELO ([ADDR])
    <TAB>by HOSTNAME (mailgate) with ESMTPS id QUEUEID
    <TAB>for <RCPT>; DATE

``for`` is given only for a single recipient (as Postfix does, so the recipient list of a
multi-recipient message is not disclosed). The rest of the message stays byte for byte as received.
"""
from __future__ import annotations

import datetime
import email.utils
import ipaddress
import re

_UNSAFE = re.compile(r"[^\x21-\x7e]")
_RECEIVED = re.compile(rb"^received:", re.IGNORECASE | re.MULTILINE)


def protocol_name(esmtp: bool, tls: bool, smtputf8: bool) -> str:
    """SMTP / ESMTP / ESMTPS / UTF8SMTP / UTF8SMTPS (RFC 3848 §2, RFC 6531 §3.7.3)."""
    if smtputf8:
        return "UTF8SMTPS" if tls else "UTF8SMTP"
    if not esmtp:
        return "SMTP"
    return "ESMTPS" if tls else "ESMTP"


def address_literal(ip: str) -> str:
    """"192.0.2.1" → "[192.0.2.1]", "2001:db8::1" → "[IPv6:2001:db8::1]" (RFC 5321 §4.1.3)."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return "[unknown]"
    if addr.version == 6:
        if addr.ipv4_mapped:
            return f"[{addr.ipv4_mapped}]"
        return f"[IPv6:{addr.compressed}]"
    return f"[{addr}]"


def received_header(*, helo: str, client_ip: str, hostname: str, protocol: str, queue_id: str,
                    rcpt_tos: list[str], timestamp: float, tls_info: str = "") -> bytes:
    """The complete header field, folded, ending in CRLF. ``helo`` and addresses are sanitised
    to printable ASCII (a hostile HELO cannot inject header lines)."""
    helo_s = _UNSAFE.sub("?", helo or "unknown")[:255]
    lines = [f"Received: from {helo_s} ({address_literal(client_ip)})"]
    by = f"\tby {hostname} (mailgate) with {protocol}"
    if tls_info:
        by += f" ({_UNSAFE.sub('?', tls_info)[:120]})"
    lines.append(f"{by} id {queue_id}")
    date = email.utils.format_datetime(datetime.datetime.fromtimestamp(timestamp, datetime.timezone.utc))
    if len(rcpt_tos) == 1:
        lines.append(f"\tfor <{_UNSAFE.sub('?', rcpt_tos[0])[:320]}>; {date}")
    else:
        lines[-1] += ";"
        lines.append(f"\t{date}")
    return ("\r\n".join(lines) + "\r\n").encode("ascii")


def count_received(data: bytes, limit: int) -> int:
    """Number of Received: fields in the header section of ``data`` (stops counting at ``limit``)."""
    n = 0
    end = data.find(b"\r\n\r\n")
    for _ in _RECEIVED.finditer(data, 0, len(data) if end < 0 else end + 2):  # no copy, no split
        n += 1
        if n >= limit:
            break
    return n
