"""One call to append a row to the webmail's append-only audit log (the spool's append_audit
verb) with the request's client address and user agent."""
from __future__ import annotations

from starlette.requests import Request

from spool.account_ops import Actor


def client_of(request: Request) -> str:
    return request.client.host if request.client else ""


async def record(request: Request, action: str, *, address: str | None = None, actor: str | None = None,
                 result: str = "ok", detail: str = "") -> None:
    """Audit ``action`` (login, login_failed, code_issued, code_used, send, download, ...) for
    ``address`` (default: the logged-in user). Never raises: a failed audit write is logged."""
    ctx = request.app.state.ctx
    user = getattr(request.state, "user", None)
    address = address if address is not None else (user.address if user else "")
    actor = actor if actor is not None else address
    ua = request.headers.get("user-agent", "")
    try:
        await ctx.spool.append_audit(action, address=address, actor=actor, result=result,
                                     client=client_of(request), user_agent=ua, detail=detail)
    except Exception:
        if ctx.log is not None:
            ctx.log.exception("audit_failed", action=action)


def actor_of(request: Request, name: str) -> Actor:
    """``name`` (the user, "admin:NAME") with the request's client address and user agent, for
    the spool's audited verbs."""
    return Actor(name, client_of(request), request.headers.get("user-agent", ""))
