"""Admin console login (docs/admin-console.md): name + password (argon2id), then a TOTP code,
always; or the gateway's admin token exchanged for a session; enrolment links; logout.

The same rules as the webmail login (webmail.auth_views): every POST checks the origin first and
a pre-session token (before a session) or the session's synchronizer token (after); rate limits
are taken before any argon2 hash, per client address prefix and per typed name; an unknown name,
a disabled or unenrolled admin costs one hash like a known one and gets the same answer (no
enumeration); a login always makes a new session id. A TOTP code is accepted once (the step is
kept in admin_users.totp_last_step). Every attempt is audited (actor ``admin:NAME``).

Routes (relative to /admin): GET/POST /login, GET/POST /login/totp, GET/POST /login/token,
POST /logout, GET/POST /enrol/{token}.
"""
from __future__ import annotations

import hmac

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from spool import admins
from webmail import auth, auth_views
from webmail.admin import login as lg
from webmail.admin.session import (ADMIN_LIFETIME, check_admin_csrf, clear_admin_cookie,
                                   load_admin, set_admin_cookie)
from webmail.audit import client_of, record
from webmail.templating import render_admin

WRONG = "Wrong name or password."
TOKEN_ADMIN = "token"     # the admin name of sessions opened with the [admin] token (reserved)
ENROL_TTL = 86400.0       # seconds an enrolment link printed by `mailgate admins add` is valid
LINK_GONE = "This link was already used or has expired. Ask for a new one."


def _too_many(request: Request, name: str):
    async def go():
        await record(request, "admin_login", address=admins.session_address(name) if name else "",
                     actor=admins.session_address(name) if name else "", result="rate_limited")
        return render_admin(request, "admin/message.html", None, status=429,
                            headers={"Retry-After": "60"}, title="Too many attempts",
                            message="Too many attempts. Wait a few minutes and try again.", back="")
    return go()


async def _open_session(request: Request, name: str, method: str, next_: str) -> Response:
    """A fresh admin session for ``name`` (revoking the one the request carried), the audit row,
    and a redirect to ``next_``."""
    ctx = request.app.state.ctx
    old = await load_admin(request)
    client, ua = client_of(request), request.headers.get("user-agent", "")
    address = admins.session_address(name)
    sid, _ = await ctx.spool.create_session(
        address, lifetime=ADMIN_LIFETIME, client=client, user_agent=ua, mfa=True,
        replacing=old.session_id if old is not None else None)
    await record(request, "admin_login", address=address, actor=address, detail=f"method={method}")
    response = RedirectResponse(lg.safe_next(next_), status_code=303)
    set_admin_cookie(response, ctx, sid)
    lg.drop_cookie(response, ctx, "pre")
    lg.drop_cookie(response, ctx, "mfa")
    return response


# -- name + password ----------------------------------------------------------------------------
async def login_page(request: Request) -> Response:
    next_ = lg.safe_next(request.query_params.get("next"))
    if await load_admin(request) is not None:
        return RedirectResponse(next_, status_code=303)
    return lg.page(request, "admin/login.html", name="", error="", next=next_)


async def login_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form = await lg.pre_checked_form(request)
    next_ = lg.safe_next(form.get("next"))
    typed = form.get("name")
    name = lg.clean_name(typed)
    shown = typed.strip()[:lg.MAX_NAME] if isinstance(typed, str) else ""
    password = form.get("password")
    password = password[:auth.MAX_PASSWORD + 1] if isinstance(password, str) else ""
    st = lg.state(ctx)
    keys = auth.ip_keys(lg.SCOPE, client_of(request)) + auth.account_keys(lg.SCOPE, name or "?")
    slots = lg.limited(ctx, keys)
    if slots is None:
        return await _too_many(request, name or "")
    row = await ctx.spool.get_admin(name) if name else None
    usable = row is not None and not row["disabled"] and row["totp_secret"] and name != TOKEN_ADMIN
    stored = row["password_hash"] if usable else ""
    if len(password) > auth.MAX_PASSWORD:
        stored = ""
    if not await st.hasher.verify(stored, password):
        why = ("unknown" if row is None else "disabled" if row["disabled"]
               else "not_enrolled" if not (row["password_hash"] and row["totp_secret"])
               else "wrong_password")
        address = admins.session_address(name) if name else ""
        await record(request, "admin_login", address=address, actor=address, result="failed",
                     detail=f"method=password {why}")
        return lg.page(request, "admin/login.html", status=401, name=shown, error=WRONG, next=next_)
    st.limiter.give_back(slots)
    address = admins.session_address(name)
    token = await ctx.spool.issue_token(address, "admin_mfa", ttl=auth.MFA_TTL, detail=next_)
    response = RedirectResponse("/admin/login/totp", status_code=303)
    lg.set_cookie(response, ctx, "mfa", token, max_age=int(auth.MFA_TTL))
    return response


# -- the second factor --------------------------------------------------------------------------
async def _pending(request: Request) -> tuple[str, dict | None]:
    ctx = request.app.state.ctx
    token = request.cookies.get(lg.cookie(ctx, "mfa"), "")
    if not 0 < len(token) < 100:
        return token, None
    return token, await ctx.spool.peek_token(token, "admin_mfa")


async def totp_page(request: Request) -> Response:
    _, row = await _pending(request)
    if row is None:
        return RedirectResponse("/admin/login", status_code=303)
    return lg.page(request, "admin/login_totp.html", error="")


async def totp_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form = await lg.pre_checked_form(request)
    token, row = await _pending(request)
    if row is None:
        return RedirectResponse("/admin/login", status_code=303)
    address = row["address"]
    name = admins.name_of(address) or ""
    keys = auth.ip_keys(lg.SCOPE, client_of(request)) + auth.account_keys(lg.SCOPE, name)
    slots = lg.limited(ctx, keys)
    if slots is None:
        return await _too_many(request, name)
    admin = await ctx.spool.get_admin(name)
    step = (auth.totp_step(admin["totp_secret"], form.get("code"), admin["totp_last_step"])
            if admin and not admin["disabled"] else None)
    # guarded: two requests with the same code at once cannot both pass
    if step is not None and await ctx.spool.accept_admin_totp(token, step):
        lg.state(ctx).limiter.give_back(slots)
        return await _open_session(request, name, "password+totp", row["detail"])
    tries = await ctx.spool.count_token_try(token, "admin_mfa", max_tries=auth.MFA_TRIES)
    await record(request, "admin_login", address=address, actor=address, result="failed",
                 detail="method=password+totp wrong_code")
    if tries >= auth.MFA_TRIES:
        return RedirectResponse("/admin/login", status_code=303)
    return lg.page(request, "admin/login_totp.html", status=401,
                   error="That code is not right (or was already used). Try the next one.")


# -- the admin token ----------------------------------------------------------------------------
async def token_page(request: Request) -> Response:
    return lg.page(request, "admin/login_token.html", error="",
                   next=lg.safe_next(request.query_params.get("next")))


async def token_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form = await lg.pre_checked_form(request)
    next_ = lg.safe_next(form.get("next"))
    slots = lg.limited(ctx, auth.ip_keys(lg.SCOPE, client_of(request))
                       + auth.account_keys(lg.SCOPE, TOKEN_ADMIN))
    if slots is None:
        return await _too_many(request, TOKEN_ADMIN)
    given = form.get("token")
    given = given.strip() if isinstance(given, str) else ""
    address = admins.session_address(TOKEN_ADMIN)
    ok = bool(ctx.admin_token) and hmac.compare_digest(given.encode(), ctx.admin_token.encode())
    row = None
    if ok:
        row = await ctx.spool.ensure_admin(TOKEN_ADMIN)
    if not ok or row["disabled"]:
        why = "no_token_configured" if not ctx.admin_token else "disabled" if ok else "wrong_token"
        await record(request, "admin_login", address=address, actor=address, result="failed",
                     detail=f"method=token {why}")
        return lg.page(request, "admin/login_token.html", status=401, next=next_,
                       error="That token is not right (or token login is off).")
    lg.state(ctx).limiter.give_back(slots)
    return await _open_session(request, TOKEN_ADMIN, "token", next_)


# -- logout -------------------------------------------------------------------------------------
async def logout(request: Request) -> Response:
    ctx = request.app.state.ctx
    admin = await check_admin_csrf(request, await lg.read_form(request))
    await ctx.spool.revoke_session(admin.session_id)
    await record(request, "admin_logout", address=admin.actor, actor=admin.actor)
    response = RedirectResponse("/admin/login", status_code=303)
    clear_admin_cookie(response, ctx)
    return response


# -- enrolment ----------------------------------------------------------------------------------
async def _enrol_row(request: Request) -> tuple[str, dict | None]:
    ctx = request.app.state.ctx
    token = request.path_params["token"]
    if not 0 < len(token) < 100:
        return token, None
    return token, await ctx.spool.peek_token(token, "admin_enrol")


def _gone(request: Request) -> Response:
    return render_admin(request, "admin/message.html", None, status=410, title="Link expired",
                        message=LINK_GONE, back="")


async def enrol_page(request: Request) -> Response:
    _, row = await _enrol_row(request)
    if row is None:
        return _gone(request)
    return lg.page(request, "admin/enrol.html", name=admins.name_of(row["address"]), error="")


async def enrol_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form = await lg.pre_checked_form(request)
    slots = lg.limited(ctx, auth.ip_keys(lg.SCOPE, client_of(request)))
    if slots is None:
        return await _too_many(request, "")
    token, row = await _enrol_row(request)
    if row is None:
        return _gone(request)
    lg.state(ctx).limiter.give_back(slots)
    name = admins.name_of(row["address"])
    new, again = form.get("password"), form.get("password2")
    new = new if isinstance(new, str) else ""
    problem = auth.password_problem(new) or (None if new == again else "The two passwords differ.")
    if problem:
        return lg.page(request, "admin/enrol.html", status=400, name=name, error=problem)
    hashed = await lg.state(ctx).hasher.hash(new)
    secret = auth.new_totp_secret()
    if not await ctx.spool.enrol_admin(token, password_hash=hashed, totp_secret=secret):
        return _gone(request)
    await record(request, "admin_enrolled", address=admins.session_address(name),
                 actor=admins.session_address(name), detail="password and TOTP set")
    return render_admin(request, "admin/enrolled.html", None, name=name, totp_secret=secret,
                        totp_uri=auth.totp_uri(secret, name, issuer="mailgate admin"))


def _busy_page(request: Request) -> Response:
    return render_admin(request, "admin/message.html", None, status=503,
                        headers={"Retry-After": "30"}, title="Busy", back="",
                        message="The login service is busy. Try again in a minute.")


def _guarded(endpoint):
    """``endpoint`` answering 503 (a page, Retry-After) when the argon2 queue is full."""
    return auth_views._guarded(endpoint, _busy_page)


ROUTES = [
    ("/login", login_page, "GET"), ("/login", login_post, "POST"),
    ("/login/totp", totp_page, "GET"), ("/login/totp", totp_post, "POST"),
    ("/login/token", token_page, "GET"), ("/login/token", token_post, "POST"),
    ("/logout", logout, "POST"),
    ("/enrol/{token}", enrol_page, "GET"), ("/enrol/{token}", enrol_post, "POST"),
]


def routes() -> list:
    """Routes of this part, relative to /admin."""
    return [Route(path, _guarded(endpoint), methods=[method]) for path, endpoint, method in ROUTES]
