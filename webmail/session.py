"""Server-side sessions for the webmail: the cookie carries a random id; the session lives in the
spool database (the spool's session verbs, spool.accounts_verbs), so logout, a password change or an admin revokes it at once, and
a session opened before an outage keeps working through it (nothing here depends on Exchange, AD
or an IdP).

Cookie: ``__Host-mailgate`` with ``Secure; HttpOnly; SameSite=Strict; Path=/`` when the webmail
is reached over HTTPS (``public_url`` https:// or ``tls_cert`` set). Over plain HTTP (the
embedded default on loopback) browsers refuse ``Secure`` and ``__Host-`` cookies from a
non-loopback origin, so the cookie is then ``mailgate`` with HttpOnly and SameSite=Strict only
(documented in docs/webmail.md: plain HTTP is for loopback and trials).

``SessionLoader`` (ASGI middleware) sets ``scope["state"]["user"]`` to a WebUser or None for
every request; ``last_seen`` is written at most every TOUCH_INTERVAL seconds.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

TOUCH_INTERVAL = 60.0   # seconds between last_seen writes of one session


@dataclass(frozen=True)
class WebUser:
    """The logged-in user of a request. ``address``: mailbox key; ``session_id``: the cookie value."""

    address: str
    session_id: str
    csrf_token: str
    created_at: float
    mfa: bool = False


def cookie_name(ctx) -> str:
    return "__Host-mailgate" if ctx.secure else "mailgate"


def set_session_cookie(response: Response, ctx, session_id: str, name: str | None = None) -> None:
    """Put the session cookie (``name``, default the webmail's cookie_name) on ``response``:
    a session cookie (no Max-Age; the server ends it), HttpOnly, SameSite=Strict, Secure over
    HTTPS."""
    response.set_cookie(name or cookie_name(ctx), session_id, path="/", secure=ctx.secure,
                        httponly=True, samesite="strict")


def clear_session_cookie(response: Response, ctx, name: str | None = None) -> None:
    response.delete_cookie(name or cookie_name(ctx), path="/", secure=ctx.secure, httponly=True,
                           samesite="strict")


class SessionLoader:
    """ASGI middleware: loads the session named by the cookie (see module doc)."""

    def __init__(self, app, ctx):
        self.app, self.ctx = app, ctx
        self._touched: dict[str, float] = {}

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            scope.setdefault("state", {})
            scope["state"]["user"] = await self._load(Request(scope))
        await self.app(scope, receive, send)

    async def _load(self, request: Request) -> WebUser | None:
        sid = request.cookies.get(cookie_name(self.ctx))
        if not sid or len(sid) > 200:
            return None
        cfg = self.ctx.cfg.webmail
        row = await self.ctx.spool.get_session(sid, idle=cfg.session_idle)
        if row is None or row["address"].startswith("admin:"):
            return None     # an admin session (webmail.admin) is never a mailbox user
        now = time.time()
        if now - max(row["last_seen"], self._touched.get(sid, 0.0)) > TOUCH_INTERVAL:
            self._touched[sid] = now
            if len(self._touched) > 10_000:
                self._touched.clear()
            await self.ctx.spool.touch_session(sid, now)
        return WebUser(row["address"], sid, row["csrf_token"], row["created_at"], bool(row["mfa"]))


def current_user(request: Request) -> WebUser | None:
    return request.state.user


def require_user(request: Request) -> WebUser:
    """The logged-in user, or HTTPException 401 (the error handler redirects to /login)."""
    user = request.state.user
    if user is None:
        raise HTTPException(401)
    return user


def same_origin(request: Request, ctx) -> bool:
    """Fetch-Metadata first (``Sec-Fetch-Site: same-origin``), the Origin header as fallback
    (it must equal the public URL's origin or the request's own Host), else refuse."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "same-origin"
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False
    o = urlsplit(origin)
    own = urlsplit(ctx.public_url)
    host = request.headers.get("host", "")
    return (o.scheme, o.netloc) == (own.scheme, own.netloc) or o.netloc == host


async def check_csrf(request: Request, ctx, form=None) -> None:
    """For every state-changing request of a logged-in user: same origin, and the form's (or the
    ``X-CSRF-Token`` header's) token equals the session's. Raises HTTPException 403."""
    import hmac
    user = require_user(request)
    if not same_origin(request, ctx):
        raise HTTPException(403, "cross-site request refused")
    form = form if form is not None else await request.form()
    token = form.get("csrf") or request.headers.get("x-csrf-token") or ""
    if not isinstance(token, str) or not hmac.compare_digest(token, user.csrf_token):
        raise HTTPException(403, "the form expired: reload the page and try again")
