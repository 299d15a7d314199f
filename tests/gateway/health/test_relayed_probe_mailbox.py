"""A worker's probe mailbox (gateway.health.RelayedProbeMailbox, server.workers > 1): it awaits the
tokens the supervisor's mailbox tracks, consumes with every check of ProbeMailbox (the probe's
envelope, bounces with their Subject, late/unknown/forged, mail to others never, the directory's
``disabled``), and reports only what would resolve an awaited token; the supervisor's mailbox
announces its tokens (on_change, snapshot) and settles a check from a report. Last, the real
intake in-process with a relayed mailbox: consumed (250, nothing spooled), and the return
address still travels alone."""
from __future__ import annotations

import asyncio
import io
import json
import smtplib
from types import SimpleNamespace

import pytest

from gateway import config as config_mod
from gateway.health import ProbeMailbox
from gateway.health.roundtrip_probe import RelayedProbeMailbox
from gateway.intake.directory import RcptContextSource
from gateway.intake.handler import IntakeHandler
from gateway.intake.server import IntakeServer
from gateway.logs import make_logger
from policies.directory import Directory, DirectoryWatcher
from spool import Spool

RETURN = "mailgate-probe@gw.example.net"
T1, T2, T3 = "a" * 32, "b" * 32, "c" * 32


def probe_mail(token: str) -> bytes:
    return (f"From: mailgate probe <{RETURN}>\r\nSubject: mailgate round-trip probe {token}\r\n"
            f"X-Mailgate-Probe: {token}\r\n\r\nAutomatic test message\r\n").encode()


def bounce_of(token: str) -> bytes:
    return (b"From: MAILER-DAEMON@exchange.test\r\nSubject: Undeliverable: mailgate round-trip "
            b"probe " + token.encode() + b"\r\n\r\n--b\r\nX-Mailgate-Probe: " + token.encode()
            + b"\r\n--b--\r\n")


@pytest.fixture
def relayed():
    reports = []
    mb = RelayedProbeMailbox(RETURN, lambda *r: reports.append(r))
    return mb, reports


def env(mail_from=RETURN, rcpt_tos=(RETURN,)):
    return SimpleNamespace(mail_from=mail_from, rcpt_tos=list(rcpt_tos))


def test_a_tracked_token_that_returns_is_reported_ok(relayed):
    mb, reports = relayed
    mb.track(T1)
    c = mb.consume(env(), probe_mail(T1))
    assert (c.outcome, c.token) == ("returned", T1)
    assert reports == [(T1, True, "")]


def test_a_bounce_quoting_a_tracked_token_is_reported_with_its_subject(relayed):
    mb, reports = relayed
    mb.track(T1)
    c = mb.consume(env(mail_from="<>"), bounce_of(T1))
    assert (c.outcome, c.token) == ("bounced", T1)
    assert reports == [(T1, False, f"bounced: Undeliverable: mailgate round-trip probe {T1}")]


def test_forged_late_unknown_and_others_mail_are_not_reported(relayed):
    mb, reports = relayed
    mb.track(T1)
    mb.track(T2)
    assert mb.consume(env(mail_from="eve@attacker.test"), probe_mail(T1)).outcome == "forged"
    mb.forget(T2)                                         # the supervisor's check ended
    assert mb.consume(env(), probe_mail(T2)).outcome == "late"
    assert mb.consume(env(), probe_mail(T3)).outcome == "unknown"
    assert mb.consume(env(mail_from="<>"), bounce_of(T3)).outcome == "unknown"
    assert mb.consume(env(rcpt_tos=["bob@example.com"]), probe_mail(T1)) is None
    assert reports == []
    assert mb.awaited == 1                                # T1 still awaited: it may yet return
    assert mb.consume(env(), probe_mail(T1)).outcome == "returned"
    assert reports == [(T1, True, "")]


def test_a_token_tracked_again_after_it_ended_is_awaited(relayed):
    """A snapshot sent at a worker's start may list a token ended, then awaited ones."""
    mb, reports = relayed
    mb.forget(T1)
    mb.track(T1)
    assert mb.consume(env(), probe_mail(T1)).outcome == "returned" and reports


def test_the_workers_own_directory_disables_it(relayed, tmp_path):
    reports = []
    current = [Directory.load(_dir(tmp_path, "bob@example.com"))]
    stream = io.StringIO()
    mb = RelayedProbeMailbox(RETURN, lambda *r: reports.append(r), directory=lambda: current[0],
                             log=make_logger("info", "kv", stream=stream))
    mb.track(T1)
    assert mb.accepts(RETURN) and mb.disabled is None
    current[0] = Directory.load(_dir(tmp_path, "bob@example.com", RETURN))
    assert not mb.accepts(RETURN) and "recipient directory" in mb.disabled
    assert mb.consume(env(), probe_mail(T1)) is None and reports == []
    assert "event='probe_mailbox_disabled'" in stream.getvalue()


def test_a_worker_mailbox_does_not_expect_tokens_itself(relayed):
    with pytest.raises(TypeError):
        relayed[0].expect(T1)


async def test_the_supervisors_mailbox_announces_and_settles():
    changes = []
    mb = ProbeMailbox(RETURN)
    mb.on_change = lambda what, token: changes.append((what, token))
    f1 = mb.expect(T1)
    mb.expect(T2)
    mb.forget(T2)
    mb.forget(T3)
    assert changes == [("expect", T1), ("expect", T2), ("forget", T2), ("forget", T3)]
    assert mb.snapshot() == ([T2, T3], [T1])
    assert not mb.settle(T2, True, "")                    # ended: nothing to settle
    assert mb.settle(T1, False, "bounced: Undeliverable")
    ok, detail, at = f1.result()
    assert (ok, detail) == (False, "bounced: Undeliverable") and at > 0
    assert not mb.settle(T1, True, "")                    # the first report stands


async def test_the_real_intake_consumes_through_a_relayed_mailbox(tmp_path):
    cfg = config_mod.parse({"server": {"hostname": "gw.test", "data_dir": str(tmp_path / "data")},
                            "smtp": {"listen": ["127.0.0.1:0"]},
                            "relay": {"accepted_domains": ["example.com"]}}, "test")
    spool = await Spool.open(cfg.spool_path)
    reports = []
    mb = RelayedProbeMailbox(RETURN, lambda *r: reports.append(r))
    mb.track(T1)
    stream = io.StringIO()
    handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, DirectoryWatcher(None)),
                            lambda qid: None, make_logger("info", "kv", stream=stream),
                            probe_mailbox=mb)
    server = IntakeServer(cfg, handler)
    (_h, port), = await server.start()

    def session():
        with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
            c.ehlo("exchange.test")
            c.mail(RETURN)
            rcpt = c.rcpt(RETURN)
            consumed = c.data(probe_mail(T1))
            c.mail("alice@remote.test")
            c.rcpt("bob@example.com")
            mixed = c.rcpt(RETURN)
            c.rset()
            return rcpt, consumed, mixed
    try:
        rcpt, consumed, mixed = await asyncio.to_thread(session)
        assert rcpt[0] == 250
        assert consumed == (250, b"2.0.0 Ok: probe consumed")
        assert mixed == (452, b"4.5.3 Too many recipients")   # the return address travels alone
        assert reports == [(T1, True, "")]
        assert sum((await spool.counts()).values()) == 0      # never spooled
        for _ in range(50):
            if "probe_consumed" in stream.getvalue():
                break
            await asyncio.sleep(0.05)
        assert "outcome='returned'" in stream.getvalue()
    finally:
        await server.stop()
        await spool.close()


def _dir(tmp_path, *addresses):
    d = tmp_path / "directory.json"
    d.write_text(json.dumps({"mailboxes": list(addresses)}))
    return d
