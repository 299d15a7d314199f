"""Sending from the webmail: compose, reply, reply-all, forward (inline or as an attachment),
send, address suggestions and the delivery status of a Sent item (docs/webmail-sending.md).

    GET  /compose                      the form (prefilled from ?to=; says so when sending is off)
    POST /compose                      send (multipart/form-data; CSRF token + same-origin)
    GET  /msg/{id}/reply, /reply-all   the form prefilled from message {id} of the user's mailbox
    GET  /msg/{id}/forward[?as=attachment]
    GET  /compose/suggest?q=           JSON [{"address": ...}] from the user's own tenant only
    GET  /msg/{id}/status              each recipient's delivery state (the owner's Sent items)

A send that fails (bad address, too many recipients, hourly limit, spool or key trouble) shows
the form again with everything typed in it, its attachments kept (KeptUploads) and the reason;
nothing is queued. A send that
succeeds is queued, filed into the sender's Sent folder and audited in one transaction
(spool.sent.commit_sent) and the browser goes to its status page.

Tenant rule for suggestions: a user's tenant is the set of domains of their own addresses (their
mailbox address and its aliases in the recipient directory); only directory entries in those
domains are suggested. One gateway serving several organisations (sets of accepted domains)
therefore never shows one organisation's directory to another, without extra configuration.
"""
from __future__ import annotations

import asyncio
import dataclasses
import time

from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from spool import sent as spool_sent
from spool.states import QueueState, RcptState
from webmail import audit, compose, dkim_sign, outbound, quoting, thread_headers
from webmail.compose import ComposeError, Upload
from webmail.compose_addresses import (  # noqa: F401
    KeptUploads,
    _kept,
    own_addresses,
    suggestions,
    tenant_domains,
)
from webmail.session import check_csrf, require_user, same_origin
from webmail.templating import render

MODES = ("new", "reply", "reply-all", "forward", "forward-attachment")
MAX_FILES = 20                    # attachments per message
MAX_FIELDS = 30                   # non-file form fields
MAX_FIELD_BYTES = 8 * 1024 * 1024  # one text field (the body: MAX_BODY characters of UTF-8)
BODY_SLACK = MAX_FIELD_BYTES + 256 * 1024   # request bytes allowed beyond max_upload


@dataclasses.dataclass
class Draft:
    """What the form holds (re-shown as typed when a send fails)."""

    from_addr: str = ""
    to: str = ""
    cc: str = ""
    bcc: str = ""
    subject: str = ""
    body: str = ""
    orig: str = ""                # id of the original in the user's mailbox (reply/forward)
    mode: str = "new"
    kept: str = ""                # token of attachments kept from a failed send (KeptUploads)


class SendFailed(Exception):
    """A send refused; ``keep``: its attachments are worth keeping for the next try (False when
    they are what is wrong)."""

    def __init__(self, message: str, status: int = 400, keep: bool = True):
        super().__init__(message)
        self.status, self.keep = status, keep


# -- pages ------------------------------------------------------------------------------------
def _form(request: Request, draft: Draft, *, error: str = "", status: int = 200,
          original=None, dropped: list[str] = (), kept: list[str] = ()) -> Response:
    ctx = request.app.state.ctx
    user = request.state.user
    w = ctx.cfg.webmail
    return render(request, "compose.html", status=status, draft=draft,
                  addresses=own_addresses(ctx, user), sending=w.sending, error=error,
                  max_recipients=w.max_recipients, max_upload_mb=round(w.max_upload / 1048576, 1),
                  original_attachments=[thread_headers.clean_subject(a.filename) for a in
                                        getattr(original, "attachments", [])]
                  if draft.mode == "forward" else [], dropped=list(dropped), kept=list(kept))


async def compose_page(request: Request) -> Response:
    if request.method == "POST":
        return await send(request)
    user = require_user(request)
    to = request.query_params.get("to", "")
    draft = Draft(from_addr=user.address, to=thread_headers.clean_subject(to)[:2000])
    return _form(request, draft)


MAX_ID = 2 ** 63 - 1              # SQLite's INTEGER range: a larger id names nothing


async def _original(request: Request, message_id: int) -> dict:
    ctx = request.app.state.ctx
    user = require_user(request)
    if message_id > MAX_ID:
        raise HTTPException(404)
    row = await ctx.spool.get_mailbox_message(user.address, message_id)
    if row is None or row.get("data") is None:
        raise HTTPException(404)
    return row


async def _prefill(request: Request, mode: str) -> Response:
    ctx = request.app.state.ctx
    user = require_user(request)
    row = await _original(request, request.path_params["id"])
    p = await asyncio.to_thread(quoting.parse_original, row["data"])
    own = {a.casefold() for a in own_addresses(ctx, user)}
    rcpt = thread_headers.clean_subject(row.get("envelope_rcpt") or "").casefold()
    draft = Draft(from_addr=rcpt if rcpt in own else user.address, orig=str(row["id"]), mode=mode)

    def not_own(addrs):
        return [(n, a) for n, a in addrs or [] if (a or "").casefold() not in own]

    def valid(addrs):        # a broken address of the original is not prefilled
        out = []
        for n, a in addrs or []:
            try:
                compose.parse_address(thread_headers.clean_subject(a or ""))
            except ComposeError:
                continue
            out.append((n, a))
        return out
    if mode in ("reply", "reply-all"):
        to = valid(p.to if row.get("folder") == "sent" else (p.reply_to or p.from_))
        draft.to = quoting.format_list(to)
        if mode == "reply-all":
            seen = {(a or "").casefold() for _n, a in to}
            cc = [(n, a) for n, a in valid(not_own([*(p.to or []), *(p.cc or [])]))
                  if (a or "").casefold() not in seen]
            draft.cc = quoting.format_list(list({a.casefold(): (n, a) for n, a in cc}.values()))
        draft.subject = thread_headers.reply_subject(p.subject)
        draft.body = quoting.quote(p, forward=False)
    else:
        draft.subject = thread_headers.forward_subject(p.subject)
        if request.query_params.get("as") == "attachment":
            draft.mode = "forward-attachment"
        else:
            draft.body = quoting.quote(p, forward=True)
    return _form(request, draft, original=p)


async def reply(request: Request) -> Response:
    return await _prefill(request, "reply")


async def reply_all(request: Request) -> Response:
    return await _prefill(request, "reply-all")


async def forward(request: Request) -> Response:
    return await _prefill(request, "forward")


async def suggest(request: Request) -> Response:
    ctx = request.app.state.ctx
    user = require_user(request)
    q = request.query_params.get("q", "")[:100]
    found = await asyncio.to_thread(suggestions, ctx, user, q)    # a scan of the directory
    return JSONResponse([{"address": a} for a in found])


# -- sending ----------------------------------------------------------------------------------
def _field(form, name: str) -> str:
    v = form.get(name)
    return v if isinstance(v, str) else ""


async def send(request: Request) -> Response:
    ctx = request.app.state.ctx
    user = require_user(request)
    w = ctx.cfg.webmail
    if not same_origin(request, ctx):          # before reading a byte of the upload
        raise HTTPException(403, "cross-site request refused")
    if not w.sending:
        await audit.record(request, "send", result="refused", detail="sending is off")
        raise HTTPException(403, "Sending from the webmail is turned off by your administrator.")
    length = request.headers.get("content-length", "")
    if not length.isdigit():
        raise HTTPException(411, "The upload needs a length.")
    if int(length) > w.max_upload + BODY_SLACK:
        raise HTTPException(413, f"The attachments are too large: at most "
                                 f"{w.max_upload / 1048576:.1f} MB per message. Go back to keep your text.")
    form = await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    try:
        await check_csrf(request, ctx, form)
        draft = Draft(**{f.name: _field(form, f.name) for f in dataclasses.fields(Draft)})
        if draft.mode not in MODES:
            draft.mode = "new"
        store = _kept(ctx)
        uploads = (store.get(user.address, draft.kept) or []) if draft.kept else []
        if form.get("drop_kept"):
            uploads = []
        for f in form.getlist("attachments"):
            if isinstance(f, UploadFile) and f.filename:
                uploads.append(Upload(f.filename, f.content_type or "", await f.read()))
        try:
            queue_id, sent_id, n = await _send(request, user, draft, uploads)
        except SendFailed as e:
            names = [compose.safe_filename(u.filename) for u in uploads]
            store.drop(user.address, draft.kept)
            draft.kept = store.put(user.address, uploads) if uploads and e.keep else ""
            return _form(request, draft, error=str(e), status=e.status,
                         kept=names if draft.kept else [], dropped=[] if draft.kept else names)
        store.drop(user.address, draft.kept)
    finally:
        await form.close()
    if ctx.log is not None:
        ctx.log.info("webmail_sent", user=user.address, queue_id=queue_id, nrcpt=n)
    return RedirectResponse(f"/msg/{sent_id}/status?sent=1" if sent_id else "/mail/sent", status_code=303)


async def _send(request: Request, user, draft: Draft, uploads: list[Upload]) -> tuple[str, int | None, int]:
    ctx = request.app.state.ctx
    w = ctx.cfg.webmail
    own = own_addresses(ctx, user)
    try:
        if draft.from_addr.casefold() not in {a.casefold() for a in own}:
            raise ComposeError("You can only send from your own address.", "from_addr")
        sender = compose.parse_address(draft.from_addr, "from_addr")
        to = compose.parse_address_list(draft.to, "to")
        cc = compose.parse_address_list(draft.cc, "cc")
        bcc = compose.parse_address_list(draft.bcc, "bcc")
        n = len({r.address.casefold() for r in (*to, *cc, *bcc)})
        if n > w.max_recipients:
            raise ComposeError(f"Too many recipients: {n}; at most {w.max_recipients} per message.", "to")
        _check_local(ctx, (*to, *cc, *bcc))
        if sum(len(u.data) for u in uploads) > w.max_upload:
            raise ComposeError(f"The attachments are too large: at most {w.max_upload / 1048576:.1f} MB "
                               "per message.", "attachments")
        threading, forward_raw = None, None
        if draft.orig:
            if not draft.orig.isdigit() or int(draft.orig) > MAX_ID:
                raise ComposeError("The original message is not available.")
            row = await ctx.spool.get_mailbox_message(user.address, int(draft.orig))
            if row is None or row.get("data") is None:
                raise ComposeError("The original message is not available any more.")
            raw = row["data"]
            threading = await asyncio.to_thread(thread_headers.threading_for, raw,
                                                reply=draft.mode in ("reply", "reply-all"),
                                                fallback_time=row.get("filed_at"))
            if draft.mode == "forward-attachment":
                forward_raw = raw
            elif draft.mode == "forward":
                uploads = uploads + await asyncio.to_thread(_original_attachments, raw)
            if sum(len(u.data) for u in uploads) + len(forward_raw or b"") > w.max_upload:
                raise ComposeError("The message with the forwarded attachments is too large: at most "
                                   f"{w.max_upload / 1048576:.1f} MB per message.", "attachments")
        built = await asyncio.to_thread(
            compose.build_message, sender=sender, to=to, cc=cc, bcc=bcc, subject=draft.subject,
            body=draft.body, attachments=uploads, threading=threading, forward_raw=forward_raw)
    except ComposeError as e:
        raise SendFailed(str(e), 400, keep=e.field != "attachments") from None
    keys = dkim_sign.keys_for(w.dkim, sender.domain)
    try:
        data = await dkim_sign.sign_async(built.data, keys)
    except (dkim_sign.DkimError, ValueError) as e:
        if ctx.log is not None:
            ctx.log.error("dkim_sign_failed", user=user.address, error=str(e))
        raise SendFailed("Sending is unavailable right now (the message could not be signed). "
                         "Your administrator can see why in the gateway log.", 503) from None
    copy = await asyncio.to_thread(_sent_copy, data, sender.address, user.address, _event_id(ctx))
    rec = spool_sent.SentRecord(address=user.address, copy=copy, per_hour=w.max_messages_per_hour,
                                client=audit.client_of(request),
                                user_agent=request.headers.get("user-agent", ""))
    try:
        queue_id, sent_id = await outbound.submit_sent(
            ctx, mail_from=sender.address, rcpts=built.rcpts, data=data,
            smtputf8=built.smtputf8, sent=rec)
    except spool_sent.SendLimitExceeded as e:
        await audit.record(request, "send", result="refused", detail=f"hourly limit {e.limit}")
        raise SendFailed(f"You have sent {e.sent} messages in the last hour, the most allowed. "
                         "Try again later; your message is kept below.", 429) from None
    except Exception as e:
        from spool import SpoolError
        if not isinstance(e, SpoolError):
            raise
        if ctx.log is not None:
            ctx.log.error("webmail_send_spool_failed", user=user.address, error=str(e))
        raise SendFailed("The message could not be stored for sending; try again in a moment.", 503) from None
    return queue_id, sent_id, len(built.rcpts)


def _check_local(ctx, rcpts) -> None:
    """Refuse a recipient in an accepted domain that the directory does not list (intake would
    refuse it with 550 5.1.1; here the user gets to fix it)."""
    directory, enabled = ctx.directory()
    if not enabled:
        return
    from gateway.router import _norm
    accepted = {_norm(d) for d in ctx.cfg.relay.accepted_domains}
    for r in rcpts:
        if r.domain in accepted and directory.lookup(r.address) is None:
            raise ComposeError(f"There is no recipient {r.address} in your organisation.", "to")


def _original_attachments(raw: bytes) -> list[Upload]:
    p = quoting.parse_original(raw)
    out = []
    for a in [a for a in getattr(p, "attachments", []) if not getattr(a, "nested", False)][:MAX_FILES]:
        try:
            att, data = quoting.attachment_bytes(raw, a.index)
        except Exception:
            continue
        out.append(Upload(getattr(att, "filename", "") or "attachment",
                          getattr(att, "content_type", "") or "application/octet-stream", data))
    return out


def _event_id(ctx) -> str:
    """The continuity event on now ('' in normal mode): the Sent copy records it
    (copy_sent_on_recovery copies what was sent during an event)."""
    try:
        state = ctx.continuity() or {}
    except Exception:
        return ""
    return state.get("event_id") or "" if state.get("mode", "normal") != "normal" else ""


def _sent_copy(data: bytes, sender: str, owner: str, event_id: str = ""):
    from gateway.continuity.filing import prepare
    from policies.directory import Directory
    entry = prepare(queue_id="", data=data, envelope_from=sender, rcpts=[owner],
                    directory=Directory.empty(), filtering=False, event_id=event_id)
    return dataclasses.replace(entry, mailboxes={owner: sender}, folder="sent")


# -- delivery status --------------------------------------------------------------------------
def describe(msg, r) -> tuple[str, str]:
    """(state label, detail) of recipient ``r`` (spool.query.Recipient) of queued ``msg``."""
    reply = f"{r.reply_code or ''} {r.reply_text}".strip()
    if r.state is RcptState.DELIVERED:
        return "delivered", f"accepted by {r.remote_host}: {reply}" if r.remote_host else reply
    if r.state is RcptState.BOUNCED:
        return "failed", reply or "delivery failed"
    if msg.state is QueueState.HOLD and msg.hold_reason == "continuity":
        return "held", ("held for Exchange during the continuity event (delivered when it is "
                        "back; colleagues see it in their webmail now)")
    if msg.state is QueueState.HOLD and msg.hold_reason == "drill":
        return "held", "held for a continuity drill (delivered when the drill ends)"
    if msg.state is QueueState.HOLD:
        return "held", "held by the administrator"
    if r.attempts:
        return "retrying", f"attempt {r.attempts} failed: {reply}" if reply else f"{r.attempts} attempt(s) so far"
    return "queued", "waiting for its first delivery attempt"


async def status(request: Request) -> Response:
    ctx = request.app.state.ctx
    user = require_user(request)
    if request.path_params["id"] > MAX_ID:
        raise HTTPException(404)
    res = await ctx.spool.sent_status(user.address, request.path_params["id"])
    if res is None:
        raise HTTPException(404)
    q = res["queue"]
    rows = []
    if q is not None:
        for r in q.recipients:
            label, detail = describe(q, r)
            rows.append({"address": r.address, "state": label, "detail": detail, "attempts": r.attempts})
    return render(request, "status.html", item=res["item"], queue=q, rows=rows,
                  just_sent=request.query_params.get("sent") == "1", now=time.time())


def routes() -> list:
    return [
        Route("/compose", compose_page, methods=["GET", "POST"]),
        Route("/compose/suggest", suggest, methods=["GET"]),
        Route("/msg/{id:int}/reply", reply, methods=["GET"]),
        Route("/msg/{id:int}/reply-all", reply_all, methods=["GET"]),
        Route("/msg/{id:int}/forward", forward, methods=["GET"]),
        Route("/msg/{id:int}/status", status, methods=["GET"]),
    ]
