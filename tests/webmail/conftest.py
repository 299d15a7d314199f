"""Fixtures for webmail tests: a real gateway process serving the webmail, a session for a user
opened in its spool (for tests of what a logged-in user sees; the login flows have their own
tests), and a real browser (Debian's chromium driven by Playwright) that records every request
and every dialog.

    gw = start_webmail(peers, tmp_path, extra_toml="...")   # .base, .spool_path, .gw
    cookie = open_session(gw.spool_path, "alice@example.com")
    page = browser_page(browser, gw, cookie)                 # a page with the cookie set
    rec = Recorder(page, gw.base)                            # foreign requests, dialogs
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from spool import accounts
from spool import db as spool_db
from tests.conftest import config_toml
from tests.support.peers import GatewayProc, free_port, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-default-apps", "--disable-extensions"]


@dataclass
class WebmailGateway:
    gw: GatewayProc
    base: str            # http://127.0.0.1:PORT
    spool_path: Path
    smtp_port: int


def start_webmail(peers, tmp_path: Path, *, accepted=("example.com",), directory: Path | None = None,
                  smarthost: str = "[127.0.0.1]:9", webmail_toml: str = "", extra: str = "",
                  name: str = "gw", **kw) -> WebmailGateway:
    """A gateway process with the webmail on a free port (``webmail_toml``: more [webmail] keys;
    ``extra``: more TOML tables; ``kw``: config_toml arguments)."""
    port, web = free_port(), free_port()
    data = tmp_path / f"{name}-data"
    toml = config_toml(port=port, data_dir=data, smarthost=smarthost, accepted=accepted,
                       directory=directory, extra=f"\n[webmail]\nlisten = \"127.0.0.1:{web}\"\n"
                       f"{webmail_toml}\n{extra}", **kw)
    gw = peers.gateway(toml, port, name=name)
    base = f"http://127.0.0.1:{web}"
    wait_for(lambda: _http_ok(base + "/healthz"), 20, what="webmail listening")
    return WebmailGateway(gw, base, data / "spool.db", port)


def _http_ok(url: str) -> bool:
    import urllib.request
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def open_session(spool_path: Path, address: str, lifetime: float = 3600.0) -> str:
    """Open a webmail session for ``address`` directly in the spool (creating the account);
    returns the cookie value."""
    conn = spool_db.connect(spool_path)
    try:
        def tx():
            accounts.ensure_user(conn, address)
            return accounts.create_session(conn, address, lifetime=lifetime)[0]
        return spool_db.transaction(conn, tx)
    finally:
        conn.close()


def open_admin_session(spool_path: Path, name: str = "root", lifetime: float = 3600.0) -> str:
    """Open an admin console session for admin ``name`` directly in the spool (creating the
    admin, with the second factor counted as given); returns the value of the admin cookie
    (``mailgate-admin`` over plain HTTP, webmail.admin.session)."""
    from spool import admins
    conn = spool_db.connect(spool_path)
    try:
        def tx():
            admins.ensure_admin(conn, name)
            return accounts.create_session(conn, admins.session_address(name), lifetime=lifetime,
                                           mfa=True)[0]
        return spool_db.transaction(conn, tx)
    finally:
        conn.close()


@pytest.fixture(scope="module")
def browser():
    """One headless Debian chromium per test module (Playwright's sync API). The sync API runs
    its own event loop while it is open: a module that uses this fixture must not also hold
    async tests (pytest-asyncio would find a running loop); the loop ends at module teardown."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


def browser_page(browser, gw: WebmailGateway, cookie: str | None = None):
    """A new context and page; with ``cookie`` the webmail session cookie is set."""
    context = browser.new_context()
    if cookie is not None:
        context.add_cookies([{"name": "mailgate", "value": cookie, "url": gw.base,
                              "httpOnly": True, "sameSite": "Strict"}])
    return context.new_page()


class Recorder:
    """Records every request the page makes and every dialog it opens: ``foreign`` lists
    requests to any origin other than ``base`` (aborted, never sent), ``dialogs`` the messages
    of alert/confirm/prompt (dismissed)."""

    def __init__(self, page, base: str):
        self.page, self.origin = page, urlsplit(base).netloc
        self.requests: list[str] = []
        self.foreign: list[str] = []
        self.dialogs: list[str] = []
        page.route("**/*", self._route)
        page.on("dialog", self._dialog)

    def _route(self, route):
        url = route.request.url
        self.requests.append(url)
        u = urlsplit(url)
        if u.scheme in ("data", "blob", "about") or u.netloc == self.origin:
            route.continue_()
        else:
            self.foreign.append(url)
            route.abort()

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()


def settle(page, seconds: float = 0.3) -> None:
    """Let pending loads, timers and animations run briefly."""
    page.wait_for_load_state("load")
    time.sleep(seconds)


__all__ = ["start_webmail", "open_session", "browser_page", "Recorder", "settle", "WebmailGateway",
           "free_port"]


# -- auth: a cookie-keeping HTTP client, the users CLI, and the spool's login state ---------------
import hashlib as _hashlib
import http.client as _http_client
import re as _re
import sqlite3 as _sqlite3
import subprocess as _subprocess
import sys as _sys
from urllib.parse import urlencode as _urlencode

from tests.conftest import ROOT as _ROOT

PRE_FIELD = _re.compile(r'name="pre" value="([^"]*)"')
CSRF_FIELD = _re.compile(r'name="csrf" value="([^"]*)"')


class Client:
    """A minimal HTTP client for the webmail that keeps cookies, never follows redirects and
    can bind its source address (``source``: another 127.0.0.x, for per-address limits). POSTs
    send ``Sec-Fetch-Site: same-origin`` unless ``headers`` say otherwise, as a browser would."""

    def __init__(self, base: str, source: str | None = None):
        u = urlsplit(base)
        self.host, self.port, self.source = u.hostname, u.port, source
        self.base = base
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, form: dict | None = None, headers: dict | None = None):
        conn = _http_client.HTTPConnection(self.host, self.port, timeout=30,
                                           source_address=(self.source, 0) if self.source else None)
        h = {"User-Agent": "mailgate-tests/1"}
        if self.cookies:
            h["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        body = None
        if form is not None:
            body = _urlencode(form)
            h["Content-Type"] = "application/x-www-form-urlencoded"
            h["Sec-Fetch-Site"] = "same-origin"
        h.update(headers or {})
        h = {k: v for k, v in h.items() if v is not None}
        try:
            conn.request(method, path, body=body, headers=h)
            r = conn.getresponse()
            text = r.read().decode("utf-8", "replace")
            for name, value in r.getheaders():
                if name.lower() == "set-cookie":
                    k, _, rest = value.partition("=")
                    v = rest.split(";", 1)[0].strip('"')
                    if "max-age=0" in value.lower() or 'expires=thu, 01 jan 1970' in value.lower():
                        self.cookies.pop(k, None)
                    else:
                        self.cookies[k] = v
            return r.status, {k.lower(): v for k, v in r.getheaders()}, text
        finally:
            conn.close()

    def get(self, path: str, **kw):
        return self.request("GET", path, **kw)

    def post(self, path: str, form: dict, **kw):
        return self.request("POST", path, form=form, **kw)

    def pre(self, path: str = "/login") -> str:
        """GET ``path`` and return its pre-session form token."""
        status, _, text = self.get(path)
        m = PRE_FIELD.search(text)
        assert m, (status, text[:500])
        return m.group(1)

    def login(self, address: str, password: str, **kw):
        return self.post("/login", {"pre": self.pre(), "address": address, "password": password}, **kw)


def users_cli(gw: WebmailGateway, *args: str, stdin: str | None = None) -> _subprocess.CompletedProcess:
    """`mailgate --config <gw's> users ARGS...` (``stdin`` piped in)."""
    return _subprocess.run([_sys.executable, "-m", "gateway.cli", "--config", str(gw.gw.config),
                            "users", *args], input=stdin, capture_output=True, text=True,
                           cwd=_ROOT, timeout=60)


def set_password(gw: WebmailGateway, address: str, password: str) -> None:
    r = users_cli(gw, "set-password", address, stdin=password + "\n")
    assert r.returncode == 0, r.stderr


def spool_rows(spool_path: Path, sql: str, *params) -> list[dict]:
    """Rows of a read-only query on the gateway's spool."""
    db = _sqlite3.connect(f"file:{spool_path}?mode=ro", uri=True)
    db.row_factory = _sqlite3.Row
    try:
        return [dict(r) for r in db.execute(sql, params)]
    finally:
        db.close()


def session_row(spool_path: Path, cookie: str) -> dict | None:
    rows = spool_rows(spool_path, "SELECT * FROM webmail_sessions WHERE id_hash=?",
                      _hashlib.sha256(cookie.encode()).hexdigest())
    return rows[0] if rows else None


def audit_rows(spool_path: Path, action: str | None = None, address: str | None = None) -> list[dict]:
    sql, params = "SELECT * FROM webmail_audit WHERE 1=1", []
    if action is not None:
        sql, params = sql + " AND action=?", [*params, action]
    if address is not None:
        sql, params = sql + " AND address=?", [*params, address]
    return spool_rows(spool_path, sql + " ORDER BY id", *params)
# -- reader: filing messages straight into a continuity mailbox ----------------------------------
class _NoDirectory:
    """No directory (filtering off): each envelope recipient is its own mailbox."""

    def expand(self, rcpt):
        return []

    def lookup(self, rcpt):
        return None


def file_raw(spool_path: Path, owner: str, raw: bytes, *, folder: str = "inbox",
             queue_id: str | None = None, now: float | None = None, conn=None) -> int:
    """File ``raw`` into ``owner``'s continuity mailbox the way a held message is filed
    (gateway.continuity.filing.prepare, then spool.mailbox.file_message); returns the
    mailbox_messages id. A message prepare() cannot turn into a row (surrogates, nesting) is
    filed with its bytes and a minimal entry, as the webmail must still show it."""
    import uuid

    from gateway.continuity.filing import prepare
    from spool import mailbox
    qid = queue_id or uuid.uuid4().hex[:16].upper()
    own = conn is None
    conn = conn or spool_db.connect(spool_path)
    try:
        try:
            e = prepare(queue_id=qid, data=raw, envelope_from="sender@remote.test", rcpts=[owner],
                        directory=_NoDirectory(), filtering=False)
            e = _replace(e, folder=folder)
            spool_db.transaction(conn, lambda: mailbox.file_message(conn, e, now=now))
        except (RecursionError, UnicodeError, ValueError):
            e = mailbox.FilingEntry(queue_id=qid, data=raw, mailboxes={owner.casefold(): owner},
                                    envelope_from="sender@remote.test", folder=folder)
            spool_db.transaction(conn, lambda: mailbox.file_message(conn, e, now=now))
        return conn.execute("SELECT id FROM mailbox_messages WHERE queue_id=? AND mailbox=? AND folder=?",
                            (qid, owner.casefold(), folder)).fetchone()[0]
    finally:
        if own:
            conn.close()


def _replace(e, **kw):
    import dataclasses
    return dataclasses.replace(e, **kw)


def fetch(url: str, cookie: str | None = None, *, method: str = "GET", data: dict | None = None,
          headers: dict | None = None):
    """(status, headers with lower-case names, body bytes) without following redirects."""
    import urllib.error
    import urllib.parse
    import urllib.request
    h = dict(headers or {})
    if cookie:
        h["Cookie"] = f"mailgate={cookie}"
    body = urllib.parse.urlencode(data).encode() if data is not None else None
    req = urllib.request.Request(url, data=body, headers=h, method=method)

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *a, **k):
            return None
    opener = urllib.request.build_opener(NoRedirect)
    try:
        r = opener.open(req, timeout=30)
        return r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def csrf_of(spool_path: Path, cookie: str) -> str:
    """The synchronizer token of the session with cookie value ``cookie``."""
    import hashlib
    conn = spool_db.connect(spool_path)
    try:
        return conn.execute("SELECT csrf_token FROM webmail_sessions WHERE id_hash=?",
                            (hashlib.sha256(cookie.encode()).hexdigest(),)).fetchone()[0]
    finally:
        conn.close()


__all__ += ["file_raw", "fetch", "csrf_of"]


@dataclass
class Canary:
    """The canary HTTP server process (tests/support/canary.py): ``base`` http://127.0.0.1:PORT;
    ``hits()`` every request it received so far."""

    port: int
    log: Path

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def hits(self) -> list[dict]:
        import json
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]


@pytest.fixture
def canary(tmp_path):
    """A real HTTP server on a loopback port standing for "the internet", counting hits."""
    import socket
    import subprocess
    import sys
    port, log = free_port(), tmp_path / "canary-hits.jsonl"
    p = subprocess.Popen([sys.executable, str(Path(__file__).resolve().parents[1] / "support" / "canary.py"),
                          "--port", str(port), "--log", str(log)])

    def up():
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            return False
    wait_for(up, 10, what="canary listening")
    c = Canary(port, log)
    log.write_text("")
    yield c
    p.terminate()
    p.wait(5)


__all__ += ["Canary", "canary"]
