"""The webmail's Starlette app: middleware, error pages, static files and the routes of each part.

Routes come from three modules, one per part of the webmail: ``webmail.auth_views`` (login,
codes, links, enrolment, settings, logout), ``webmail.mail_views`` (folders, message view, the
sandboxed body URL, attachments, search) and ``webmail.compose_views`` (compose, reply, forward,
send, address suggestions, delivery status). Errors are pages without internals: 401 → the login
page, 404/405/403/413 → a short message, anything else → 500 "something went wrong" (logged).
"""
from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from webmail import auth_views, compose_views, mail_views
from webmail.admin import routes as admin_routes
from webmail.context import WebmailContext
from webmail.security import SecurityHeaders
from webmail.session import SessionLoader
from webmail.templating import render

STATIC = Path(__file__).parent / "static"

MESSAGES = {
    400: "The request was not understood.",
    403: "You are not allowed to do that.",
    404: "There is nothing here.",
    405: "That action is not available here.",
    413: "That is too large.",
    429: "Too many attempts. Wait a few minutes and try again.",
    503: "The webmail is not available right now.",
}


async def home(request: Request) -> Response:
    return RedirectResponse("/mail/inbox" if request.state.user else "/login", status_code=303)


async def healthz(request: Request) -> Response:
    return PlainTextResponse("ok")


def build_app(ctx: WebmailContext) -> Starlette:
    """The webmail app for ``ctx`` (see webmail.context)."""

    async def http_error(request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 401:
            admin_page = request.url.path == "/admin" or request.url.path.startswith("/admin/")
            return RedirectResponse("/admin/login" if admin_page else "/login", status_code=303)
        detail = exc.detail if isinstance(exc.detail, str) and exc.detail != _default(exc.status_code) \
            else MESSAGES.get(exc.status_code, "The request failed.")
        return render(request, "error.html", status=exc.status_code, headers=exc.headers,
                      status_code=exc.status_code, message=detail)

    async def server_error(request: Request, exc: Exception) -> Response:
        if ctx.log is not None:
            ctx.log.exception("webmail_error", path=request.url.path)
        try:
            return render(request, "error.html", status=500, status_code=500,
                          message="Something went wrong on our side. Try again in a moment.")
        except Exception:
            return PlainTextResponse("Something went wrong on our side.", status_code=500)

    routes = [
        Route("/", home),
        Route("/healthz", healthz),
        Mount("/static", StaticFiles(directory=str(STATIC)), name="static"),
        *auth_views.routes(),
        *mail_views.routes(),
        *compose_views.routes(),
        Mount("/admin", routes=admin_routes.routes()),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(SecurityHeaders, hsts=ctx.secure), Middleware(SessionLoader, ctx=ctx)],
        exception_handlers={HTTPException: http_error, Exception: server_error})
    app.state.ctx = ctx
    return app


def _default(status: int) -> str:
    from http import HTTPStatus
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""
