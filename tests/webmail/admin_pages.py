"""Helpers for the admin console page tests: a browser page carrying an admin session cookie
(opened in the spool by conftest.open_admin_session until the admin login lands)."""
from __future__ import annotations

from tests.webmail.conftest import open_admin_session


def admin_page(browser, gw, name: str = "root"):
    """(page, cookie): a new browser context and page with admin ``name``'s session cookie
    (``mailgate-admin``, plain HTTP)."""
    cookie = open_admin_session(gw.spool_path, name)
    context = browser.new_context()
    context.add_cookies([{"name": "mailgate-admin", "value": cookie, "url": gw.base,
                          "httpOnly": True, "sameSite": "Strict"}])
    return context.new_page(), cookie


def csp_violations(page) -> list[str]:
    """Start collecting console messages that report a Content-Security-Policy violation."""
    seen: list[str] = []
    page.on("console", lambda m: seen.append(m.text) if "Content Security Policy" in m.text else None)
    return seen
