"""Admin console: the timeline (``GET /admin/timeline?range=1h|24h|7d``): probe results per probe
and the continuity state bands as server-side SVG (webmail.admin.svg_timeline), with the audit
entries marked on it and listed in a table under it (the same facts, for screen readers)."""
from __future__ import annotations

import asyncio
import time

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from webmail.admin import svg_timeline
from webmail.admin.session import require_admin
from webmail.admin.svg_render import render_svg
from webmail.templating import render_admin


async def timeline(request: Request) -> Response:
    admin = await require_admin(request)
    ctx = request.app.state.ctx
    range_name = request.query_params.get("range", "24h")
    if range_name not in svg_timeline.RANGES:
        raise HTTPException(400, "Unknown range: use 24h or 7d.")
    start, end, bucket = svg_timeline.window(range_name, time.time())
    t = await ctx.spool.timeline(start, end, svg_timeline.AUDIT_MAX)
    probes, results, audit, before, changes, total = (
        t["probes"], t["results"], t["audit"], t["before"], t["changes"], t["total"])
    # a day of marks is thousands of elements: laid out and written off the event loop, which
    # also serves SMTP
    tl, svg = await asyncio.to_thread(_draw, range_name, start, end, bucket, probes, results, audit, before,
                                      changes, total)
    return render_admin(request, "admin/timeline.html", admin, tl=tl, svg=svg, ranges=list(svg_timeline.RANGES))


def _draw(range_name, start, end, bucket, probes, results, audit, before, changes, total):
    tl = svg_timeline.build(range_name, start, end, bucket, probes, results, audit, before, changes, total)
    return tl, render_svg(tl)


def routes() -> list:
    """Routes of this part, relative to /admin."""
    return [Route("/timeline", timeline, methods=["GET"])]
