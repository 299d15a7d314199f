"""HTTP security headers for every webmail response (WEBMAIL-NOTES.md, "Rendering hostile HTML").

App pages get a strict CSP (no inline script or style, nothing from other origins, no framing by
anyone). A view that needs another policy (a message body under ``sandbox``, an attachment) sets
its own ``Content-Security-Policy`` and the middleware leaves it alone. Mail views send
``Cache-Control: no-store``: by default every page does, since nearly every page shows mail.
"""
from __future__ import annotations

APP_CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "connect-src 'self'; frame-src 'self'; form-action 'self'; frame-ancestors 'none'; "
           "base-uri 'none'; object-src 'none'")

#: A message body served from its own URL: no script at all (sandbox without allow-scripts), no
#: fetch but data: images; framed only by our own pages. "show remote images" adds https: to img-src.
BODY_CSP = ("sandbox allow-popups allow-popups-to-escape-sandbox; default-src 'none'; img-src data:; "
            "style-src 'unsafe-inline'; frame-ancestors 'self'; base-uri 'none'; form-action 'none'")
BODY_CSP_REMOTE_IMAGES = BODY_CSP.replace("img-src data:;", "img-src data: https:;")

ATTACHMENT_CSP = "default-src 'none'; sandbox"

COMMON = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cross-origin-opener-policy": "same-origin",
    "cross-origin-resource-policy": "same-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), interest-cohort=()",
}


class SecurityHeaders:
    """ASGI middleware adding COMMON, the app CSP (unless the response set one),
    ``X-Frame-Options: DENY`` (``SAMEORIGIN`` when the response's CSP allows 'self' framing),
    ``Cache-Control: no-store`` (unless set), and HSTS when ``hsts`` (served over HTTPS)."""

    def __init__(self, app, hsts: bool = False):
        self.app, self.hsts = app, hsts

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                have = {k.lower() for k, _ in headers}
                for k, v in COMMON.items():
                    if k.encode() not in have:
                        headers.append((k.encode(), v.encode()))
                csp = next((v for k, v in headers if k.lower() == b"content-security-policy"), None)
                if csp is None:
                    headers.append((b"content-security-policy", APP_CSP.encode()))
                if b"x-frame-options" not in have:
                    same = csp is not None and b"frame-ancestors 'self'" in csp
                    headers.append((b"x-frame-options", b"SAMEORIGIN" if same else b"DENY"))
                if b"cache-control" not in have:
                    headers.append((b"cache-control", b"no-store"))
                if self.hsts:
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
