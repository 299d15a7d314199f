"""The admin HTTP API as a Starlette app (JSON in and out).

Routes (``/api/*`` need ``Authorization: Bearer <admin.token>``; an empty token refuses them all
with 503 so the API is never open by accident)::

    GET  /healthz                             no auth: 200 when the SMTP listener and spool are up, else 503
    GET  /metrics                             no auth: Prometheus text (metrics.py)
    GET  /api/continuity                      the controller's status()
    POST /api/continuity/{start|stop|confirm}              {"reason": ..., "actor": ...}
    POST /api/continuity/maintenance/{start|stop}          200 new status | 409 refusal
    GET  /api/queue                           messages per queue state
    GET  /api/probes[?history=1]              latest result per probe | every kept result

With continuity mode "off" the continuity routes answer 404. Reads the spool (counts) and the
live controller, runner and queue manager; writes only through controller.command(), which
queues the command behind any the CLI queued and applies them in order under the controller's
state lock (one audit record each); a spool fault answers 503 (not applied now).
"""
from __future__ import annotations

import asyncio
import hmac
from dataclasses import asdict, dataclass
from typing import Any, Callable

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.admin.metrics import build_registry, render
from gateway.continuity.engine import CommandRefused
from spool import SpoolError

__all__ = ["AdminContext", "build_app", "NO_TOKEN", "CONTINUITY_OFF"]

NO_TOKEN = "no admin token configured"
CONTINUITY_OFF = "continuity engine is off"
ACTIONS = ("start", "stop", "confirm")
MAINTENANCE_ACTIONS = ("start", "stop")
HEALTH_TIMEOUT = 2.0     # seconds for the spool read behind /healthz


@dataclass
class AdminContext:
    """What the API reads: the gateway's live objects. ``controller``/``runner`` are None when
    continuity is off; ``listening()`` says whether the SMTP listeners accept connections."""

    token: str
    spool: Any
    qmgr: Any
    listening: Callable[[], bool]
    controller: Any = None
    runner: Any = None
    journal: Any = None            # gateway.continuity.journal task (its ``stats``), or None
    intake: Any = None             # gateway.intake.server.IntakeServer (its ``proxy_refused``)


def _error(status: int, message: str, **headers) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


def build_app(ctx: AdminContext) -> Starlette:
    registry, collector = build_registry(ctx)

    def auth(request: Request) -> JSONResponse | None:
        if not ctx.token:
            return _error(503, NO_TOKEN)
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), ctx.token.encode()):
            return _error(401, "missing or wrong bearer token", **{"WWW-Authenticate": "Bearer"})
        return None

    def continuity_gate(request: Request) -> JSONResponse | None:
        refused = auth(request)
        if refused is None and ctx.controller is None:
            refused = _error(404, CONTINUITY_OFF)
        return refused

    async def healthz(request: Request) -> JSONResponse:
        mode = ctx.controller.status()["mode"] if ctx.controller is not None else "off"
        problems = []
        if not ctx.listening():
            problems.append("smtp listener down")
        try:
            await asyncio.wait_for(ctx.spool.ping(), HEALTH_TIMEOUT)
        except Exception as e:  # closed, locked, timed out: not healthy, whatever the cause
            problems.append(f"spool: {type(e).__name__}")
        if problems:
            return JSONResponse({"status": "unavailable", "mode": mode, "problems": problems},
                                status_code=503)
        return JSONResponse({"status": "ok", "mode": mode})

    async def metrics(request: Request) -> Response:
        return Response(await render(registry, collector), media_type=CONTENT_TYPE_LATEST)

    async def continuity_status(request: Request) -> JSONResponse:
        return continuity_gate(request) or JSONResponse(ctx.controller.status())

    async def continuity_command(request: Request, maintenance: bool) -> JSONResponse:
        refused = continuity_gate(request)
        if refused:
            return refused
        action = request.path_params["action"]
        if action not in (MAINTENANCE_ACTIONS if maintenance else ACTIONS):
            return _error(404, f"no such command: {action}")
        command = f"maintenance-{action}" if maintenance else action
        try:
            body = await request.json() if await request.body() else {}
        except ValueError:
            return _error(400, "body must be JSON")
        if not isinstance(body, dict) or not all(isinstance(body.get(k, ""), str) for k in ("reason", "actor")):
            return _error(400, 'body must be {"reason": "...", "actor": "..."}')
        try:
            await ctx.controller.command(command, body.get("reason", ""), body.get("actor") or "admin-api")
        except CommandRefused as e:
            return _error(409, str(e))
        except SpoolError as e:     # not applied now: a command and its effect are one write
            return _error(503, f"spool unavailable: {e}; the command was not applied (if it was queued,"
                          " the gateway applies it once the spool recovers, unless it expires first)",
                          **{"Retry-After": "5"})
        return JSONResponse(ctx.controller.status())

    async def queue(request: Request) -> JSONResponse:
        return auth(request) or JSONResponse(await ctx.spool.counts())

    async def probes(request: Request) -> JSONResponse:
        refused = auth(request)
        if refused:
            return refused
        if request.query_params.get("history") not in (None, "", "0"):
            return JSONResponse([asdict(r) for r in (ctx.runner.history() if ctx.runner else [])])
        latest = ctx.runner.latest() if ctx.runner else {}
        return JSONResponse({name: asdict(r) for name, r in latest.items()})

    def command_route(path: str, maintenance: bool) -> Route:
        async def endpoint(request: Request) -> JSONResponse:
            return await continuity_command(request, maintenance)
        return Route(path, endpoint, methods=["POST"])

    return Starlette(routes=[
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/api/continuity", continuity_status, methods=["GET"]),
        command_route("/api/continuity/maintenance/{action:str}", True),
        command_route("/api/continuity/{action:str}", False),
        Route("/api/queue", queue, methods=["GET"]),
        Route("/api/probes", probes, methods=["GET"]),
    ])
