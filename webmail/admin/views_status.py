"""Admin console: the status page ``/admin`` and its JSON ``/admin/status.json``.

The page shows the continuity state (since when, why, who), held messages, the replay progress
(a <progress> bar with done, in flight, remaining, rate and ETA), queue depth per state and each
probe's last result. /static/admin-status.js polls /admin/status.json every few seconds and
updates the same elements in place (no inline script: the CSP forbids it; without JS the page
is complete and a reload refreshes it). A spool fault answers a retry page (503), not a trace.
"""
from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from spool import SpoolError
from webmail.admin import status_data
from webmail.admin.actions import retry_page
from webmail.admin.session import require_admin
from webmail.templating import render_admin


async def status_page(request: Request) -> Response:
    admin = await require_admin(request)
    ctx = request.app.state.ctx
    try:
        data = await status_data.gather(ctx)
    except SpoolError:
        return retry_page(request, admin)
    return render_admin(request, "admin/status.html", admin, data=data, now=time.time(),
                        duration=status_data.duration)


async def status_json(request: Request) -> Response:
    await require_admin(request)
    try:
        data = await status_data.gather(request.app.state.ctx)
    except SpoolError:
        return JSONResponse({"error": "spool unavailable"}, status_code=503,
                            headers={"Retry-After": "5"})
    data["now"] = time.time()
    return JSONResponse(data, headers={"Cache-Control": "no-store"})


def routes() -> list:
    """Routes of this part, relative to /admin."""
    from webmail.admin import actions
    return [Route("/", status_page, methods=["GET"]),
            Route("/status.json", status_json, methods=["GET"]),
            *actions.routes()]
