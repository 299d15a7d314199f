"""What a logged-in user sees of their continuity mailbox: the folders, one message, its
sandboxed body, its attachments and source, search, and the user's own flags.

Routes: GET /mail/inbox, /mail/sent (?page=N), GET /mail/search?q=, GET /msg/{id},
GET /msg/{id}/body (?remote=1), GET /msg/{id}/att/{n}, GET /msg/{id}/raw, POST /msg/{id}/flags.

Every read filters on the session's mailbox (``user.address``) through the spool's mailbox verbs
(spool.mailbox_verbs, on either backend): another
user's message id answers 404 exactly like one that does not exist. Flags (seen, deleted) live
in mailbox_messages only; nothing here touches the queue, so what is replayed to Exchange never
depends on what a user does. Parsing and sanitising hostile mail run off the event loop
(webmail.mime, webmail.sanitize); the HTML body is never inlined into an app page: it is served
from /msg/{id}/body under security.BODY_CSP and shown in a sandboxed iframe.
"""
from __future__ import annotations

import asyncio
import email.utils
import functools

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from spool import mailbox as mbx
from webmail import display, mime, sanitize, security
from webmail.audit import record
from webmail.session import check_csrf, require_user
from webmail.templating import render

MAX_ID = 2 ** 62
MAX_QUERY = 200
FLAG_ACTIONS = {"seen": {"seen": True}, "unseen": {"seen": False},
                "delete": {"deleted": True}, "undelete": {"deleted": False}}


def routes() -> list:
    return [
        Route("/mail/inbox", functools.partial(folder_view, folder="inbox")),
        Route("/mail/sent", functools.partial(folder_view, folder="sent")),
        Route("/mail/search", search_view),
        Route("/msg/{id:int}", message_view),
        Route("/msg/{id:int}/body", body_view),
        Route("/msg/{id:int}/att/{n:int}", attachment_view),
        Route("/msg/{id:int}/raw", raw_view),
        Route("/msg/{id:int}/flags", flags_view, methods=["POST"]),
    ]


def _int(value: str | None, default: int, top: int = 1_000_000) -> int:
    try:
        return min(max(1, int(value or default)), top)
    except ValueError:
        return default


def _date(header: str):
    if not header:
        return None
    try:
        return email.utils.parsedate_to_datetime(header)
    except Exception:
        return None


def _row(r: dict, folder: str) -> dict:
    """A folder or search row as the templates show it (every string cleaned, none marked up)."""
    if folder == "sent":
        who = display.clean_line(r["to_header"], 80) or display.clean_line(r["envelope_rcpt"], 80)
    else:
        who = display.list_sender(r["from_header"], r["envelope_from"])
    return {"id": r["id"], "who": who or "(nobody)",
            "subject": display.clean_line(r["subject"], 200) or "(no subject)",
            "date": display.when(_date(r["date_header"]), r["filed_at"]),
            "size": display.human_size(r["size"]), "attachments": bool(r["has_attachments"]),
            "unread": not r["seen"], "folder": r["folder"]}


async def folder_view(request: Request, folder: str) -> Response:
    user = require_user(request)
    ctx = request.app.state.ctx
    page = _int(request.query_params.get("page"), 1)
    data = await ctx.spool.folder_page(user.address, folder, page)
    unread = await ctx.spool.unread_counts(user.address)
    return render(request, "mailbox.html", folder=folder, rows=[_row(r, folder) for r in data["rows"]],
                  total=data["total"], page=data["page"], pages=data["pages"], unread=unread)


async def search_view(request: Request) -> Response:
    user = require_user(request)
    ctx = request.app.state.ctx
    q = request.query_params.get("q", "")[:MAX_QUERY]
    page = _int(request.query_params.get("page"), 1, 200)
    found = {"rows": [], "more": False}
    if q.strip():
        found = await ctx.spool.search_messages(user.address, q, mbx.PER_PAGE,
                                                (page - 1) * mbx.PER_PAGE)
    rows = []
    for r in found["rows"]:
        row = _row(r, r["folder"])
        row["subject_runs"] = display.marked_runs(r["subject_marked"], mbx.MARK_START, mbx.MARK_END, 200) \
            or [(row["subject"], False)]
        row["snippet_runs"] = display.marked_runs(r["snippet"], mbx.MARK_START, mbx.MARK_END, 300)
        rows.append(row)
    return render(request, "search.html", query=display.clean_line(q, MAX_QUERY), rows=rows,
                  page=page, more=found["more"], searched=bool(q.strip()))


# -- one message ---------------------------------------------------------------------------
async def _load(request: Request, with_data: bool = True) -> tuple[dict, object]:
    """(row, user) of the message named in the path, or 404 (not the user's = not there)."""
    user = require_user(request)
    mid = request.path_params["id"]
    if mid <= 0 or mid > MAX_ID:
        raise HTTPException(404)
    row = await request.app.state.ctx.spool.get_mailbox_message(user.address, mid, with_data)
    if row is None:
        raise HTTPException(404)
    return row, user


async def _parse(raw: bytes | None) -> mime.ParsedMessage:
    try:
        return await asyncio.to_thread(mime.parse, raw or b"")
    except Exception:                       # mime.parse should not raise: show the source anyway
        return mime.ParsedMessage(text=(raw or b"")[:mime.MAX_TEXT_CHARS].decode("utf-8", "replace"),
                                  fallback="raw", problems=["the message could not be decoded"])


def _people(pairs) -> list[dict]:
    return [display.person(n, a) for n, a in pairs[:100]]


async def message_view(request: Request) -> Response:
    row, user = await _load(request)
    ctx = request.app.state.ctx
    p = await _parse(row["data"])
    remote = request.query_params.get("remote") == "1"
    as_text = request.query_params.get("view") == "text" or p.html is None
    blocked = 0
    if p.html is not None:
        try:
            blocked = (await asyncio.to_thread(sanitize.clean, p.html, p.images, False)).remote_blocked
        except Exception:
            as_text = True
    if not row["seen"]:
        await ctx.spool.set_flags(user.address, row["id"], seen=True)
    atts = [{"n": a.index, "name": display.safe_filename(a.filename, a.index),
             "type": display.clean_line(a.content_type, 80), "size": display.human_size(a.size),
             "nested": a.nested} for a in p.attachments]
    reply_to = [x for x in p.reply_to if x not in p.from_]
    return render(
        request, "message.html", m=row, subject=display.clean_line(p.subject, 998) or "(no subject)",
        from_=_people(p.from_), to=_people(p.to), cc=_people(p.cc), reply_to=_people(reply_to),
        date=display.when(p.date, row["filed_at"]), date_missing=p.date is None,
        attachments=atts, as_text=as_text, has_html=p.html is not None,
        text=display.linkify(p.text) if as_text else "", fallback=p.fallback,
        problems=[display.clean_line(x, 200) for x in p.problems], truncated=p.truncated,
        remote=remote, blocked=blocked, folder=row["folder"], deleted=bool(row["deleted"]))


async def body_view(request: Request) -> Response:
    row, _user = await _load(request)
    p = await _parse(row["data"])
    remote = request.query_params.get("remote") == "1"
    try:
        if p.html is not None:
            body = await asyncio.to_thread(sanitize.clean, p.html, p.images, remote)
            doc = sanitize.document(body.html)
        else:
            doc = sanitize.text_document(p.text)
    except Exception:
        doc = sanitize.text_document("This message could not be shown.")
    return Response(doc.encode("utf-8"), media_type="text/html; charset=utf-8", headers={
        "Content-Security-Policy": security.BODY_CSP_REMOTE_IMAGES if remote else security.BODY_CSP,
        "X-Frame-Options": "SAMEORIGIN", "Cache-Control": "private, no-store"})


def _download_headers(name: str) -> dict:
    return {"Content-Disposition": display.content_disposition(name),
            "Content-Security-Policy": security.ATTACHMENT_CSP,
            "Cache-Control": "private, no-store", "X-Content-Type-Options": "nosniff"}


async def attachment_view(request: Request) -> Response:
    row, _user = await _load(request)
    n = request.path_params["n"]
    found = None
    if n <= mime.MAX_PARTS:
        try:
            found = await asyncio.to_thread(mime.attachment_bytes, row["data"] or b"", n)
        except Exception:
            found = None
    if found is None:
        raise HTTPException(404)
    att, data = found
    name = display.safe_filename(att.filename, att.index)
    await record(request, "download", detail=f"msg={row['id']} queue_id={row['queue_id']} att={n}"
                 f" name={display.ascii_filename(name)} size={len(data)}")
    return Response(data, media_type=display.safe_content_type(att.content_type),
                    headers=_download_headers(name))


async def raw_view(request: Request) -> Response:
    row, _user = await _load(request)
    data = row["data"] or b""
    await record(request, "download", detail=f"msg={row['id']} queue_id={row['queue_id']} raw size={len(data)}")
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers=_download_headers(f"message-{row['id']}.eml"))


async def flags_view(request: Request) -> Response:
    user = require_user(request)
    ctx = request.app.state.ctx
    form = await request.form()
    await check_csrf(request, ctx, form)
    action = form.get("action")
    if not isinstance(action, str) or action not in FLAG_ACTIONS:
        raise HTTPException(400, "Unknown action.")
    row, _ = await _load(request, with_data=False)
    await ctx.spool.set_flags(user.address, row["id"], **FLAG_ACTIONS[action])
    if action in ("delete", "unseen"):
        return RedirectResponse(f"/mail/{row['folder']}", status_code=303)
    return RedirectResponse(f"/msg/{row['id']}", status_code=303)
