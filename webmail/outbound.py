"""Mail the webmail sends (a user's message, a login code to an alternate address) enters the
spool through the same durable commit as inbound mail (spool.Spool.commit: one group-commit
transaction, fsynced), then the queue manager routes it: accepted domains to the Exchange
smarthosts (held during a continuity event, filed into continuity mailboxes), any other domain to
the internet MX path. It never goes through Exchange to reach an outside address."""
from __future__ import annotations

from spool import sent as _sent
from spool.commit import NewMessage


async def submit(ctx, *, mail_from: str, rcpts: list[str] | tuple[str, ...], data: bytes,
                 smtputf8: bool = False, client: str = "webmail",
                 sent: _sent.SentRecord | None = None) -> str:
    """Commit ``data`` (a complete message, CRLF line ends) for ``rcpts``; returns the queue ID
    once it is durable. With ``sent`` (a user's message), the same transaction files the
    sender's Sent copy, checks their hourly limit and audits the send (spool.sent.commit_sent;
    ``submit_sent`` also returns the Sent row's id). Raises spool.SpoolError if the spool cannot store it,
    spool.sent.SendLimitExceeded when the hourly limit is reached (nothing stored)."""
    queue_id, _sent_id = await submit_sent(ctx, mail_from=mail_from, rcpts=rcpts, data=data,
                                           smtputf8=smtputf8, client=client, sent=sent)
    return queue_id


async def submit_sent(ctx, *, mail_from: str, rcpts, data: bytes, smtputf8: bool = False,
                      client: str = "webmail", sent: _sent.SentRecord | None = None) -> tuple[str, int | None]:
    """``submit`` returning (queue ID, id of the sender's Sent row or None)."""
    msg = NewMessage(mail_from=mail_from, rcpt_tos=tuple(rcpts), data=data, client_addr=client,
                     client_helo="webmail", smtputf8=smtputf8,
                     body_8bit=any(b > 127 for b in data), queue_id=ctx.spool.new_queue_id())
    if sent is None:
        queue_id, sent_id = await ctx.spool.commit(msg), None
    else:
        queue_id, sent_id = await ctx.spool.commit_sent(msg, sent)
    ctx.notify()
    return queue_id, sent_id
