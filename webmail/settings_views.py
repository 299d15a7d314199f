"""The webmail's settings page: change the password, turn two-step login (TOTP) on or off
(docs/webmail-auth.md). Every POST checks the origin and the session's CSRF token; a change
that needs the current password is rate limited like a login (before any argon2 hash).

States written: webmail_users (password_hash, password_changed_at, totp_secret,
totp_last_step), webmail_sessions (the user's other sessions are revoked on a password change)
and one webmail_audit row per change or failed attempt.
"""
from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from webmail import auth
from webmail.audit import client_of, record
from webmail.auth_views import _form, _limited, _state, _too_many, _user
from webmail.session import check_csrf, require_user
from webmail.templating import render


async def settings_page(request: Request) -> Response:
    user = require_user(request)
    return await _settings(request, user)


async def _settings(request: Request, user, status: int = 200, **values) -> Response:
    ctx = request.app.state.ctx
    row = await ctx.spool.get_user(user.address) or {}
    found = _user(ctx, user.address)
    alt, phone = auth.contacts(row, found[1] if found else None)
    values = {"error": "", "notice": "", "totp_secret": "", "totp_uri": "", **values}
    return render(request, "settings.html", status=status, has_password=bool(row.get("password_hash")),
                  has_totp=bool(row.get("totp_secret")), alt_email=alt, phone=phone, **values)


async def settings_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    user = require_user(request)
    form = await _form(request)
    await check_csrf(request, ctx, form)
    action = form.get("action")
    st = _state(ctx)
    row = await ctx.spool.get_user(user.address) or {}

    async def current_ok() -> bool | None:
        """True if the current password is right (or none is set); None if rate limited."""
        if not row.get("password_hash"):
            return True
        slots = _limited(request, auth.ip_keys("login", client_of(request))
                         + auth.account_keys("login", user.address))
        if slots is None:
            return None
        current = form.get("current")
        ok = await st.hasher.verify(row["password_hash"], current if isinstance(current, str) else "")
        if ok:
            st.limiter.give_back(slots)
        return ok

    if action == "password":
        new, again = form.get("password"), form.get("password2")
        new = new if isinstance(new, str) else ""
        problem = auth.password_problem(new) or (None if new == again else "The two passwords differ.")
        if problem:
            return await _settings(request, user, 400, error=problem)
        ok = await current_ok()
        if ok is None:
            return await _too_many(request, "password_changed", user.address)
        if not ok:
            await record(request, "password_changed", result="failed", detail="wrong current password")
            return await _settings(request, user, 400, error="The current password is wrong.")
        hashed = await st.hasher.hash(new)
        revoked = await ctx.spool.change_password(user.address, password_hash=hashed,
                                                  keep_session_id=user.session_id)
        await record(request, "password_changed", detail=f"other_sessions_revoked={revoked}")
        return await _settings(request, user, notice="Password changed. Your other sessions were logged out.")
    if action == "totp_begin":
        secret = auth.new_totp_secret()
        return await _settings(request, user, totp_secret=secret, totp_uri=auth.totp_uri(secret, user.address))
    if action == "totp_confirm":
        secret = form.get("totp_secret")
        secret = secret.strip().upper() if isinstance(secret, str) and len(secret) <= 64 else ""
        if not secret or any(ch not in "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" for ch in secret):
            return await _settings(request, user, 400, error="Start the set-up again.")
        step = auth.totp_step(secret, form.get("code"), 0)
        if step is None:
            await record(request, "totp_enrolled", result="failed", detail="wrong code")
            return await _settings(request, user, 400, error="That code is not right. Try the current one.",
                                   totp_secret=secret, totp_uri=auth.totp_uri(secret, user.address))
        # the step of the enrolment code is not recorded: logging in right after enrolling,
        # within the same 30 s, must work (replays are refused from the first login on)
        await ctx.spool.update_user(user.address, totp_secret=secret, totp_last_step=0)
        await record(request, "totp_enrolled")
        return await _settings(request, user, notice="Two-step login is on: you will be asked for a code "
                               "from your authenticator app after your password or login code.")
    if action == "totp_disable":
        ok = await current_ok()
        if ok is None:
            return await _too_many(request, "totp_disabled", user.address)
        if not ok:
            await record(request, "totp_disabled", result="failed", detail="wrong current password")
            return await _settings(request, user, 400, error="The current password is wrong.")
        await ctx.spool.update_user(user.address, totp_secret="", totp_last_step=0)
        await record(request, "totp_disabled")
        return await _settings(request, user, notice="Two-step login is off.")
    raise HTTPException(400, "Unknown action.")


ROUTES = [("/settings", settings_page, "GET"), ("/settings", settings_post, "POST")]
