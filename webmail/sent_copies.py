"""``[webmail] copy_sent_on_recovery``: after a continuity event, a copy of each message a user
sent from the webmail during it is delivered to their own Exchange mailbox (so it is not lost
when the webmail is no longer used). The copy is the sent message, byte for byte, with one
``X-Mailgate-Sent-Copy`` field prepended (outside the DKIM-signed fields), sent to the user's
own address: it arrives in their Inbox (an Exchange transport rule on that field can move it to
Sent Items). Each Sent item is copied once (spool.sent.copy_sent_after_events), after the event
is over (the engine back to normal, held mail replayed first)."""
from __future__ import annotations

import asyncio

INTERVAL = 5.0   # seconds between looks


async def run(ctx, interval: float = INTERVAL) -> None:
    """Queue the copies due, every ``interval`` seconds, until cancelled. A spool failure is
    logged and retried at the next look."""
    while True:
        try:
            copies = await ctx.spool.copy_sent_after_events()
        except asyncio.CancelledError:
            raise
        except Exception:
            if ctx.log is not None:
                ctx.log.exception("sent_copy_failed")
        else:
            if copies:
                ctx.notify()
                if ctx.log is not None:
                    for owner, qid in copies:
                        ctx.log.info("sent_copy_queued", owner=owner, queue_id=qid)
        await asyncio.sleep(interval)
