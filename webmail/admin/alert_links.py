"""The alert link: a signed, single-use, expiring URL to the admin console's confirm page, put in
every alert that asks an admin for a decision (alert-only mode: "confirm a continuity event").

The token is 32 random bytes (URL-safe base64) stored only as its SHA-256 (the spool's
issue_token verb, kind ``admin_alert``); it is valid ``[admin] alert_link_ttl`` seconds and is spent
by the first confirm made with it. Opening it still needs an admin login (password + TOTP);
after the login the admin lands back on the link.
"""
from __future__ import annotations

KIND = "admin_alert"
ADDRESS = "admin:*"        # the token is not bound to one admin: any admin may act on the alert
MAX_TOKEN = 100            # characters: longer values are never looked up


async def issue(ctx, detail: str = "confirm") -> str:
    """A new link ``PUBLIC_URL/admin/confirm?t=TOKEN`` (``ctx``: webmail.context.WebmailContext).
    Raises spool.SpoolError when the spool cannot write."""
    ttl = ctx.cfg.admin.alert_link_ttl
    token = await ctx.spool.issue_token(ADDRESS, KIND, ttl=ttl, detail=detail)
    return f"{ctx.public_url}/admin/confirm?t={token}"


async def live(ctx, token: object) -> dict | None:
    """The live (unused, unexpired) token row of ``token``, or None. Read-only."""
    if not isinstance(token, str) or not 0 < len(token) <= MAX_TOKEN:
        return None
    return await ctx.spool.peek_token(token, KIND)


async def spend(ctx, token: str) -> dict | None:
    """Use up ``token``; its row, or None if it was not live. Raises spool.SpoolError when the
    spool cannot write."""
    if not 0 < len(token) <= MAX_TOKEN:
        return None
    return await ctx.spool.use_token(token, KIND)
