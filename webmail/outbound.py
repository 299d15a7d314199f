"""Mail the webmail sends (a user's message, a login code to an alternate address) enters the
spool through the same durable commit as inbound mail (spool.Spool.commit: one group-commit
transaction, fsynced), then the queue manager routes it: accepted domains to the Exchange
smarthosts (held during a continuity event, filed into continuity mailboxes), any other domain to
the internet MX path. It never goes through Exchange to reach an outside address."""
from __future__ import annotations

from spool.commit import NewMessage


async def submit(ctx, *, mail_from: str, rcpts: list[str] | tuple[str, ...], data: bytes,
                 smtputf8: bool = False, client: str = "webmail") -> str:
    """Commit ``data`` (a complete message, CRLF line ends) for ``rcpts``; returns the queue ID
    once it is durable. Raises spool.SpoolError if the spool cannot store it."""
    msg = NewMessage(mail_from=mail_from, rcpt_tos=tuple(rcpts), data=data, client_addr=client,
                     client_helo="webmail", smtputf8=smtputf8,
                     body_8bit=any(b > 127 for b in data))
    queue_id = await ctx.spool.commit(msg)
    ctx.notify()
    return queue_id
