"""Admin console: the button. Each continuity command has a confirmation page (GET) saying what
it will do and a POST that does it through ``ctx.controller.command`` (queued behind CLI
commands, applied under the controller's lock, one continuity audit record) plus a webmail audit
row (action ``admin_command``, actor ``admin:NAME``).

Routes (relative to /admin)::

    GET/POST /start                 start an event (reason required)
    GET/POST /stop                  end the event: held mail is replayed
    GET/POST /confirm[?t=TOKEN]     confirm the event the engine waits for (alert-only mode);
                                    with the alert link's token, it is spent by the POST
    GET/POST /maintenance/start     hold mail for planned work
    GET/POST /maintenance/stop

A refusal (engine.CommandRefused: "not in an event") is shown as a 409 page with its reason; a
spool fault as a 503 retry page; continuity off as a 404 page. Logged-out GETs go to the login
page and come back here after it (``?next=``).

On a shared (PostgreSQL) spool the console of every node works, whichever node a balancer sends
the admin to: a node that is not the continuity leader queues the command in the shared command
table (as `mailgate continuity` does) and waits up to FORWARD_WAIT seconds for the leader's
result, then adopts the new shared state at once (one controller step), so this node holds (or
replays) from the moment the page answers; a result not there by then is shown as a 202 page "queued" (it stays valid for
``continuity.command_ttl`` seconds, then expires without effect).
"""
from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from gateway.continuity.engine import CommandRefused
from spool import SpoolError
from webmail.admin import alert_links
from webmail.admin.login import read_form
from webmail.admin.session import check_admin_csrf, load_admin
from webmail.audit import record
from webmail.templating import render_admin

MAX_REASON = 500
FORWARD_WAIT = 10.0      # seconds a follower's console waits for the leader to apply a command


@dataclass(frozen=True)
class Action:
    command: str          # the controller's command name
    path: str             # relative to /admin
    title: str            # the button's words
    needs_reason: bool
    danger: bool          # shown as the red button


ACTIONS = {a.command: a for a in (
    Action("start", "/start", "Start a continuity event", True, True),
    Action("stop", "/stop", "End the continuity event", False, False),
    Action("confirm", "/confirm", "Confirm the continuity event", False, True),
    Action("maintenance-start", "/maintenance/start", "Start maintenance", True, True),
    Action("maintenance-stop", "/maintenance/stop", "End maintenance", False, False),
)}


class Queued(Exception):
    """The command was queued for the leader, which has not applied it yet (str: why)."""


def _follower(ctx) -> bool:
    """True on a node of a shared spool that is not the continuity leader now."""
    lead = getattr(ctx.controller, "lead", None)
    return lead is not None and not lead.leading


async def apply_command(ctx, command: str, reason: str, actor: str) -> None:
    """Apply continuity ``command``: by this node's controller when it leads (or owns its
    spool), else queued for the leader in the shared command table and its result waited for
    (FORWARD_WAIT s, polled every 0.2 s) and adopted by this node's controller. Raises engine.CommandRefused (refused or expired),
    Queued (no result yet), SpoolError."""
    if not _follower(ctx):
        await ctx.controller.command(command, reason, actor)
        return
    cid = await ctx.spool.queue_command(command, reason, actor, time.time())
    end = time.monotonic() + FORWARD_WAIT
    while True:
        row = await ctx.spool.get_command(cid)
        if row is not None and row["done_at"] is not None:
            result = row["result"] or ""
            if result.startswith("ok"):
                try:        # adopt the leader's new state here now, not at the next tick
                    await ctx.controller.step()
                except Exception:       # the next tick adopts it (and logs a failing spool)
                    pass
                return
            raise CommandRefused(result.removeprefix("refused: "))
        if time.monotonic() >= end:
            raise Queued(f"queued as command {cid} for the continuity leader, which has not "
                         f"applied it yet; it expires without effect after "
                         f"{ctx.cfg.continuity.command_ttl:g} s")
        await asyncio.sleep(0.2)


def retry_page(request: Request, admin) -> Response:
    """The 503 page for a spool fault: nothing was done, try again (no internals shown)."""
    return render_admin(request, "admin/message.html", admin, status=503, headers={"Retry-After": "5"},
                        title="Try again in a moment",
                        message="The gateway's storage did not answer. Nothing was changed. "
                                "Try again in a few seconds.", back=request.url.path)


def _domains_text(domains: list[str]) -> str:
    n = len(domains)
    shown = ", ".join(domains[:10]) + (f" and {n - 10} more" if n > 10 else "")
    return f"{n} domain{'s' if n != 1 else ''}: {shown}" if n else "no domains"


def effect(command: str, domains: list[str], held: int, replay_rate: float) -> str:
    """What ``command`` will do, in one sentence for the confirmation page."""
    d = _domains_text(domains)
    if command in ("start", "confirm"):
        return (f"Holds mail for {d}. Mail for Exchange is kept here (users read it in the webmail) "
                "until the event ends.")
    if command == "maintenance-start":
        return f"Holds mail for {d} while Exchange is under maintenance, until you end maintenance."
    return (f"Ends holding: the {held} held message{'s' if held != 1 else ''} are delivered to "
            f"Exchange at up to {replay_rate:g} per second, in arrival order.")


async def _admin_or_login(request: Request):
    """(admin, None) or (None, a redirect to the login page coming back here); a webmail user
    alone gets 403."""
    admin = await load_admin(request)
    if admin is not None:
        return admin, None
    if getattr(request.state, "user", None) is not None:
        raise HTTPException(403, "This page is for administrators.")
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return None, RedirectResponse("/admin/login?next=" + quote(here, safe=""), status_code=303)


def _page(request: Request, admin, action: Action, *, status: int = 200, error: str = "",
          held: int = 0, token: str = "", reason: str = "") -> Response:
    ctx = request.app.state.ctx
    rate = ctx.controller.cfg.replay_rate
    return render_admin(request, "admin/action.html", admin, status=status, action=action,
                        effect=effect(action.command, list(ctx.cfg.relay.accepted_domains), held, rate),
                        error=error, token=token, reason=reason)


def _off(request: Request, admin) -> Response:
    return render_admin(request, "admin/message.html", admin, status=404, title="Continuity is off",
                        message="The continuity engine is off in this gateway's configuration "
                                "([continuity] mode = \"off\"): there is nothing to start or stop.",
                        back="/admin")


def _gone(request: Request, admin) -> Response:
    return render_admin(request, "admin/message.html", admin, status=410, title="Link used or expired",
                        message="This alert link was already used or has expired. Open the status "
                                "page to see the current state and act from there.", back="/admin")


def _endpoint(action: Action):
    async def get(request: Request) -> Response:
        admin, login = await _admin_or_login(request)
        if login is not None:
            return login
        ctx = request.app.state.ctx
        if ctx.controller is None:
            return _off(request, admin)
        token = request.query_params.get("t", "") if action.command == "confirm" else ""
        try:
            if token and await alert_links.live(ctx, token) is None:
                return _gone(request, admin)
            held = await ctx.spool.count_held()
        except SpoolError:
            return retry_page(request, admin)
        return _page(request, admin, action, held=held, token=token)

    async def post(request: Request) -> Response:
        form = await read_form(request)
        admin = await check_admin_csrf(request, form)
        ctx = request.app.state.ctx
        if ctx.controller is None:
            return _off(request, admin)
        reason = form.get("reason")
        reason = reason.strip()[:MAX_REASON] if isinstance(reason, str) else ""
        token = form.get("t") if action.command == "confirm" else ""
        token = token if isinstance(token, str) else ""
        if action.needs_reason and not reason:
            return _page(request, admin, action, status=400, error="Give a reason: it goes into the "
                         "audit log and the alert.", token=token)
        via = "alert link" if token else "console"
        try:
            if token and await alert_links.spend(ctx, token) is None:
                await record(request, "admin_command", address=admin.actor, actor=admin.actor,
                             result="refused", detail=f"{action.command} via alert link: used or expired")
                return _gone(request, admin)
            await apply_command(ctx, action.command, reason or f"{action.command} from the "
                                f"admin console", admin.actor)
        except Queued as e:
            await record(request, "admin_command", address=admin.actor, actor=admin.actor,
                         result="queued", detail=f"{action.command} via {via}: {e}"[:2000])
            return render_admin(request, "admin/message.html", admin, status=202, title="Queued",
                                message=f"The command was {e}.", back="/admin")
        except CommandRefused as e:
            await record(request, "admin_command", address=admin.actor, actor=admin.actor,
                         result="refused", detail=f"{action.command} via {via}: {e}")
            return render_admin(request, "admin/message.html", admin, status=409, title="Refused",
                                message=f"The gateway refused: {e}", back="/admin")
        except SpoolError:
            return retry_page(request, admin)
        await record(request, "admin_command", address=admin.actor, actor=admin.actor,
                     detail=f"{action.command} via {via}: {reason}"[:2000])
        return RedirectResponse("/admin", status_code=303)
    return get, post


def routes() -> list:
    """The button's routes, relative to /admin."""
    out = []
    for action in ACTIONS.values():
        get, post = _endpoint(action)
        out += [Route(action.path, get, methods=["GET"]), Route(action.path, post, methods=["POST"])]
    return out
