"""Admin console: the queue.

    GET  /admin/queue?state=S&q=TEXT&page=N   counts per state, one page of messages, search
    GET  /admin/queue/{queue_id}              envelope, recipients (status, last reply), headers
    POST /admin/queue/{queue_id}/hold|release|flush
    GET  /admin/queue/{queue_id}/delete       the confirmation step; POST with confirm=yes deletes
    POST /admin/queue/flush                   every deferred message due now (`mailgate queue flush`)

The changes are the ones of `mailgate queue` (gateway/cli_queue.py), through the spool's console
verbs (hold_message, release_message, flush_queue, delete_message: both backends).
Each POST passes check_admin_csrf and is audited (webmail_audit, actor admin:NAME, action
queue_hold, queue_release, queue_flush, queue_delete; result ok or refused, detail naming the
queue ID). A refused change (a message being delivered, not on hold) is shown on the message
page with status 409.
"""
from __future__ import annotations

import re

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from spool import console
from spool.states import InvalidTransition, QueueState
from webmail.admin.login import read_form
from webmail.admin.session import check_admin_csrf, require_admin
from webmail.audit import record
from webmail.templating import render_admin

PAGE = 50
QUEUE_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
STATES = [s.value for s in QueueState]
DONE = {"held": "The message is on operator hold.", "released": "The message was released: it is due now.",
        "flushed": "The message is due now.", "deleted": "The message was deleted."}


def _queue_id(request: Request) -> str:
    qid = request.path_params["queue_id"]
    if not QUEUE_ID.fullmatch(qid):
        raise HTTPException(404, "No such message.")
    return qid


async def queue_list(request: Request) -> Response:
    admin = await require_admin(request)
    ctx = request.app.state.ctx
    p = request.query_params
    state = p.get("state", "")
    if state and state not in STATES:
        raise HTTPException(400, "Unknown queue state.")
    text = p.get("q", "")[:200]
    try:
        page = max(1, int(p.get("page", "1")))
    except ValueError:
        page = 1
    states = (state,) if state else console.LIVE_STATES

    rows, total = await ctx.spool.search_queue(states, text, PAGE, (page - 1) * PAGE)
    counts = await ctx.spool.counts()
    pages = max(1, -(-total // PAGE))
    return render_admin(request, "admin/queue.html", admin, rows=rows, total=total, counts=counts,
                        sel=state, q=text, page=page, pages=pages, live=console.LIVE_STATES,
                        flushed=p.get("flushed"), deleted=p.get("deleted", "")[:64])


def _headers_of(data: bytes | None) -> str:
    if data is None:
        return ""
    head = data.split(b"\r\n\r\n", 1)[0][:64 * 1024]
    return head.decode("utf-8", "replace").replace("\r\n", "\n")


async def _message_page(request: Request, admin, qid: str, status: int = 200, error: str = "",
                        done: str = "") -> Response:
    ctx = request.app.state.ctx
    m = await ctx.spool.get(qid, with_data=True)
    if m is None:
        raise HTTPException(404, "No such message.")
    return render_admin(request, "admin/queue_message.html", admin, status=status, m=m,
                        headers_text=_headers_of(m.data), error=error, done=DONE.get(done, ""))


async def message(request: Request) -> Response:
    admin = await require_admin(request)
    return await _message_page(request, admin, _queue_id(request), done=request.query_params.get("done", ""))


def _change(action: str):
    """A POST handler running the `mailgate queue ACTION` change for one message."""
    async def handler(request: Request) -> Response:
        form = await read_form(request)
        admin = await check_admin_csrf(request, form)
        ctx = request.app.state.ctx
        qid = _queue_id(request)
        if action == "delete" and form.get("confirm") != "yes":
            return RedirectResponse(f"/admin/queue/{qid}/delete", status_code=303)
        error, done = "", ""
        try:
            if action == "hold":
                await ctx.spool.hold_message(qid)
                done = "held"
            elif action == "release":
                await ctx.spool.release_message(qid)
                done = "released"
            elif action == "flush":
                n = await ctx.spool.flush_queue(qid)
                if n:
                    done = "flushed"
                else:
                    error = "Only an incoming or deferred message can be flushed."
            else:
                found = await ctx.spool.delete_message(qid)
                if not found:
                    raise HTTPException(404, "No such message.")
                done = "deleted"
        except InvalidTransition as e:
            if e.actual is None:
                raise HTTPException(404, "No such message.")
            error = ("The message is being delivered right now; try again in a moment."
                     if action == "delete" else f"Cannot {action}: the message is {getattr(e.actual, 'value', e.actual)}.")
        await record(request, f"queue_{action}", address="", actor=admin.actor,
                     result="refused" if error else "ok", detail=f"queue_id={qid}" + (f" {error}" if error else ""))
        if error:
            return await _message_page(request, admin, qid, status=409, error=error)
        if action in ("release", "flush"):
            ctx.notify()
        if action == "delete":
            return RedirectResponse(f"/admin/queue?deleted={qid}", status_code=303)
        return RedirectResponse(f"/admin/queue/{qid}?done={done}", status_code=303)
    return handler


async def delete_confirm(request: Request) -> Response:
    admin = await require_admin(request)
    ctx = request.app.state.ctx
    qid = _queue_id(request)
    m = await ctx.spool.get(qid)
    if m is None:
        raise HTTPException(404, "No such message.")
    return render_admin(request, "admin/queue_delete.html", admin, m=m)


async def flush_all(request: Request) -> Response:
    form = await read_form(request)
    admin = await check_admin_csrf(request, form)
    ctx = request.app.state.ctx
    n = await ctx.spool.flush_queue(None)
    await record(request, "queue_flush", address="", actor=admin.actor, detail=f"all deferred: {n}")
    ctx.notify()
    return RedirectResponse(f"/admin/queue?state=deferred&flushed={n}", status_code=303)


def routes() -> list:
    """Routes of this part, relative to /admin."""
    return [
        Route("/queue", queue_list, methods=["GET"]),
        Route("/queue/flush", flush_all, methods=["POST"]),
        Route("/queue/{queue_id}", message, methods=["GET"]),
        Route("/queue/{queue_id}/hold", _change("hold"), methods=["POST"]),
        Route("/queue/{queue_id}/release", _change("release"), methods=["POST"]),
        Route("/queue/{queue_id}/flush", _change("flush"), methods=["POST"]),
        Route("/queue/{queue_id}/delete", delete_confirm, methods=["GET"]),
        Route("/queue/{queue_id}/delete", _change("delete"), methods=["POST"]),
    ]
