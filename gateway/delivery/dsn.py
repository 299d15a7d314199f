"""Delivery status notifications (bounces and delay warnings), RFC 3464 / RFC 6522.

``build_dsn`` returns the complete message, CRLF line endings, to be sent from the null sender
``<>`` to the original envelope sender: ``multipart/report; report-type=delivery-status`` with a
plain-words text/plain part, a ``message/delivery-status`` part and the original's headers only as
``text/rfc822-headers``. Built by hand so that broken or 8-bit original headers never crash it:
they are taken as raw bytes up to the first blank line (at most ``MAX_HEADER_BYTES``) and sent
quoted-printable when not plain 7-bit, so the whole DSN is 7-bit clean. ``should_bounce`` is the
"never bounce a bounce" rule. Pure: reads and writes no queue state.
"""
from __future__ import annotations

import binascii
import re
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from email.utils import format_datetime

__all__ = ["FailedRecipient", "build_dsn", "should_bounce", "MAX_HEADER_BYTES"]

MAX_HEADER_BYTES = 64 * 1024     # cap on the original headers we quote back, bytes
_STATUS = re.compile(r"^[245]\.\d{1,3}\.\d{1,3}$")
_ACTIONS = {"failed", "delayed", "delivered", "relayed", "expanded"}
_HEADER_END = re.compile(rb"\r?\n\r?\n")


@dataclass(frozen=True)
class FailedRecipient:
    """One recipient's outcome. ``status`` is RFC 3463 ("5.1.1"); ``diagnostic`` the remote
    reply ("550 5.1.1 <x@y>: user unknown"), or our own text; ``remote_mta`` the host name that
    answered, "" if none; ``action`` "failed", or "delayed" for a delay warning (RFC 3464 §2.3.3)."""
    address: str
    status: str
    diagnostic: str
    remote_mta: str = ""
    action: str = "failed"


def should_bounce(mail_from: str, is_dsn: bool) -> bool:
    """False for the null sender (``""``/``"<>"``) or a DSN we generated: never bounce a bounce
    (RFC 3464 §2, RFC 5321 §4.5.5)."""
    return not is_dsn and mail_from.strip() not in ("", "<>")


def _clean(text: str, limit: int = 900) -> str:
    """One header-safe line: CR/LF/controls become spaces, non-ASCII is escaped as \\x{HEX}
    (RFC 6533 §3 style), cut to ``limit`` characters."""
    text = re.sub(r"[\x00-\x1f\x7f]+", " ", text).strip()
    text = "".join(c if ord(c) < 128 else f"\\x{{{ord(c):X}}}" for c in text)
    return text[:limit]


def _addr_field(address: str) -> str:
    """Final-Recipient value: "rfc822; addr", or "utf-8; addr" with \\x{HEX} escapes (RFC 6533)."""
    raw = address.strip().strip("<>")
    return f"{'rfc822' if raw.isascii() else 'utf-8'}; {_clean(raw, 500)}"


def _date(ts: float) -> str:
    return format_datetime(datetime.fromtimestamp(ts, timezone.utc))


def original_headers(original: bytes, limit: int = MAX_HEADER_BYTES) -> bytes:
    """The original's header block: raw bytes up to the first blank line, lines joined with CRLF,
    cut at a line boundary after ``limit`` bytes. Never raises on broken or 8-bit input."""
    match = _HEADER_END.search(original, 0, limit + 4)
    block = original[:match.start()] if match else original[:limit]
    lines = re.split(rb"\r\n|\n|\r", block)
    out, size = [], 0
    for line in lines:
        if size + len(line) + 2 > limit:
            break
        out.append(line)
        size += len(line) + 2
    return b"\r\n".join(out).rstrip(b"\r\n") + b"\r\n"


def _body_part(data: bytes) -> tuple[str, bytes]:
    """(Content-Transfer-Encoding, encoded CRLF bytes): 7bit when ASCII with short lines, else QP."""
    lines = data.split(b"\r\n")
    if data.isascii() and max(map(len, lines)) <= 900:
        return "7bit", data
    lf = data.replace(b"\r\n", b"\n")
    encoded = binascii.b2a_qp(lf, quotetabs=False, istext=True, header=False)
    return "quoted-printable", encoded.replace(b"\n", b"\r\n")


def _text_part(reporting_mta: str, queue_id: str, recipients: list[FailedRecipient],
               warning: bool) -> str:
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if warning:
        lines += ["####################################################################",
                  "# THIS IS A WARNING ONLY.  YOU DO NOT NEED TO RESEND YOUR MESSAGE. #",
                  "####################################################################", "",
                  "Your message could not be delivered yet to the recipients below.",
                  "The mail system will keep trying; you will be told if it gives up."]
    else:
        lines += ["I'm sorry to have to inform you that your message could not",
                  "be delivered to one or more recipients. Its headers are attached below.", "",
                  "For further assistance, please send mail to postmaster.",
                  "If you do so, please include this problem report."]
    lines += ["", f"                   The mail system (queue ID {queue_id})", ""]
    for r in recipients:
        where = f"host {_clean(r.remote_mta, 200)} said" if r.remote_mta else "the mail system said"
        lines.append(f"<{_clean(r.address.strip().strip('<>'), 500)}>: {where}: "
                     f"{_clean(r.diagnostic)}")
    return "\r\n".join(lines) + "\r\n"


def _status_part(reporting_mta: str, queue_id: str, arrival_date: float,
                 recipients: list[FailedRecipient], now: float) -> str:
    blocks = ["\r\n".join([f"Reporting-MTA: dns; {_clean(reporting_mta, 255)}",
                           f"X-Mailgate-Queue-ID: {_clean(queue_id, 100)}",
                           f"Arrival-Date: {_date(arrival_date)}"])]
    for r in recipients:
        fields = [f"Final-Recipient: {_addr_field(r.address)}", f"Action: {r.action}",
                  f"Status: {r.status}"]
        if r.remote_mta:
            fields.append(f"Remote-MTA: dns; {_clean(r.remote_mta, 255)}")
        if r.diagnostic:
            fields.append(f"Diagnostic-Code: smtp; {_clean(r.diagnostic)}")
        fields.append(f"Last-Attempt-Date: {_date(now)}")
        blocks.append("\r\n".join(fields))
    return "\r\n\r\n".join(blocks) + "\r\n"


def build_dsn(*, reporting_mta: str, original_mail_from: str, original_queue_id: str,
              arrival_date: float, recipients: list[FailedRecipient], original: bytes,
              postmaster: str | None = None, now: float | None = None) -> bytes:
    """The DSN message bytes (CRLF) for ``recipients`` of the message ``original`` (raw bytes;
    only its headers are quoted back). ``arrival_date``/``now`` are unix seconds. From is
    ``postmaster`` or ``MAILER-DAEMON@reporting_mta``. If every recipient is "delayed" the
    subject and text are a delay warning. Raises ValueError on no recipients, a malformed
    ``status`` (RFC 3463 ``class.subject.detail``) or an unknown ``action``."""
    if not recipients:
        raise ValueError("a DSN needs at least one recipient")
    for r in recipients:
        if not _STATUS.match(r.status):
            raise ValueError(f"bad RFC 3463 status {r.status!r} for {r.address!r}")
        if r.action not in _ACTIONS:
            raise ValueError(f"bad RFC 3464 action {r.action!r} for {r.address!r}")
    now = time.time() if now is None else now
    mta = _clean(reporting_mta, 255)
    warning = all(r.action == "delayed" for r in recipients)
    boundary = f"=_mailgate_{uuid.uuid4().hex}"
    sender = _clean(postmaster, 500) if postmaster else f"MAILER-DAEMON@{mta}"
    subject = ("Delayed Mail (still being retried)" if warning
               else "Undelivered Mail Returned to Sender")
    head = [f"From: {sender} (Mail Delivery System)",
            f"To: {_clean(original_mail_from.strip().strip('<>'), 500)}",
            f"Subject: {subject}",
            f"Date: {_date(now)}",
            f"Message-ID: <{uuid.uuid4().hex}.{_clean(original_queue_id, 100)}@{mta}>",
            "Auto-Submitted: auto-replied",
            "MIME-Version: 1.0",
            f'Content-Type: multipart/report; report-type=delivery-status;\r\n\tboundary="{boundary}"',
            "Content-Transfer-Encoding: 7bit", "",
            "This is a MIME-encapsulated message.", ""]
    cte, headers = _body_part(original_headers(original))
    parts = [
        (f"Content-Description: Notification\r\nContent-Type: text/plain; charset=us-ascii\r\n"
         f"Content-Transfer-Encoding: 7bit\r\n\r\n"
         f"{_text_part(mta, original_queue_id, recipients, warning)}").encode("ascii"),
        (f"Content-Description: Delivery report\r\nContent-Type: message/delivery-status\r\n"
         f"Content-Transfer-Encoding: 7bit\r\n\r\n"
         f"{_status_part(mta, original_queue_id, arrival_date, recipients, now)}").encode("ascii"),
        (f"Content-Description: Undelivered Message Headers\r\n"
         f"Content-Type: text/rfc822-headers\r\nContent-Transfer-Encoding: {cte}\r\n\r\n"
         ).encode("ascii") + headers,
    ]
    out = "\r\n".join(head).encode("ascii") + b"\r\n"
    for part in parts:
        out += f"--{boundary}\r\n".encode("ascii") + part
        if not part.endswith(b"\r\n"):
            out += b"\r\n"
    return out + f"--{boundary}--\r\n".encode("ascii")
