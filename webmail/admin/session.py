"""Admin sessions: a cookie of its own (``__Host-mailgate-admin`` over HTTPS, ``mailgate-admin``
over plain HTTP), so an admin can be logged into the webmail as a user in the same browser; the
session row is in ``webmail_sessions`` with address ``admin:NAME`` and ``mfa = 1`` once the
second factor was given (spool.admins). Admin sessions are short: ADMIN_IDLE seconds without use,
ADMIN_LIFETIME seconds at most.

``require_admin(request)``: the AdminUser, or HTTPException 401 (the app redirects /admin pages
to /admin/login) when there is no admin session, or 403 when the request carries only a webmail
user's session (a mailbox user is never an admin).
"""
from __future__ import annotations

import hmac
from dataclasses import dataclass

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from spool import admins
from webmail.session import clear_session_cookie, same_origin, set_session_cookie

ADMIN_IDLE = 3600.0          # seconds without a request before an admin session ends
ADMIN_LIFETIME = 12 * 3600.0  # seconds an admin session lasts at most


@dataclass(frozen=True)
class AdminUser:
    """The admin of a request. ``name``: admin_users.name; ``actor``: 'admin:NAME' for audit rows."""

    name: str
    session_id: str
    csrf_token: str
    created_at: float

    @property
    def actor(self) -> str:
        return admins.session_address(self.name)


def cookie_name(ctx) -> str:
    return "__Host-mailgate-admin" if ctx.secure else "mailgate-admin"


def set_admin_cookie(response: Response, ctx, session_id: str) -> None:
    set_session_cookie(response, ctx, session_id, cookie_name(ctx))


def clear_admin_cookie(response: Response, ctx) -> None:
    clear_session_cookie(response, ctx, cookie_name(ctx))


async def load_admin(request: Request) -> AdminUser | None:
    """The admin session named by the admin cookie (second factor given), or None. Cached on
    the request."""
    if hasattr(request.state, "admin"):
        return request.state.admin
    ctx = request.app.state.ctx
    out = None
    sid = request.cookies.get(cookie_name(ctx))
    if sid and len(sid) <= 200:
        row = await ctx.spool.get_session(sid, idle=ADMIN_IDLE)
        name = admins.name_of(row["address"]) if row is not None else None
        if name is not None and row["mfa"]:
            admin = await ctx.spool.get_admin(name)
            if admin is not None and not admin["disabled"]:
                out = AdminUser(name, sid, row["csrf_token"], row["created_at"])
    request.state.admin = out
    return out


async def require_admin(request: Request) -> AdminUser:
    """The logged-in admin; HTTPException 401 if none, 403 if only a webmail user is logged in."""
    admin = await load_admin(request)
    if admin is not None:
        return admin
    if getattr(request.state, "user", None) is not None:
        raise HTTPException(403, "This page is for administrators.")
    raise HTTPException(401)


async def check_admin_csrf(request: Request, form=None) -> AdminUser:
    """For every state-changing admin request: an admin session, same origin, and the form's
    (or ``X-CSRF-Token`` header's) token equal to the session's. Returns the AdminUser; raises
    HTTPException 401/403."""
    admin = await require_admin(request)
    if not same_origin(request, request.app.state.ctx):
        raise HTTPException(403, "cross-site request refused")
    if form is None:
        from webmail.admin.login import read_form
        form = await read_form(request)
    token = form.get("csrf") or request.headers.get("x-csrf-token") or ""
    if not isinstance(token, str) or not hmac.compare_digest(token, admin.csrf_token):
        raise HTTPException(403, "the form expired: reload the page and try again")
    return admin
