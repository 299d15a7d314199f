"""Admin console: webmail users.

    GET  /admin/users?q=TEXT                       accounts and the directory's mailboxes
    GET  /admin/users/{address}                    one user: account, contacts, audit trail
    POST /admin/users/{address}/disable|enable     (disable revokes sessions and live links)
    GET  /admin/users/{address}/reset-password     the confirmation step; POST confirm=yes
    POST /admin/users/{address}/login-link         a one-time link (enrol=1: sets a password)

The changes are the ones of `mailgate users` (gateway/cli_users.py): the same spool verbs
(spool.accounts_verbs), each one transaction with its webmail_audit row (actor admin:NAME, the
admin's client address and user agent). Resetting a password clears the hash and revokes every session of the
user: they log in again with a login code or an admin-issued link (and may set a new password
in Settings). A user is what webmail.auth.resolve_user says (a directory mailbox; with no
directory, any address in an accepted domain); anything else is 404.
"""
from __future__ import annotations

from urllib.parse import quote

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from webmail import auth
from webmail.admin.login import read_form
from webmail.admin.session import check_admin_csrf, require_admin
from webmail.audit import actor_of
from webmail.templating import render_admin

DONE = {"disabled": "The user is disabled: their sessions and links were revoked.",
        "enabled": "The user is enabled.",
        "reset": "The password was cleared and every session of the user logged out."}


def _user(request: Request) -> str:
    """The account key of the path's address, or HTTPException 404."""
    ctx = request.app.state.ctx
    raw = request.path_params["address"]
    directory, filtering = ctx.directory()
    found = auth.resolve_user(ctx.cfg, directory, filtering, auth.clean_address(raw)) \
        if len(raw) <= 320 else None
    if found is None:
        raise HTTPException(404, "Not a webmail user.")
    return found[0]


def _url(address: str, tail: str = "") -> str:
    return f"/admin/users/{quote(address, safe='@')}{tail}"


async def users_list(request: Request) -> Response:
    admin = await require_admin(request)
    ctx = request.app.state.ctx
    text = request.query_params.get("q", "")[:200].strip().casefold()
    rows = {r["address"]: r for r in await ctx.spool.list_users()}
    directory, filtering = ctx.directory()
    entries = {e.address: e for e in directory.mailboxes()} if filtering else {}
    users = []
    for address in sorted(set(rows) | set(entries)):
        if text and text not in address.casefold():
            continue
        row = rows.get(address)
        alt, phone = auth.contacts(row, entries.get(address))
        users.append({"address": address, "url": _url(address), "account": row is not None,
                      "password": bool(row and row["password_hash"]), "totp": bool(row and row["totp_secret"]),
                      "disabled": bool(row and row["disabled"]), "alt": alt, "phone": phone})
    return render_admin(request, "admin/users.html", admin, users=users, q=text)


async def _user_page(request: Request, admin, address: str, status: int = 200, done: str = "",
                     error: str = "", link: str = "", link_kind: str = "") -> Response:
    ctx = request.app.state.ctx
    row = await ctx.spool.get_user(address)
    trail = await ctx.spool.list_audit(address, limit=200)
    directory, filtering = ctx.directory()
    alt, phone = auth.contacts(row, directory.lookup(address) if filtering else None)
    return render_admin(request, "admin/user.html", admin, status=status, address=address,
                        url=_url(address), row=row, alt=alt, phone=phone, trail=trail,
                        done=DONE.get(done, ""), error=error, link=link, link_kind=link_kind,
                        ttl_hours=ctx.cfg.webmail.login_link_ttl / 3600)


async def user_page(request: Request) -> Response:
    admin = await require_admin(request)
    return await _user_page(request, admin, _user(request), done=request.query_params.get("done", ""))


def _set_disabled(disabled: bool):
    async def handler(request: Request) -> Response:
        form = await read_form(request)
        admin = await check_admin_csrf(request, form)
        address = _user(request)
        await request.app.state.ctx.spool.set_user_disabled(address, disabled,
                                                            by=actor_of(request, admin.actor))
        return RedirectResponse(_url(address, f"?done={'disabled' if disabled else 'enabled'}"), status_code=303)
    return handler


async def reset_confirm(request: Request) -> Response:
    admin = await require_admin(request)
    address = _user(request)
    return render_admin(request, "admin/user_reset.html", admin, address=address, url=_url(address))


async def reset_password(request: Request) -> Response:
    form = await read_form(request)
    admin = await check_admin_csrf(request, form)
    address = _user(request)
    if form.get("confirm") != "yes":
        return RedirectResponse(_url(address, "/reset-password"), status_code=303)
    await request.app.state.ctx.spool.set_user_password(
        address, "", by=actor_of(request, admin.actor), action="password_reset")
    return RedirectResponse(_url(address, "?done=reset"), status_code=303)


async def login_link(request: Request) -> Response:
    form = await read_form(request)
    admin = await check_admin_csrf(request, form)
    ctx = request.app.state.ctx
    address = _user(request)
    enrol = form.get("enrol") == "1"
    ttl = ctx.cfg.webmail.login_link_ttl
    token = await ctx.spool.issue_user_link(address, "enrol" if enrol else "link", ttl=ttl,
                                            by=actor_of(request, admin.actor))
    if token is None:
        return await _user_page(request, admin, address, status=409,
                                error="The user is disabled: enable them before issuing a link.")
    link = f"{ctx.public_url}/{'enrol' if enrol else 'login/link'}/{token}"
    return await _user_page(request, admin, address, link=link, link_kind="enrol" if enrol else "login")


def routes() -> list:
    """Routes of this part, relative to /admin."""
    return [
        Route("/users", users_list, methods=["GET"]),
        Route("/users/{address}", user_page, methods=["GET"]),
        Route("/users/{address}/disable", _set_disabled(True), methods=["POST"]),
        Route("/users/{address}/enable", _set_disabled(False), methods=["POST"]),
        Route("/users/{address}/reset-password", reset_confirm, methods=["GET"]),
        Route("/users/{address}/reset-password", reset_password, methods=["POST"]),
        Route("/users/{address}/login-link", login_link, methods=["POST"]),
    ]
