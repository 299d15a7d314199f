"""Login by one-time code (docs/webmail-auth.md): the user asks for a code, which goes to the
directory's alternate address through our own outbound queue (never to an accepted domain) or
by SMS (apprise); then types it. Codes are 8 digits, single use, ``login_code_ttl`` seconds,
``login_code_tries`` tries. The answer is the same whether or not the address is registered.

States written: webmail_tokens (the code's hash), the outbound queue (the code's message), and
webmail_audit rows (code_issued, code_used, login_failed).
"""
from __future__ import annotations

import asyncio

from starlette.requests import Request
from starlette.responses import Response

from webmail import auth, outbound
from webmail.audit import client_of, record
from webmail.auth_views import (CODE_SENT, CODE_WRONG, _address_form, _closed, _first_factor_done,
                                _limited, _page, _state, _too_many, _user)


async def code_page(request: Request) -> Response:
    return _closed(request) or _page(request, "login_code.html", step="ask", address="", error="",
                                     notice="")


async def code_post(request: Request) -> Response:
    form, key, shown, refused = await _address_form(request, "login_code.html", step="ask", notice="")
    if refused is not None:
        return refused
    if form.get("action") == "send":
        return await _send_code(request, key, shown)
    return await _enter_code(request, key, shown, form.get("code"))


async def _send_code(request: Request, key: str, shown: str) -> Response:
    ctx = request.app.state.ctx
    st = _state(ctx)
    slots = _limited(request, auth.ip_keys("code_send", client_of(request))
                     + auth.account_keys("code_send", key, auth.CODE_SEND_LIMITS))
    if slots is None:
        return await _too_many(request, "login_code_issued", key)
    # the same answer, at the same time, whoever asks: the work happens after the reply
    task = asyncio.get_running_loop().create_task(_deliver_code(request, key))
    st.tasks.add(task)
    task.add_done_callback(st.tasks.discard)
    minutes = max(1, int(ctx.cfg.webmail.login_code_ttl // 60))
    return _page(request, "login_code.html", step="enter", address=shown, error="",
                 notice=CODE_SENT.format(minutes=minutes))


async def _deliver_code(request: Request, key: str) -> None:
    """Issue a code for the user named by ``key`` and send it to their alternate address
    (our own outbound delivery) and phone (apprise); audit what happened. Never raises."""
    ctx = request.app.state.ctx
    w = ctx.cfg.webmail
    try:
        found = _user(ctx, key)
        address = found[0] if found else key
        row = await ctx.spool.get_user(address) if found else None
        if found is None or (row and row["disabled"]):
            await record(request, "login_code_issued", address=address, actor=address,
                         result="refused", detail="unknown_user" if found is None else "disabled")
            return
        directory, _ = ctx.directory()
        alt, phone = auth.contacts(row, found[1])
        alt = alt if alt and auth.is_outside(ctx.cfg, directory, alt) else ""
        phone = auth.normalize_phone(phone) if phone and w.sms_url else None
        if not alt and not phone:
            await record(request, "login_code_issued", address=address, actor=address,
                         result="no_contact")
            return
        code = auth.new_code()
        await ctx.spool.issue_code(address, code, ttl=w.login_code_ttl)
        if alt:
            sender, data = auth.code_message(user=address, to=alt, code=code, ttl=w.login_code_ttl,
                                             url=ctx.public_url, client=client_of(request))
            qid = await outbound.submit(ctx, mail_from=sender, rcpts=[alt], data=data,
                                        smtputf8=any(ord(ch) > 127 for ch in alt + sender))
            await record(request, "login_code_issued", address=address, actor=address,
                         detail=f"channel=email to={alt} queue_id={qid}")
        if phone:
            sent = await auth.send_sms(w.sms_url, phone, auth.sms_text(code, w.login_code_ttl))
            await record(request, "login_code_issued", address=address, actor=address,
                         result="ok" if sent else "error", detail=f"channel=sms to={phone}")
    except Exception:
        if ctx.log is not None:
            ctx.log.exception("login_code_failed", address=key)
        await record(request, "login_code_issued", address=key, actor=key, result="error")


async def _enter_code(request: Request, key: str, shown: str, typed) -> Response:
    ctx = request.app.state.ctx
    st = _state(ctx)
    slots = _limited(request, auth.ip_keys("login", client_of(request)) + auth.account_keys("login", key))
    if slots is None:
        return await _too_many(request, "login_code_used", key)
    code = auth.clean_code(typed) or ""
    found = _user(ctx, key)
    address = found[0] if found else key
    row = await ctx.spool.get_user(address) if found else None
    outcome = "none"
    if found is not None:
        outcome = await ctx.spool.use_code(address, code, max_tries=ctx.cfg.webmail.login_code_tries)
    if outcome == "ok" and row is not None and not row["disabled"]:
        await record(request, "login_code_used", address=address, actor=address)
        st.limiter.give_back(slots)
        return await _first_factor_done(request, address, "code")
    await record(request, "login_code_used", address=address, actor=address,
                 result="disabled" if outcome == "ok" else outcome)
    return _page(request, "login_code.html", status=401, step="enter", address=shown,
                 error=CODE_WRONG, notice="")


ROUTES = [("/login/code", code_page, "GET"), ("/login/code", code_post, "POST")]
