"""Helpers of the admin login pages (webmail.admin.views_auth): the pre-session form token, the
origin check, rate limits and the return target after login.

The admin login reuses the webmail login's machinery (webmail.auth_views' per-process AuthState:
the argon2 Hasher, the RateLimiter and the pre-session secret) with rate-limit keys of its own
(scope ``admin-login``), so a flood on the webmail login does not lock admins out and vice versa.
"""
from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from webmail import auth, auth_views
from webmail.templating import render_admin

SCOPE = "admin-login"
MAX_NAME = 64


def state(ctx) -> auth_views.AuthState:
    """The webmail's login state (hasher, limiter, pre-session secret) of this process."""
    return auth_views._state(ctx)


def cookie(ctx, what: str) -> str:
    """Name of the admin login's cookie ``what`` (pre, mfa): ``mailgate-admin-WHAT``."""
    return auth_views._cookie(ctx, f"admin-{what}")


def set_cookie(response: Response, ctx, what: str, value: str, max_age: int | None = None) -> None:
    auth_views._set_cookie(response, ctx, f"admin-{what}", value, max_age)


def drop_cookie(response: Response, ctx, what: str) -> None:
    auth_views._drop_cookie(response, ctx, f"admin-{what}")


def page(request: Request, template: str, status: int = 200, **values) -> Response:
    """A login page (no admin yet) with its pre-session form token (and cookie if new)."""
    ctx = request.app.state.ctx
    value = request.cookies.get(cookie(ctx, "pre"), "")
    new = auth_views._pre_age(value) is None
    if new:
        value = _fresh()
    response = render_admin(request, template, None, status=status,
                            pre=auth.pre_token(state(ctx).secret, value), **values)
    if new:
        set_cookie(response, ctx, "pre", value, max_age=int(auth_views.PRE_MAX_AGE))
    return response


def _fresh() -> str:
    import secrets
    import time
    return f"{int(time.time())}.{secrets.token_urlsafe(18)}"


async def read_form(request: Request):
    """The posted form (small, no files); 400 when unreadable."""
    return await auth_views._form(request)


async def pre_checked_form(request: Request):
    """The form of a login POST after the origin and pre-session token checks (403)."""
    return await auth_views._pre_checked_form(request, "admin-pre")


def clean_name(raw: object) -> str | None:
    """A typed admin name, stripped and case-folded, or None if empty, too long or not
    printable ASCII without spaces and colons."""
    if not isinstance(raw, str):
        return None
    name = raw.strip().casefold()
    if not 0 < len(name) <= MAX_NAME or not name.isascii() or not name.isprintable() \
            or any(ch in name for ch in " :\t"):
        return None
    return name


def safe_next(raw: object) -> str:
    """Where to land after login: ``raw`` if it is a path of the console (``/admin`` or
    ``/admin/...``, no scheme, no host, no backslash), else ``/admin``."""
    if not isinstance(raw, str) or len(raw) > 500 or not raw.isascii() or not raw.isprintable():
        return "/admin"
    if raw != "/admin" and not raw.startswith(("/admin/", "/admin?")):
        return "/admin"
    if "//" in raw or "\\" in raw or "/../" in raw:
        return "/admin"
    return raw


def limited(ctx, keys) -> list | None:
    return state(ctx).limiter.take(keys)
