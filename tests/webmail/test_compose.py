"""Sending from the webmail, end to end: a real gateway, real sinks for "the internet" (reached by
MX through a real dnsmasq) and for Exchange, real chromium. What the sinks received is the proof:
From and MAIL FROM are the user's, both DKIM signatures verify on the bytes the sink got, header
input never becomes a header, replies thread (In-Reply-To, References, Thread-Index child block),
local recipients are held and filed during a continuity event; limits and the admin switch
refuse with nothing queued; cross-site posts are refused; suggestions stay in the user's tenant."""
from __future__ import annotations

import email
import email.policy
import json
import re
import sqlite3
import subprocess
import sys
import time

import httpx
import pytest

from spool import db as spool_db
from spool import mailbox as spool_mailbox
from tests.conftest import ROOT, fast_continuity
from tests.support.dnsserver import DnsServer
from tests.support.peers import wait_for
from tests.webmail.conftest import Recorder, browser_page, open_session, start_webmail
from tests.webmail.test_dkim import dnsfunc_for, parse_output, verify_all

DIRECTORY = {
    "mailboxes": [
        {"address": "alice@example.org", "aliases": ["alice@example.net", "a.smith@example.org"]},
        "bob@example.org", "bea@example.net",
        "zed@other.test", "zoe@other.test", "bonnie@other.test",
    ],
    "groups": [{"address": "board@other.test", "members": ["zed@other.test"]}],
}
ACCEPTED = ("example.org", "example.net", "other.test")


class World:
    """Sinks, DNS with MX + DKIM records, keys, and a gateway serving the webmail."""

    def __init__(self, peers, tmp_path, webmail_toml: str = "", continuity: bool = False):
        self.internet = peers.sink(name="internet")
        self.exchange = peers.sink(name="exchange")
        records, keys = {}, []
        for sel, alg in (("rsa1", "rsa-sha256"), ("ed1", "ed25519-sha256")):
            out = subprocess.run([sys.executable, "-m", "gateway.cli", "dkim", "keygen", "example.org",
                                  sel, "--algorithm", alg, "--dir", str(tmp_path / "keys")],
                                 capture_output=True, text=True, cwd=ROOT, check=True).stdout
            name, strings, toml = parse_output(out)
            records[name] = "".join(strings)   # dnsserver splits it into 255-byte strings again
            keys.append(toml)
        self.dns = DnsServer(mx={"ext.test": [(10, "mx.ext.test")]}, a={"mx.ext.test": "127.0.0.1"},
                             txt=records).start()
        self.dnsfunc = dnsfunc_for(self.dns.port)
        d = tmp_path / "directory.json"
        d.write_text(json.dumps(DIRECTORY))
        dkim_toml = "".join(
            f'\n[[webmail.dkim]]\ndomain = "{k["domain"]}"\nselector = "{k["selector"]}"\n'
            f'key_file = "{k["key_file"]}"\nalgorithm = "{k["algorithm"]}"\n' for k in keys)
        kw = {"continuity": None, "extra": fast_continuity("canary@example.org")} if continuity else {}
        self.gw = start_webmail(peers, tmp_path, accepted=ACCEPTED, directory=d,
                                smarthost=f"[127.0.0.1]:{self.exchange.port}", dns_port=self.dns.port,
                                mx_port=self.internet.port, webmail_toml=webmail_toml + dkim_toml, **kw)
        self.base = self.gw.base

    def stop(self):
        self.dns.stop()

    def client(self, address: str) -> "Client":
        return Client(self, open_session(self.gw.spool_path, address))

    def db(self, sql: str, *args):
        conn = sqlite3.connect(self.gw.spool_path)
        try:
            return conn.execute(sql, args).fetchall()
        finally:
            conn.close()

    def queued(self) -> int:
        return self.db("SELECT count(*) FROM messages")[0][0]


class Client:
    """A logged-in user over plain HTTP (same-origin posts carry Sec-Fetch-Site like a browser)."""

    def __init__(self, world: World, cookie: str):
        self.world, self.cookie = world, cookie
        self.http = httpx.Client(base_url=world.base, cookies={"mailgate": cookie}, timeout=30,
                                 follow_redirects=False)

    def csrf(self) -> str:
        return re.search(r'name="csrf" value="([^"]+)"', self.http.get("/compose").text).group(1)

    def send(self, *, site: str = "same-origin", files=None, csrf: str | None = None, **fields):
        data = {"csrf": self.csrf() if csrf is None else csrf, "from_addr": "alice@example.org",
                "to": "", "cc": "", "bcc": "", "subject": "", "body": "", "mode": "new", "orig": "",
                **fields}
        return self.http.post("/compose", data=data, files=files or {"attachments": ("", b"")},
                              headers={"Sec-Fetch-Site": site})

    def raw_multipart(self, fields: dict, files: list[tuple[str, str, bytes]]):
        """POST /compose with a hand-made multipart body: file names and types go on the wire
        byte for byte (httpx would percent-encode control characters)."""
        b = "----mailgatetestboundary"
        parts = [f'--{b}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                 for k, v in fields.items()]
        parts += [(f'--{b}\r\nContent-Disposition: form-data; name="attachments"; filename="{name}"\r\n'
                   f"Content-Type: {ctype}\r\n\r\n").encode() + data + b"\r\n"
                  for name, ctype, data in files]
        body = b"".join(parts) + f"--{b}--\r\n".encode()
        return self.http.post("/compose", content=body, headers={
            "Sec-Fetch-Site": "same-origin", "Content-Type": f"multipart/form-data; boundary={b}"})


@pytest.fixture
def world(peers, tmp_path):
    w = World(peers, tmp_path)
    yield w
    w.stop()


def wait_delivered(sink, n=1, timeout=20):
    wait_for(lambda: sink.count() >= n, timeout, what=f"{n} message(s) at {sink.name}")
    return sink.messages()


def file_original(world: World, owner: str, raw: bytes, queue_id: str = "ORIGINAL0000001") -> int:
    """An inbound message in ``owner``'s continuity mailbox (as filing would put it)."""
    return file_originals(world, owner, [(queue_id, raw)])[0]


def file_originals(world: World, owner: str, items: list[tuple[str, bytes]]) -> list[int]:
    """[(queue ID, bytes)] filed in one transaction; their mailbox ids, in order."""
    from gateway.continuity.filing import prepare
    from policies.directory import Directory
    entries = [prepare(queue_id=q, data=raw, envelope_from="partner@ext.test", rcpts=[owner],
                       directory=Directory.empty(), filtering=False) for q, raw in items]
    conn = spool_db.connect(world.gw.spool_path)
    try:
        spool_db.transaction(conn, lambda: [spool_mailbox.file_message(conn, e) for e in entries])
        return [conn.execute("SELECT id FROM mailbox_messages WHERE queue_id=?", (q,)).fetchone()[0]
                for q, _raw in items]
    finally:
        conn.close()


def test_compose_in_the_browser_reaches_the_internet_signed_and_the_colleague(world, browser):
    cookie = open_session(world.gw.spool_path, "alice@example.org")
    page = browser_page(browser, world.gw, cookie)
    rec = Recorder(page, world.base)
    page.goto(world.base + "/compose")
    # suggestions (plain JS filling a <datalist>, same origin): the colleague, not other tenants
    page.type("#cc", "bo", delay=50)
    page.wait_for_selector("#suggest-cc option", state="attached", timeout=5000)
    options = page.eval_on_selector_all("#suggest-cc option", "os => os.map(o => o.value)")
    assert options == ["bob@example.org"]
    page.fill("#cc", "")
    page.fill("#to", "Partner <partner@ext.test>, bob@example.org")
    page.fill("#subject", "Quarterly figures – draft")
    page.fill("#body", "Hello,\nthe figures are attached.\n\nAlice\n")
    page.set_input_files("#attachments", files=[
        {"name": "figures.csv", "mimeType": "text/csv", "buffer": b"q,revenue\n1,100\n"}])
    page.click("#send")
    page.wait_for_url(re.compile(r".*/msg/\d+/status\?sent=1$"), timeout=20000)
    assert "queued for sending" in page.content()

    (env, data), = wait_delivered(world.internet)
    assert env["mail_from"] == "alice@example.org" and env["rcpt_tos"] == ["partner@ext.test"]
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert msg["From"].addresses[0].addr_spec == "alice@example.org"
    assert msg["Subject"] == "Quarterly figures – draft"
    assert msg["Message-ID"].endswith("@example.org>")
    assert [p.get_filename() for p in msg.iter_attachments()] == ["figures.csv"]
    assert verify_all(data, world.dnsfunc) == [True, True]           # RSA and Ed25519, at the sink
    assert b"a=ed25519-sha256" in b"".join(data.split())

    (env2, data2), = wait_delivered(world.exchange)
    assert env2["mail_from"] == "alice@example.org" and env2["rcpt_tos"] == ["bob@example.org"]
    assert data2 == data                                                # the same signed bytes

    sent = world.db("SELECT id, queue_id, folder, subject FROM mailbox_messages WHERE mailbox=?",
                    "alice@example.org")
    assert len(sent) == 1 and sent[0][2] == "sent" and sent[0][3] == "Quarterly figures – draft"
    audit = world.db("SELECT detail FROM webmail_audit WHERE action='send' AND result='ok'")
    assert audit == [(f"queue_id={sent[0][1]} rcpts=2",)]

    def states():
        page.goto(f"{world.base}/msg/{sent[0][0]}/status")
        return {r.get_attribute("data-address"): r.get_attribute("data-state")
                for r in page.query_selector_all("#recipients tr[data-address]")}
    wait_for(lambda: states() == {"partner@ext.test": "delivered", "bob@example.org": "delivered"},
             15, what="both recipients delivered on the status page")
    assert not rec.foreign and not rec.dialogs
    # another user cannot see alice's status page
    other = world.client("bob@example.org")
    assert other.http.get(f"/msg/{sent[0][0]}/status").status_code == 404
    page.context.close()


def test_header_input_never_creates_a_header(world):
    alice = world.client("alice@example.org")
    for fields in ({"to": "partner@ext.test\r\nBcc: victim@ext.test", "subject": "x"},
                   {"to": "partner@ext.test", "subject": "hello\r\nBcc: victim@ext.test"},
                   {"to": "partner@ext.test", "subject": "hello\nX-Injected: 1"},
                   {"to": "\"Evil\r\nX-Injected: 1\" <partner@ext.test>", "subject": "x"},
                   {"to": "partner@ext.test", "cc": "a@ext.test\x00", "subject": "x"},
                   {"to": "partner@ext.test", "subject": "bell\x07"},
                   # encoded-words Python's header classes would decode into a line break
                   {"to": "partner@ext.test", "subject": "=?utf-8?q?hi=0D=0ABcc:_victim@ext.test?="},
                   {"to": '"=?utf-8?q?x=0D=0ABcc:_victim@ext.test?=" <partner@ext.test>', "subject": "x"}):
        r = alice.send(body="text", **fields)
        assert r.status_code == 400, fields
        assert "control character" in r.text or "read as encoded text" in r.text, fields
        assert "victim@ext.test" not in r.text or "Bcc" in r.text   # the draft is shown again
    assert world.queued() == 0

    # attachment names and types are cleaned, never a header
    r = alice.raw_multipart(
        {"csrf": alice.csrf(), "from_addr": "alice@example.org", "to": "partner@ext.test",
         "subject": "names", "body": "see attached", "mode": "new", "orig": ""},
        [("evil\x0bBcc: victim@ext.test\x1b\x85.txt", "text/plain\x0bX-Injected: 1", b"one"),
         ("../../\u202egnp.exe\x07", "application/x-msdownload", b"two"),
         ("=?utf-8?q?a=0D=0AX-Injected:_1?=.txt", "text/plain", b"three")])
    assert r.status_code == 303, r.text
    (env, data), = wait_delivered(world.internet)
    assert env["rcpt_tos"] == ["partner@ext.test"]
    assert b"victim" not in data.split(b"\r\n\r\n", 1)[0]
    assert not re.search(rb"^(Bcc|X-Injected):", data, re.M | re.I)
    msg = email.message_from_bytes(data, policy=email.policy.default)
    names = [p.get_filename() for p in msg.iter_attachments()]
    assert names == ["evil Bcc: victim@ext.test .txt", "gnp.exe", "= ?utf-8?q?a=0D=0AX-Injected:_1?=.txt"]
    # a CR LF inside a part's header ends that header line: the form is refused as a whole
    r = alice.raw_multipart({"csrf": alice.csrf(), "to": "partner@ext.test", "subject": "x"},
                            [("a\r\nBcc: victim@ext.test\r\n.txt", "text/plain", b"x")])
    assert r.status_code == 400 and world.queued() == 1
    assert [p.get_content_type() for p in msg.iter_attachments()] == [
        "application/octet-stream", "application/x-msdownload", "text/plain"]
    assert verify_all(data, world.dnsfunc) == [True, True]


def test_non_ascii_addresses_use_smtputf8_and_names_are_encoded(world):
    alice = world.client("alice@example.org")
    r = alice.send(to='"José Ñúñez" <josé@ext.test>', subject="Grüße", body="Schöne Grüße\n")
    assert r.status_code == 303, r.text
    (env, data), = wait_delivered(world.internet)
    assert env["rcpt_tos"] == ["josé@ext.test"] and "SMTPUTF8" in [o.upper() for o in env["mail_options"]]
    msg = email.message_from_string(data.decode("utf-8"), policy=email.policy.default)   # RFC 6532
    assert msg["To"].addresses[0].addr_spec == "josé@ext.test"
    assert msg["Subject"] == "Grüße"
    assert verify_all(data, world.dnsfunc) == [True, True]
    r = alice.send(to='"Ann Ä" <ann@ext.test>', subject="Grüße", body="x")
    (env, data) = wait_delivered(world.internet, 2)[1]
    assert "SMTPUTF8" not in [o.upper() for o in env["mail_options"]]
    assert data.split(b"\r\n\r\n", 1)[0].isascii()          # RFC 2047 encoded-words, not raw UTF-8
    assert b"=?utf-8?" in data


def test_limits_the_admin_switch_and_cross_site_posts(peers, tmp_path):
    w = World(peers, tmp_path, webmail_toml="max_recipients = 3\nmax_messages_per_hour = 2\n"
                                                 "max_upload = 4096\n")
    try:
        alice = w.client("alice@example.org")
        r = alice.send(to="a@ext.test, b@ext.test", cc="c@ext.test", bcc="d@ext.test",
                       subject="too many", body="keep this text")
        assert r.status_code == 400 and "Too many recipients: 4; at most 3" in r.text
        assert "keep this text" in r.text and 'value="too many"' in r.text   # the draft is kept
        assert w.queued() == 0

        r = alice.send(to="partner@ext.test", subject="big", body="keep this too",
                       files={"attachments": ("big.bin", b"x" * 5000, "application/octet-stream")})
        assert r.status_code == 400 and "too large" in r.text and "keep this too" in r.text
        assert "big.bin" in r.text                                  # named, to choose again
        r = alice.send(to="partner@ext.test", subject="huge", body="y",
                       files={"attachments": ("huge.bin", b"x" * (9 * 1024 * 1024), "application/octet-stream")})
        assert r.status_code == 413 and "too large" in r.text
        r = alice.send(to="nobody@example.org", subject="x", body="y")
        assert r.status_code == 400 and "no recipient nobody@example.org" in r.text
        r = alice.send(from_addr="bob@example.org", to="partner@ext.test", subject="x", body="y")
        assert r.status_code == 400 and "your own address" in r.text
        assert w.queued() == 0

        # cross-site and token-less posts: refused, nothing queued
        assert alice.send(site="cross-site", to="partner@ext.test", subject="x", body="y").status_code == 403
        assert alice.send(csrf="wrong", to="partner@ext.test", subject="x", body="y").status_code == 403
        r = alice.http.post("/compose", data={"to": "partner@ext.test", "csrf": alice.csrf()},
                            headers={"Origin": "https://evil.test"})
        assert r.status_code == 403
        assert w.queued() == 0

        # an alias of one's own may be the sender
        assert alice.send(from_addr="alice@example.net", to="partner@ext.test", subject="1",
                          body="y").status_code == 303
        assert alice.send(to="partner@ext.test", subject="2", body="y").status_code == 303
        r = alice.send(to="partner@ext.test", subject="3", body="keep me")
        assert r.status_code == 429 and "last hour" in r.text and "keep me" in r.text
        assert w.queued() == 2
        envs = [e for e, _d in wait_delivered(w.internet, 2)]
        assert sorted(e["mail_from"] for e in envs) == ["alice@example.net", "alice@example.org"]
        assert w.db("SELECT count(*) FROM webmail_audit WHERE action='send' AND result='refused'")[0][0] == 1
    finally:
        w.stop()

    off = World(peers, tmp_path / "off", webmail_toml="sending = false\n")
    try:
        alice = off.client("alice@example.org")
        page = alice.http.get("/compose").text
        assert 'id="sending-off"' in page and 'id="send" disabled' in page
        r = alice.send(to="partner@ext.test", subject="x", body="y")
        assert r.status_code == 403 and "turned off" in r.text
        assert off.queued() == 0
    finally:
        off.stop()


def test_a_failed_send_keeps_its_attachments_for_the_next_try(world):
    alice, bob = world.client("alice@example.org"), world.client("bob@example.org")
    r = alice.send(to="partner@ext.test, nobody@example.org", subject="plan", body="keep this text",
                   files={"attachments": ("plan.txt", b"the plan", "text/plain")})
    assert r.status_code == 400 and "no recipient nobody@example.org" in r.text
    assert "keep this text" in r.text and re.search(r'id="kept">[^<]*plan.txt', r.text)
    assert world.queued() == 0
    kept = re.search(r'name="kept" value="([^"]+)"', r.text).group(1)
    # the token is bound to its user: bob's message carries nothing of alice's
    assert bob.send(from_addr="bob@example.org", to="other@ext.test", subject="t", body="b",
                    kept=kept).status_code == 303
    r = alice.send(to="partner@ext.test", subject="plan", body="keep this text", kept=kept)
    assert r.status_code == 303, r.text
    got = {tuple(e["rcpt_tos"]): d for e, d in wait_delivered(world.internet, 2)}

    def names(data):
        return [p.get_filename() for p in email.message_from_bytes(
            data, policy=email.policy.default).iter_attachments()]
    assert names(got[("partner@ext.test",)]) == ["plan.txt"]
    assert names(got[("other@ext.test",)]) == []
    # sent once: the token is spent
    r = alice.send(to="partner@ext.test", subject="again", body="x", kept=kept)
    assert r.status_code == 303
    assert names(wait_delivered(world.internet, 3)[2][1]) == []


def test_suggestions_stay_in_the_users_tenant(world):
    alice, zed = world.client("alice@example.org"), world.client("zed@other.test")

    def suggest(c, q):
        r = c.http.get("/compose/suggest", params={"q": q})
        assert r.status_code == 200
        return [x["address"] for x in r.json()]
    assert sorted(suggest(alice, "b")) == ["bea@example.net", "bob@example.org"]  # not bonnie/board
    assert suggest(alice, "z") == []
    assert suggest(alice, "other.test") == []
    assert "alice@example.org" in suggest(alice, "smith")                    # alias → primary
    assert sorted(suggest(zed, "b")) == ["board@other.test", "bonnie@other.test"]
    assert suggest(zed, "example") == []
    r = httpx.get(world.base + "/compose/suggest?q=b", follow_redirects=False)
    assert r.status_code == 303                                                 # not logged in


def test_local_colleague_is_held_and_filed_during_an_event(peers, tmp_path):
    """... and with copy_sent_on_recovery, after the event the sender's own Exchange mailbox gets
    one copy of what they sent during it (and none of what they sent outside it)."""
    w = World(peers, tmp_path, continuity=True, webmail_toml="copy_sent_on_recovery = true\n")
    try:
        alice = w.client("alice@example.org")
        assert alice.send(to="partner@ext.test", subject="before", body="x").status_code == 303
        wait_delivered(w.internet)
        assert w.gw.gw.cli("continuity", "start", "--reason", "test").stdout.strip() == "ok: continuity"
        assert alice.send(to="bob@example.org, partner@ext.test", subject="During the outage",
                          body="can you read this?").status_code == 303
        wait_delivered(w.internet, 2)
        wait_for(lambda: w.db("SELECT state FROM messages WHERE queue_id=(SELECT queue_id FROM"
                              " mailbox_messages WHERE subject='During the outage' AND folder='sent')"
                              )[0][0] == "hold", 15, what="held")
        rows = w.db("SELECT mailbox, folder FROM mailbox_messages WHERE subject='During the outage'"
                    " ORDER BY mailbox")
        assert rows == [("alice@example.org", "sent"), ("bob@example.org", "inbox")]
        sent_id = w.db("SELECT id FROM mailbox_messages WHERE folder='sent' AND subject='During the outage'")[0][0]
        page = alice.http.get(f"/msg/{sent_id}/status").text
        assert re.search(r'data-address="bob@example.org" data-state="held"', page)
        assert re.search(r'data-address="partner@ext.test" data-state="delivered"', page)
        assert w.exchange.count() == 0
        w.gw.gw.cli("continuity", "stop")
        got = wait_delivered(w.exchange, 2, timeout=40)
        by_rcpt = {tuple(env["rcpt_tos"]): data for env, data in got}
        assert set(by_rcpt) == {("bob@example.org",), ("alice@example.org",)}
        assert verify_all(by_rcpt[("bob@example.org",)], w.dnsfunc) == [True, True]
        copy = by_rcpt[("alice@example.org",)]
        assert copy.startswith(b"X-Mailgate-Sent-Copy: ") and b"Subject: During the outage" in copy
        assert copy.split(b"\r\n", 1)[1] == by_rcpt[("bob@example.org",)]   # the sent bytes
        time.sleep(7)                      # more looks of the copier: still one copy, none of "before"
        assert w.exchange.count() == 2
    finally:
        w.stop()
