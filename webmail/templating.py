"""Jinja2 templates (autoescape on for every template) and the one ``render`` every page uses."""
from __future__ import annotations

import datetime as dt
from pathlib import Path

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse

_ENV = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(Path(__file__).parent / "templates")),
    autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)


def _when(ts: float | None) -> str:
    if not ts:
        return ""
    return dt.datetime.fromtimestamp(ts, dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


_ENV.filters["when"] = _when

BANNERS = {
    "continuity": "Continuity event: Exchange is unavailable. Mail is being held safely and you can "
                  "read and send it here.",
    "recovering": "Exchange is back: held mail is being delivered to your mailbox.",
    "degraded": "Exchange is responding slowly or failing some checks.",
}


def render(request: Request, template: str, status: int = 200, headers: dict | None = None,
           **values) -> HTMLResponse:
    """Render ``template`` with ``user``, ``csrf``, the continuity ``banner`` and ``values``."""
    ctx = request.app.state.ctx
    user = getattr(request.state, "user", None)
    state = None
    try:
        state = ctx.continuity()
    except Exception:
        pass
    mode = (state or {}).get("mode", "normal")
    html = _ENV.get_template(template).render(
        request=request, user=user, csrf=user.csrf_token if user else "",
        mode=mode, banner=BANNERS.get(mode, ""), **values)
    return HTMLResponse(html, status_code=status, headers=headers)


def render_admin(request: Request, template: str, admin, status: int = 200,
                 headers: dict | None = None, **values) -> HTMLResponse:
    """Render an admin console ``template`` (extending admin/base.html) with ``admin`` (the
    AdminUser or None on the login pages), its ``csrf`` token, the continuity ``state`` and
    ``values``."""
    ctx = request.app.state.ctx
    state = None
    try:
        state = ctx.continuity()
    except Exception:
        pass
    html = _ENV.get_template(template).render(
        request=request, admin=admin, csrf=admin.csrf_token if admin else "",
        state=state or {}, mode=(state or {}).get("mode", "off"), **values)
    return HTMLResponse(html, status_code=status, headers=headers)
