"""Admin console pages (timeline, queue, users) on bad input and without a session, over HTTP
against a real gateway: clear error pages with the right status and no internals, a redirect
to the admin login without a session, 403 for a POST without the session's CSRF token."""
from __future__ import annotations

from tests.webmail.conftest import Client, csrf_of, open_admin_session, start_webmail


def test_bad_input_and_no_session(peers, tmp_path):
    gw = start_webmail(peers, tmp_path)
    anon = Client(gw.base)
    for path in ("/admin/timeline", "/admin/queue", "/admin/users", "/admin/queue/ABC",
                 "/admin/users/alice@example.com"):
        status, headers, _ = anon.get(path)
        assert status == 303 and headers["location"] == "/admin/login", path
    cl = Client(gw.base)
    cookie = open_admin_session(gw.spool_path, "root")
    cl.cookies["mailgate-admin"] = cookie
    csrf = csrf_of(gw.spool_path, cookie)
    for path, status, text in [("/admin/timeline?range=1y", 400, "Unknown range"),
                               ("/admin/queue?state=bogus", 400, "Unknown queue state"),
                               ("/admin/queue?page=abc", 200, "0 message(s)"),
                               ("/admin/queue/NOPE", 404, "No such message"),
                               ("/admin/queue/bad%20id", 404, "No such message"),
                               ("/admin/queue/NOPE/delete", 404, "No such message"),
                               ("/admin/users/mallory@elsewhere.test", 404, "Not a webmail user"),
                               ("/admin/users/" + "a" * 400, 404, "Not a webmail user"),
                               ("/admin/timeline?range=7d", 200, "last 7 days"),
                               ("/admin/timeline?range=1h", 200, "no continuity state recorded")]:
        got, headers, body = cl.get(path)
        assert got == status and text in body, (path, got, body[:300])
        assert "Traceback" not in body and "sqlite" not in body.lower()
        assert "default-src 'none'" in headers["content-security-policy"]
    assert cl.post("/admin/queue/NOPE/hold", {"csrf": csrf})[0] == 404
    assert cl.post("/admin/queue/NOPE/delete", {"csrf": csrf, "confirm": "yes"})[0] == 404
    assert cl.post("/admin/queue/flush", {"csrf": "wrong"})[0] == 403
    assert cl.post("/admin/users/alice@example.com/disable", {})[0] == 403
    status, headers, _ = cl.post("/admin/queue/flush", {"csrf": csrf})
    assert status == 303 and headers["location"] == "/admin/queue?state=deferred&flushed=0"
