"""The continuity webmail on a shared PostgreSQL spool (issue 9), with two real gateway
processes on one real PostgreSQL, each serving the webmail on its own address (127.0.0.2 and
127.0.0.3, as two hosts behind one name would).

Exchange (a real sink) dies: continuity event, held mail filed into the mailboxes. A user whose
password was set with `mailgate users` (on PostgreSQL) posts the login form node B served to node
A (the form key is the cluster's) over HTTP and sees the held message in her inbox; reads,
searches and flags it on node B; the same session cookie is valid on node B (sessions are rows of the
shared database); she sends from compose on node B (DKIM-signed with the key both nodes are
given): the message is committed to the shared queue and held (an Exchange-bound recipient during
the event), filed into the colleague's mailbox, and her Sent copy is listed by node A with its
delivery status. Exchange comes back: the replay delivers the held message and the sent one once
each, and the Sent item's copy (copy_sent_on_recovery, on both nodes) is queued once for the
cluster; a logout on node B ends the session on node A. The admin console of a node that is not the continuity leader forwards its button's
commands to the leader (and shows the queue, users, timeline of the shared spool). Assertions
are on the database's rows, the sink's messages and the pages' contents."""
from __future__ import annotations

import re
import smtplib
import subprocess
import sys
from collections import Counter
from contextlib import closing
from pathlib import Path

import httpx
import psycopg
import pytest

from tests.conftest import ROOT, config_toml, fast_continuity
from tests.support import postgres as pg
from tests.support.peers import GatewayProc, free_port, wait_for

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(not pg.available(), reason="postgresql-15 not installed")]

DIRECTORY = Path(__file__).resolve().parents[1] / "policies" / "data" / "directory.json"
ERIN, FRANK = "erin@example.org", "frank.miller@example.org"
PASSWORD = "correct horse battery staple"
ADMIN_TOKEN = "pg-webmail-admin-token-0123456789"
PRE = re.compile(r'name="pre" value="([^"]*)"')
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def rows(dsn: str, sql: str, *args):
    with psycopg.connect(dsn, autocommit=True) as conn:
        return conn.execute(sql, args).fetchall()


def mode(dsn: str) -> str | None:
    r = rows(dsn, "SELECT mode FROM continuity_state")
    return r[0][0] if r else None


def dkim_key(tmp_path: Path) -> str:
    """An Ed25519 key written by `mailgate dkim keygen`; its [[webmail.dkim]] table."""
    subprocess.run([sys.executable, "-m", "gateway.cli", "dkim", "keygen", "example.org", "ed1",
                    "--algorithm", "ed25519-sha256", "--dir", str(tmp_path / "keys")],
                   capture_output=True, text=True, cwd=ROOT, check=True)
    [key] = list((tmp_path / "keys").iterdir())
    return (f'[[webmail.dkim]]\ndomain = "example.org"\nselector = "ed1"\nkey_file = "{key}"\n'
            'algorithm = "ed25519-sha256"\n')


def start_node(peers, tmp_path: Path, node: str, host: str, sink_port: int, dsn: str,
               dkim: str = ""):
    """Gateway ``node`` on ``dsn`` with its webmail on ``host``:free port (``.web``) and the
    admin token ADMIN_TOKEN."""
    port, web = free_port(), free_port()
    webmail = (f'[webmail]\nlisten = "{host}:{web}"\ncopy_sent_on_recovery = true\n{dkim}'
               f'[admin]\nlisten = "127.0.0.1:0"\ntoken = "{ADMIN_TOKEN}"\n')
    toml = config_toml(port=port, data_dir=tmp_path / node / "data", accepted=("example.org",),
                       smarthost=f"[127.0.0.1]:{sink_port}", directory=DIRECTORY, continuity=None,
                       minimal_backoff=1.0, maximal_backoff=2.0,
                       extra=fast_continuity(ERIN) + webmail)
    toml = toml.replace('hostname = "gw.test"', f'hostname = "{node}.test"')
    toml += f'[spool]\nbackend = "postgresql"\ndsn = "{dsn}"\nnode = "{node}"\n'
    gw = GatewayProc(tmp_path / node, toml, port)
    peers.procs.append(gw)
    gw.start()
    gw.web = f"http://{host}:{web}"
    wait_for(lambda: _up(gw.web), 20, what=f"{node}'s webmail listening")
    return gw


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def browser(base: str, cookie: str | None = None) -> httpx.Client:
    """A client like a browser's same-origin requests: no redirects followed, Sec-Fetch-Site."""
    return httpx.Client(base_url=base, timeout=30, follow_redirects=False,
                        cookies={"mailgate": cookie} if cookie else None,
                        headers={"Sec-Fetch-Site": "same-origin", "User-Agent": "mailgate-tests/1"})


def subjects_at(sink) -> Counter:
    return Counter(m.group(1).decode() for _env, data in sink.messages()
                   if (m := re.search(rb"(?m)^Subject: (.*?)\r?$", data)))


def test_webmail_on_two_nodes_shares_sessions_mailboxes_queue_and_sent(peers, tmp_path, pg_dsn):
    dsn = pg_dsn
    sink = peers.sink(name="exchange")
    dkim = dkim_key(tmp_path)
    a = start_node(peers, tmp_path, "gw1", "127.0.0.2", sink.port, dsn, dkim)
    wait_for(lambda: rows(dsn, "SELECT holder FROM leases WHERE name='continuity'") == [("gw1",)],
             20, what="gw1 leads")       # held mail goes to the leader: it holds from the start
    b = start_node(peers, tmp_path, "gw2", "127.0.0.3", sink.port, dsn, dkim)

    # the account is set up with the CLI, on PostgreSQL (no spool.db of its own)
    r = subprocess.run([sys.executable, "-m", "gateway.cli", "--config", str(a.config), "users",
                        "set-password", ERIN], input=PASSWORD + "\n", capture_output=True,
                       text=True, cwd=ROOT, timeout=60)
    assert r.returncode == 0, r.stderr
    assert rows(dsn, "SELECT password_hash LIKE '$argon2id$%%' FROM webmail_users WHERE address=%s",
                ERIN) == [(True,)]
    assert not (tmp_path / "gw1" / "data" / "spool.db").exists()

    sink.stop()                                                  # Exchange dies
    wait_for(lambda: mode(dsn) == "continuity", 30, interval=0.1, what="continuity")
    with smtplib.SMTP("127.0.0.1", a.port, timeout=30) as c:
        c.sendmail("partner@remote.test", [ERIN], b"From: Partner <partner@remote.test>\r\n"
                   b"Subject: Contract for signature\r\nMessage-ID: <contract.1@remote.test>\r\n"
                   b"\r\nPlease sign by Friday.\r\n")
    wait_for(lambda: rows(dsn, "SELECT count(*) FROM mailbox_messages WHERE mailbox=%s AND"
                               " subject='Contract for signature'", ERIN) == [(1,)], 30,
             what="the held message filed")
    assert rows(dsn, "SELECT state FROM messages") == [("hold",)]

    # a login form served by node B is accepted by node A (the form key is the cluster's:
    # a balancer need not be sticky); the inbox lists the held message
    with browser(b.web) as wb:
        pre = PRE.search(wb.get("/login").text).group(1)
        pre_cookie = wb.cookies["mailgate-pre"]
    assert rows(dsn, "SELECT name, length(value) FROM webmail_secrets") == [("webmail-pre", 32)]
    with browser(a.web) as wa:
        wa.cookies.set("mailgate-pre", pre_cookie)
        r = wa.post("/login", data={"pre": pre, "address": ERIN, "password": PASSWORD})
        assert (r.status_code, r.headers["location"]) == (303, "/mail/inbox"), r.text[:500]
        cookie = wa.cookies["mailgate"]
        inbox = wa.get("/mail/inbox")
        assert inbox.status_code == 200 and "Contract for signature" in inbox.text
        assert "Continuity event" in inbox.text
    [(sessions, node)] = rows(dsn, "SELECT count(*), min(a.node) FROM webmail_sessions s"
                                   " JOIN webmail_audit a ON a.address = s.address AND a.action='login'"
                                   " WHERE s.address=%s AND NOT s.revoked", ERIN)
    assert (sessions, node) == (1, "gw1")

    [(mid, held_qid)] = rows(dsn, "SELECT id, queue_id FROM mailbox_messages WHERE mailbox=%s", ERIN)

    # the same cookie on node B: the same session, the same mailbox (read, searched, flagged)
    with browser(b.web, cookie) as wb:
        inbox = wb.get("/mail/inbox")
        assert inbox.status_code == 200 and "Contract for signature" in inbox.text
        assert "Contract for signature" in wb.get("/mail/search", params={"q": "sign friday"}).text
        page = wb.get(f"/msg/{mid}")
        assert page.status_code == 200 and "Contract for signature" in page.text
        assert "Please sign by Friday." in wb.get(f"/msg/{mid}/body").text
        assert wb.get(f"/msg/{mid}/raw").content.endswith(b"Please sign by Friday.\r\n")
        assert rows(dsn, "SELECT seen FROM mailbox_messages WHERE id=%s", mid) == [(True,)]
        r = wb.post(f"/msg/{mid}/flags", data={"csrf": CSRF.search(page.text).group(1),
                                                "action": "unseen"})
        assert r.status_code == 303
        assert rows(dsn, "SELECT seen FROM mailbox_messages WHERE id=%s", mid) == [(False,)]
        csrf = CSRF.search(wb.get("/compose").text).group(1)
        r = wb.post("/compose", data={
            "csrf": csrf, "from_addr": ERIN, "to": "Frank <frank.miller@example.org>", "cc": "",
            "bcc": "", "subject": "Signed from node B", "body": "Signed, see attached. Erin",
            "mode": "new", "orig": ""}, files={"attachments": ("", b"")})
        assert r.status_code == 303, r.text[:800]
        sent_id = int(re.fullmatch(r"/msg/(\d+)/status\?sent=1", r.headers["location"]).group(1))

    # state: queued in the shared queue by gw2, held (Exchange-bound during the event), filed
    # into frank's mailbox, erin's Sent row with the same queue ID, the send audited by gw2
    def sent_row():
        return rows(dsn, "SELECT queue_id, node, state, hold_reason FROM messages"
                         " WHERE mail_from=%s", ERIN)
    wait_for(lambda: [r[2:] for r in sent_row()] == [("hold", "continuity")], 30,
             what="the sent message held")      # claimed first, then held by the router
    [(qid, node, _, _)] = sent_row()
    assert node == "gw2"
    assert rows(dsn, "SELECT mailbox, folder FROM mailbox_messages WHERE queue_id=%s ORDER BY folder",
                qid) == [(FRANK, "inbox"), (ERIN, "sent")]
    assert rows(dsn, "SELECT id FROM mailbox_messages WHERE queue_id=%s AND folder='sent'",
                qid) == [(sent_id,)]
    assert rows(dsn, "SELECT node, result FROM webmail_audit WHERE address=%s AND action='send'",
                ERIN) == [("gw2", "ok")]

    # node A lists the Sent item and shows its delivery status from the shared queue
    with browser(a.web, cookie) as wa:
        sent = wa.get("/mail/sent")
        assert sent.status_code == 200 and "Signed from node B" in sent.text
        status = wa.get(f"/msg/{sent_id}/status")
        assert status.status_code == 200 and FRANK in status.text and "held" in status.text

    sink.start()                                                 # Exchange is back: the replay
    wait_for(lambda: mode(dsn) == "normal", 60, what="the end of the event")
    wait_for(lambda: subjects_at(sink)["Signed from node B"] == 2, 60,
             what="the sent message and its Sent copy at Exchange")
    wait_for(lambda: subjects_at(sink)["Contract for signature"] == 1, 30, what="the replay")
    assert rows(dsn, "SELECT state FROM messages WHERE queue_id=%s", qid) == [("delivered",)]
    assert rows(dsn, "SELECT count(*) FROM webmail_sent_copies WHERE sent_id=%s", sent_id) == [(1,)]
    by_rcpt = Counter((tuple(env["rcpt_tos"]), b"X-Mailgate-Sent-Copy:" in data,
                       b"DKIM-Signature:" in data and b"d=example.org" in data)
                      for env, data in sink.messages() if b"Signed from node B" in data)
    assert by_rcpt == Counter({((FRANK,), False, True): 1, ((ERIN,), True, True): 1})
    with browser(a.web, cookie) as wa:                           # delivered, as node A sees it
        assert "delivered" in wa.get(f"/msg/{sent_id}/status").text
    with browser(b.web, cookie) as wb:                           # logout on B ends it on A too
        csrf = CSRF.search(wb.get("/mail/inbox").text).group(1)
        assert wb.post("/logout", data={"csrf": csrf}).status_code == 303
    with browser(a.web, cookie) as wa:
        r = wa.get("/mail/inbox")
        assert (r.status_code, r.headers["location"]) == (303, "/login")
    assert rows(dsn, "SELECT count(*) FROM webmail_sessions WHERE address=%s AND NOT revoked",
                ERIN) == [(0,)]


def admin_session(base: str) -> httpx.Client:
    """A console client of ``base`` logged in with the admin token."""
    c = browser(base)
    pre = PRE.search(c.get("/admin/login/token").text).group(1)
    r = c.post("/admin/login/token", data={"pre": pre, "token": ADMIN_TOKEN, "next": "/admin"})
    assert r.status_code == 303 and "mailgate-admin" in c.cookies, r.text[:500]
    return c


def post_action(c: httpx.Client, path: str, **form) -> httpx.Response:
    csrf = CSRF.search(c.get(path).text).group(1)
    return c.post(path, data={"csrf": csrf, **form})


def test_the_console_of_a_follower_node_forwards_its_commands_to_the_leader(peers, tmp_path, pg_dsn):
    dsn = pg_dsn
    sink = peers.sink(name="exchange")
    leader = start_node(peers, tmp_path, "gw1", "127.0.0.2", sink.port, dsn)
    wait_for(lambda: rows(dsn, "SELECT holder FROM leases WHERE name='continuity'") == [("gw1",)],
             20, what="gw1 leads")
    follower = start_node(peers, tmp_path, "gw2", "127.0.0.3", sink.port, dsn)

    with closing(admin_session(follower.web)) as c:          # the admin session opened on the follower
        r = post_action(c, "/admin/stop")             # nothing to end: the leader's refusal
        assert r.status_code == 409 and "The gateway refused" in r.text
        r = post_action(c, "/admin/start", reason="planned test from gw2")
        assert (r.status_code, r.headers.get("location")) == (303, "/admin"), r.text[:500]
        assert rows(dsn, "SELECT mode, origin, node FROM continuity_state") == \
            [("continuity", "admin", "gw1")]            # applied and written by the leader
        refused, ok = [r[0] for r in rows(dsn, "SELECT result FROM continuity_commands ORDER BY id")]
        assert refused.startswith("refused: ") and ok == "ok: continuity"
        assert rows(dsn, "SELECT actor, node FROM continuity_audit WHERE dst='continuity'") == \
            [("admin:token", "gw1")]

        with smtplib.SMTP("127.0.0.1", follower.port, timeout=30) as s:
            s.sendmail("partner@remote.test", [ERIN], b"Subject: During the planned event\r\n\r\nhi\r\n")
        wait_for(lambda: rows(dsn, "SELECT count(*) FROM messages WHERE state='hold'") == [(1,)], 30,
                 what="the message held")
        [(qid,)] = rows(dsn, "SELECT queue_id FROM messages WHERE state='hold'")
        for path in ("/admin/status.json", "/admin/timeline", "/admin/users",
                     f"/admin/users/{ERIN}", f"/admin/queue/{qid}"):
            assert c.get(path).status_code == 200, path
        assert '<dd id="state">hold (continuity hold)</dd>' in c.get(f"/admin/queue/{qid}").text
        status = c.get("/admin/")
        assert '<span id="st-mode">continuity</span>' in status.text
        assert '<dd id="st-held">1</dd>' in status.text
        assert qid in c.get("/admin/queue", params={"state": "hold"}).text

        r = post_action(c, "/admin/stop")
        assert r.status_code == 303, r.text[:500]
    wait_for(lambda: subjects_at(sink)["During the planned event"] == 1, 60, what="the replay")
    wait_for(lambda: mode(dsn) == "normal", 60, what="normal again")
    audit = rows(dsn, "SELECT result, node FROM webmail_audit WHERE action='admin_command' ORDER BY id")
    assert audit == [("refused", "gw2"), ("ok", "gw2"), ("ok", "gw2")]
    assert rows(dsn, "SELECT count(*) FROM continuity_commands WHERE done_at IS NULL") == [(0,)]
