"""Login routes of the webmail: password, one-time code, admin-issued link, enrolment, TOTP,
logout (the settings page is webmail.settings_views) (docs/webmail-auth.md). Decisions live in
webmail.auth; state in the spool's account verbs (spool.accounts_verbs).

Every POST here checks the origin (Sec-Fetch-Site / Origin) first. Before a session exists the
forms carry a pre-session token (a signed double-submit cookie, webmail.auth.pre_token); after,
the session's synchronizer token (webmail.session.check_csrf). Rate limits are taken before any
argon2 hash; a hash is computed for unknown users too (against a dummy). A successful login
always makes a new session id: nothing the client brought is promoted.

States written: webmail_sessions (create at login, revoke at logout / password change),
webmail_tokens (codes, links, pending second factor), webmail_users (password, TOTP), and one
webmail_audit row per login attempt, code, link, password and TOTP change.
"""
from __future__ import annotations

import secrets
import time
from dataclasses import dataclass, field

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from webmail import auth
from webmail.audit import client_of, record
from webmail.session import check_csrf, clear_session_cookie, require_user, same_origin, set_session_cookie
from webmail.templating import render

PRE_MAX_AGE = 12 * 3600.0     # seconds a login form stays usable
WRONG = "Wrong address or password."
CODE_SENT = ("If the address is registered, a code was sent to its alternate address or phone. "
             "It is valid for {minutes} minutes.")
CODE_WRONG = "The code is wrong, used or expired. Ask for a new one if needed."
LINK_GONE = "This link was already used or has expired. Ask your administrator for a new one."


@dataclass
class AuthState:
    """Per-process login state in ``ctx.extra["auth"]``: the argon2 hasher, the login rate
    limiter (counts of this process), the pre-login form key (``ctx.form_secret``, the spool's
    shared one, else random) and the background tasks."""

    hasher: auth.Hasher
    limiter: auth.RateLimiter = field(default_factory=auth.RateLimiter)
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32))
    tasks: set = field(default_factory=set)


def _state(ctx) -> AuthState:
    st = ctx.extra.get("auth")
    if st is None:
        st = ctx.extra["auth"] = AuthState(auth.Hasher(ctx.cfg.webmail.max_concurrent_hashes))
        if getattr(ctx, "form_secret", b""):      # shared by every node (WebmailContext)
            st.secret = ctx.form_secret
    return st


def _cookie(ctx, what: str) -> str:
    return f"__Host-mailgate-{what}" if ctx.secure else f"mailgate-{what}"


def _set_cookie(response: Response, ctx, what: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(_cookie(ctx, what), value, path="/", secure=ctx.secure, httponly=True,
                        samesite="strict", max_age=max_age)


def _drop_cookie(response: Response, ctx, what: str) -> None:
    response.delete_cookie(_cookie(ctx, what), path="/", secure=ctx.secure, httponly=True,
                           samesite="strict")


# -- the pre-session token ----------------------------------------------------------------------
def _pre_cookie(request: Request, ctx) -> tuple[str, bool]:
    """(pre-session cookie value, whether it is new). The value is "ISSUED.RANDOM"."""
    value = request.cookies.get(_cookie(ctx, "pre"), "")
    if _pre_age(value) is not None:
        return value, False
    return f"{int(time.time())}.{secrets.token_urlsafe(18)}", True


def _pre_age(value: str) -> float | None:
    issued, _, rest = value.partition(".")
    if not issued.isdigit() or not rest or len(value) > 100:
        return None
    age = time.time() - int(issued)
    return age if -60 <= age <= PRE_MAX_AGE else None


def _page(request: Request, template: str, status: int = 200, **values) -> Response:
    """A pre-login page with its form token (and the pre-session cookie if new)."""
    ctx = request.app.state.ctx
    value, new = _pre_cookie(request, ctx)
    response = render(request, template, status=status, pre=auth.pre_token(_state(ctx).secret, value),
                      **values)
    if new:
        _set_cookie(response, ctx, "pre", value, max_age=int(PRE_MAX_AGE))
    return response


async def _form(request: Request):
    try:
        return await request.form(max_files=0, max_fields=20, max_part_size=16 * 1024)
    except Exception:
        raise HTTPException(400, "The form could not be read.") from None


async def _pre_checked_form(request: Request, pre_cookie: str = "pre"):
    """The form of a pre-login POST after the origin and pre-session token checks (403);
    ``pre_cookie``: which pre-session cookie (``pre`` for the webmail, ``admin-pre`` for the
    admin console's login, webmail.admin.login)."""
    ctx = request.app.state.ctx
    if not same_origin(request, ctx):
        raise HTTPException(403, "cross-site request refused")
    form = await _form(request)
    cookie = request.cookies.get(_cookie(ctx, pre_cookie))
    if cookie is None or _pre_age(cookie) is None or not auth.pre_ok(_state(ctx).secret, cookie,
                                                                     form.get("pre")):
        raise HTTPException(403, "The login form expired: reload the page and try again.")
    return form


def _closed(request: Request) -> Response | None:
    ctx = request.app.state.ctx
    try:
        state = ctx.continuity()
    except Exception:
        state = None
    if auth.open_now(ctx.cfg, state):
        return None
    return render(request, "login_closed.html", status=503)


def _limited(request: Request, keys) -> list | None:
    return _state(request.app.state.ctx).limiter.take(keys)


async def _too_many(request: Request, action: str, address: str) -> Response:
    await record(request, action, address=address, result="rate_limited")
    return render(request, "login_limited.html", status=429, headers={"Retry-After": "60"})


def _user(ctx, key: str | None):
    directory, filtering = ctx.directory()
    return auth.resolve_user(ctx.cfg, directory, filtering, key)


# -- after the first factor ---------------------------------------------------------------------
async def _logged_in(request: Request, address: str, method: str, mfa: bool = False) -> Response:
    """Open a fresh session for ``address`` (revoking the one the request carried, if any)."""
    ctx = request.app.state.ctx
    old = request.state.user
    client, ua = client_of(request), request.headers.get("user-agent", "")

    sid, _ = await ctx.spool.create_session(
        address, lifetime=ctx.cfg.webmail.session_absolute, client=client, user_agent=ua, mfa=mfa,
        replacing=old.session_id if old is not None else None)
    await record(request, "login", address=address, actor=address, detail=f"method={method}")
    response = RedirectResponse("/mail/inbox", status_code=303)
    set_session_cookie(response, ctx, sid)
    _drop_cookie(response, ctx, "pre")
    _drop_cookie(response, ctx, "mfa")
    return response


async def _first_factor_done(request: Request, address: str, method: str) -> Response:
    """Log in, or, if the account has TOTP, ask for it first (a pending-login token)."""
    ctx = request.app.state.ctx
    row = await ctx.spool.get_user(address)
    if not (row or {}).get("totp_secret"):
        return await _logged_in(request, address, method)
    token = await ctx.spool.issue_token(address, "mfa", ttl=auth.MFA_TTL, detail=method)
    response = RedirectResponse("/login/totp", status_code=303)
    _set_cookie(response, ctx, "mfa", token, max_age=int(auth.MFA_TTL))
    return response


# -- password -----------------------------------------------------------------------------------
async def login_page(request: Request) -> Response:
    if request.state.user is not None:
        return RedirectResponse("/mail/inbox", status_code=303)
    return _closed(request) or _page(request, "login.html", address="", error="")


async def _address_form(request: Request, template: str, **values):
    """The pre-checked form of a login step that starts from a typed address: (form, mailbox key
    or None, the address as shown back, a response that ends the request or None): the closed
    page (``available = "during_events"`` outside an event) or 400 for an unusable address."""
    form = await _pre_checked_form(request)
    closed = _closed(request)
    if closed is not None:
        return form, None, "", closed
    typed = form.get("address")
    key = auth.clean_address(typed)
    shown = typed.strip()[:auth.MAX_ADDRESS] if isinstance(typed, str) else ""
    if key is None:
        return form, None, shown, _page(request, template, status=400, address=shown, **values,
                                        error="Enter your full e-mail address, like name@example.com.")
    return form, key, shown, None


async def login_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form, key, shown, refused = await _address_form(request, "login.html")
    if refused is not None:
        return refused
    password = form.get("password")
    password = password if isinstance(password, str) else ""
    st = _state(ctx)
    slots = _limited(request, auth.ip_keys("login", client_of(request)) + auth.account_keys("login", key))
    if slots is None:
        return await _too_many(request, "login", key)
    found = _user(ctx, key)
    address = found[0] if found else key
    row = await ctx.spool.get_user(address) if found else None
    stored = row["password_hash"] if row and not row["disabled"] else ""
    if len(password) > auth.MAX_PASSWORD:
        stored, password = "", password[:auth.MAX_PASSWORD]
    ok = await st.hasher.verify(stored, password)
    if not ok:
        why = ("unknown_user" if not (found and row) else "disabled" if row["disabled"]
               else "no_password" if not row["password_hash"] else "wrong_password")
        await record(request, "login", address=address, actor=address, result="failed",
                     detail=f"method=password {why}")
        return _page(request, "login.html", status=401, address=shown, error=WRONG)
    st.limiter.give_back(slots)
    return await _first_factor_done(request, address, "password")


async def logout(request: Request) -> Response:
    ctx = request.app.state.ctx
    user = require_user(request)
    form = await _form(request)
    await check_csrf(request, ctx, form)
    await ctx.spool.revoke_session(user.session_id)
    await record(request, "logout")
    response = RedirectResponse("/login", status_code=303)
    clear_session_cookie(response, ctx)
    return response


# -- admin-issued link --------------------------------------------------------------------------
async def link_page(request: Request) -> Response:
    ctx = request.app.state.ctx
    closed = _closed(request)
    if closed is not None:
        return closed
    token = request.path_params["token"]
    row = await ctx.spool.peek_token(token, "link") if len(token) < 100 else None
    if row is None:
        return render(request, "login_link.html", status=410, error=LINK_GONE, address="", pre="")
    return _page(request, "login_link.html", address=row["address"], error="")


async def link_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    await _pre_checked_form(request)
    closed = _closed(request)
    if closed is not None:
        return closed
    st = _state(ctx)
    slots = _limited(request, auth.ip_keys("login", client_of(request)))
    if slots is None:
        return await _too_many(request, "login_link_used", "")
    token = request.path_params["token"]
    row = await ctx.spool.use_token(token, "link") if len(token) < 100 else None
    user = await ctx.spool.get_user(row["address"]) if row else None
    if row is None or user is None or user["disabled"]:
        await record(request, "login_link_used", address=row["address"] if row else "",
                     actor=row["address"] if row else "", result="refused" if row else "failed")
        return render(request, "login_link.html", status=410, error=LINK_GONE, address="", pre="")
    await record(request, "login_link_used", address=row["address"], actor=row["address"])
    st.limiter.give_back(slots)
    return await _first_factor_done(request, row["address"], "link")


# -- enrolment (the user sets a password) -------------------------------------------------------
async def enrol_page(request: Request) -> Response:
    ctx = request.app.state.ctx
    token = request.path_params["token"]
    row = await ctx.spool.peek_token(token, "enrol") if len(token) < 100 else None
    if row is None:
        return render(request, "enrol.html", status=410, error=LINK_GONE, address="", pre="", done=False)
    return _page(request, "enrol.html", address=row["address"], error="", done=False)


async def enrol_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form = await _pre_checked_form(request)
    st = _state(ctx)
    token = request.path_params["token"]
    slots = _limited(request, auth.ip_keys("login", client_of(request)))
    if slots is None:
        return await _too_many(request, "password_set", "")
    row = await ctx.spool.peek_token(token, "enrol") if len(token) < 100 else None
    if row is None:
        return render(request, "enrol.html", status=410, error=LINK_GONE, address="", pre="", done=False)
    st.limiter.give_back(slots)
    address = row["address"]
    new, again = form.get("password"), form.get("password2")
    new = new if isinstance(new, str) else ""
    problem = auth.password_problem(new) or (None if new == again else "The two passwords differ.")
    if problem:
        return _page(request, "enrol.html", status=400, address=address, error=problem, done=False)
    hashed = await st.hasher.hash(new)

    if not await ctx.spool.enrol_user(token, password_hash=hashed):
        return render(request, "enrol.html", status=410, error=LINK_GONE, address="", pre="", done=False)
    await record(request, "password_set", address=address, actor=address, detail="enrolment link")
    if _closed(request) is not None:
        return render(request, "enrol.html", address=address, error="", pre="", done=True)
    return await _first_factor_done(request, address, "enrolment")


# -- second factor ------------------------------------------------------------------------------
async def totp_page(request: Request) -> Response:
    ctx = request.app.state.ctx
    token = request.cookies.get(_cookie(ctx, "mfa"), "")
    row = await ctx.spool.peek_token(token, "mfa") if 0 < len(token) < 100 else None
    if row is None:
        return RedirectResponse("/login", status_code=303)
    return _page(request, "login_totp.html", error="")


async def totp_post(request: Request) -> Response:
    ctx = request.app.state.ctx
    form = await _pre_checked_form(request)
    st = _state(ctx)
    token = request.cookies.get(_cookie(ctx, "mfa"), "")
    row = await ctx.spool.peek_token(token, "mfa") if 0 < len(token) < 100 else None
    if row is None:
        return RedirectResponse("/login", status_code=303)
    address = row["address"]
    slots = _limited(request, auth.ip_keys("login", client_of(request)) + auth.account_keys("login", address))
    if slots is None:
        return await _too_many(request, "login", address)
    user = await ctx.spool.get_user(address)
    step = auth.totp_step(user["totp_secret"], form.get("code"), user["totp_last_step"]) if user else None
    if user is not None and not user["disabled"] and step is not None \
            and await ctx.spool.accept_totp_login(token, step):
        st.limiter.give_back(slots)
        return await _logged_in(request, address, f"{row['detail']}+totp", mfa=True)
    tries = await ctx.spool.count_token_try(token, "mfa", max_tries=auth.MFA_TRIES)
    await record(request, "login", address=address, actor=address, result="failed",
                 detail=f"method={row['detail']}+totp")
    if tries >= auth.MFA_TRIES:
        return RedirectResponse("/login", status_code=303)
    return _page(request, "login_totp.html", status=401, error="That code is not right. Try the current one.")


def _busy_page(request: Request) -> Response:
    return render(request, "error.html", status=503, headers={"Retry-After": "30"},
                  status_code=503, message="The login service is busy. Try again in a minute.")


def _guarded(endpoint, busy=_busy_page):
    """``endpoint`` answering ``busy(request)`` (a 503 page with Retry-After) when the argon2
    hash queue is full (webmail.auth.Busy); the admin console's login passes its own page."""
    import functools

    @functools.wraps(endpoint)
    async def run(request: Request) -> Response:
        try:
            return await endpoint(request)
        except auth.Busy:
            return busy(request)
    return run


ROUTES = [
    ("/login", login_page, "GET"), ("/login", login_post, "POST"), ("/logout", logout, "POST"),
    ("/login/link/{token}", link_page, "GET"), ("/login/link/{token}", link_post, "POST"),
    ("/login/totp", totp_page, "GET"), ("/login/totp", totp_post, "POST"),
    ("/enrol/{token}", enrol_page, "GET"), ("/enrol/{token}", enrol_post, "POST"),
]


def routes() -> list:
    from webmail import login_code_views, settings_views
    return [Route(path, _guarded(endpoint), methods=[method])
            for path, endpoint, method in ROUTES + login_code_views.ROUTES + settings_views.ROUTES]
