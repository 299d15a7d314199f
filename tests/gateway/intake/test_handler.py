"""The real intake in-process: IntakeServer + IntakeHandler on a free port over a real Spool in
tmp_path, built as gateway/app.py builds them, driven by smtplib (a real SMTP client, run in a
thread so the server keeps running in the test's loop)."""
from __future__ import annotations

import asyncio
import io
import re
import smtplib
import sqlite3

import pytest

from gateway import config as config_mod
from gateway.app import RcptContextSource
from gateway.intake.handler import HOP_LIMIT, IntakeHandler
from gateway.intake.server import IntakeServer
from gateway.logs import make_logger
from policies.directory import DirectoryWatcher
from spool import Spool, SpoolError

QUEUED = re.compile(r"^2\.0\.0 Ok: queued as ([0-9B-Z]{14})$")
SPOOL_ERROR = (451, "4.3.0 Message not queued: temporary storage failure, try again later")
INSUFFICIENT_STORAGE = (452, "4.3.1 Insufficient system storage, try again later")
LOCAL_ERROR = (451, "4.3.0 Local error in processing, try again later")
TOO_MANY_HOPS = (554, "5.4.6 Too many hops (mail loop?)")
NEED_RCPT = (503, "5.5.1 Error: need RCPT command")
NO_AUTH = (502, "5.5.1 AUTH not supported: this is an MX, not a submission server")
RCPT_OK = 250
RAW = (b"From: Alice <alice@remote.test>\r\nTo: bob@example.com\r\nSubject: intake\r\n\r\n"
       b"first line\r\n.a line that starts with a dot\r\n\r\nlast line\r\n")


class Intake:
    def __init__(self, cfg, spool, handler, server, port, log):
        self.cfg, self.spool, self.handler, self.server, self.port = cfg, spool, handler, server, port
        self.log, self.queued = log, []

    def client(self) -> smtplib.SMTP:
        s = smtplib.SMTP("127.0.0.1", self.port, local_hostname="client.remote.test", timeout=20)
        s.ehlo()
        return s

    async def send(self, raw: bytes = RAW, mail_from="alice@remote.test", rcpts=("bob@example.com",)):
        """One transaction; returns (code, text) of the reply to DATA, or of the first failure."""
        def run():
            with self.client() as s:
                code, text = s.mail(mail_from)
                if code != 250:
                    return code, text.decode()
                for r in rcpts:
                    code, text = s.rcpt(r)
                    if code != RCPT_OK:
                        return code, text.decode()
                code, text = s.data(raw)
                return code, text.decode()
        return await asyncio.to_thread(run)


@pytest.fixture
async def make_intake(tmp_path):
    made = []

    async def make(rcpt_context=None) -> Intake:
        cfg = config_mod.parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                                "smtp": {"listen": ["127.0.0.1:0"]},
                                "relay": {"accepted_domains": ["example.com"]}}, "test")
        spool = await Spool.open(cfg.spool_path)
        stream = io.StringIO()
        log = make_logger("info", "kv", stream=stream)
        ctx = rcpt_context or RcptContextSource(cfg, DirectoryWatcher(cfg.directory.file))
        it = Intake(cfg, spool, None, None, 0, stream)
        it.handler = IntakeHandler(cfg, spool, ctx, it.queued.append, log)
        it.server = IntakeServer(cfg, it.handler)
        (_host, it.port), = await it.server.start()
        made.append(it)
        return it

    yield make
    for it in made:
        await it.server.stop()
        await it.spool.close()


async def test_250_after_commit_carries_the_queue_id_and_bytes_are_exact(make_intake):
    it = await make_intake()
    code, text = await it.send()
    assert code == 250, text
    qid = QUEUED.match(text).group(1)
    assert it.queued == [qid]
    m = await it.spool.get(qid, with_data=True)
    assert m.state.value == "incoming" and m.mail_from == "alice@remote.test"
    assert [r.address for r in m.recipients] == ["bob@example.com"]
    assert (m.client_addr, m.client_helo) == ("127.0.0.1", "client.remote.test")
    assert m.data.endswith(RAW)                         # dot-unstuffed: byte for byte as sent
    header = m.data[:-len(RAW)]
    assert header.startswith(b"Received: from client.remote.test ([127.0.0.1])\r\n")
    assert header.count(b"Received:") == 1 and header.endswith(b"\r\n")
    assert f"by gw.test (mailgate) with ESMTP id {qid}\r\n\tfor <bob@example.com>; ".encode() in header
    assert m.size == len(m.data)
    assert f"event='queued' queue_id='{qid}'" in it.log.getvalue()


async def test_null_sender_is_stored_as_empty(make_intake):
    it = await make_intake()
    code, text = await it.send(mail_from="")             # smtplib sends MAIL FROM:<>
    assert code == 250, text
    m = await it.spool.get(QUEUED.match(text).group(1))
    assert m.mail_from == ""


async def test_spool_error_answers_451_never_5xx(make_intake, monkeypatch):
    it = await make_intake()

    async def failing_commit(self, msg):                # the storage boundary fails
        raise SpoolError("spool commit failed: disk I/O error")
    monkeypatch.setattr(Spool, "commit", failing_commit)
    assert await it.send() == SPOOL_ERROR
    assert it.queued == []
    assert "spool_commit_failed" in it.log.getvalue()


async def test_a_full_spool_answers_452_4_3_1(make_intake, monkeypatch):
    """The disk under the spool is full (tests/e2e/test_spool_full.py fills a real one)."""
    it = await make_intake()

    async def full_commit(self, msg):
        raise SpoolError("spool commit failed: database or disk is full", full=True)
    monkeypatch.setattr(Spool, "commit", full_commit)
    assert await it.send() == INSUFFICIENT_STORAGE
    assert it.queued == []


async def test_a_failing_database_write_answers_451_without_internals(make_intake):
    it = await make_intake()
    other = sqlite3.connect(it.cfg.spool_path)          # a real failure inside the INSERT
    other.execute("CREATE TRIGGER no_space BEFORE INSERT ON messages "
                  "BEGIN SELECT RAISE(ABORT, 'secret-internal-detail'); END")
    other.commit()
    code, text = await it.send()
    other.execute("DROP TRIGGER no_space")
    other.commit()
    other.close()
    assert (code, text) == LOCAL_ERROR
    assert it.queued == [] and (await it.spool.counts())["incoming"] == 0
    assert "secret-internal-detail" in it.log.getvalue()      # logged for us, not sent to them
    code, text = await it.send()                               # and the next one is fine
    assert code == 250, text


async def test_exception_in_our_hook_answers_451_without_python_text(make_intake):
    def broken_context():
        raise KeyError("secret-directory-path /etc/mailgate/directory.csv")
    it = await make_intake(rcpt_context=broken_context)
    code, text = await it.send()
    assert (code, text) == LOCAL_ERROR
    assert "KeyError" not in text and "secret" not in text
    assert "KeyError" in it.log.getvalue()


@pytest.mark.parametrize("hops,expected", [(HOP_LIMIT, 250), (HOP_LIMIT + 1, TOO_MANY_HOPS[0])])
async def test_mail_loop(make_intake, hops, expected):
    it = await make_intake()
    trace = b"".join(b"Received: from relay%d.test by relay%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n"
                     % (i, i + 1) for i in range(hops))
    code, text = await it.send(trace + RAW)
    assert code == expected, text
    if expected != 250:
        assert (code, text) == TOO_MANY_HOPS
        assert it.queued == [] and (await it.spool.counts())["incoming"] == 0


async def test_duplicate_recipients_are_stored_once(make_intake):
    it = await make_intake()
    code, text = await it.send(rcpts=("bob@example.com", "carol@example.com", "bob@example.com",
                                      "bob@EXAMPLE.com"))
    assert code == 250, text
    m = await it.spool.get(QUEUED.match(text).group(1), with_data=True)
    assert [r.address for r in m.recipients] == ["bob@example.com", "carol@example.com"]
    assert b"\tfor <" not in m.data                   # two recipients: no `for` in Received:


async def test_session_replies_on_the_wire(make_intake):
    it = await make_intake()

    def run():
        with it.client() as s:
            features = dict(s.esmtp_features)
            s.mail("alice@remote.test")
            no_rcpt = s.docmd("DATA")
            auth = s.docmd("AUTH", "PLAIN AGFAYg==")
            return features, no_rcpt, auth
    features, no_rcpt, auth = await asyncio.to_thread(run)
    assert "enhancedstatuscodes" in features and "pipelining" in features
    assert "auth" not in features
    assert (no_rcpt[0], no_rcpt[1].decode()) == NEED_RCPT
    assert (auth[0], auth[1].decode()) == NO_AUTH
