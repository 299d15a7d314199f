"""The continuity webmail: end users log in, read, search and send mail while Exchange is down.

A Starlette app served by the gateway process on its own listener (``[webmail] listen``), in the
gateway's event loop. It reads and writes through the spool's API only (spool.accounts,
spool.mailbox, ...). See docs/webmail.md.
"""
from webmail.app import build_app
from webmail.context import WebmailContext

__all__ = ["build_app", "WebmailContext"]
