"""RoundTripProbe and ProbeMailbox with the real intake in-process (IntakeServer + IntakeHandler
over a real Spool, as gateway/app.py builds them) and a real "Exchange" process whose canary
mailbox forwards back to it (tests/support/forwarder.py): the token comes back and is consumed,
a dropped probe fails at the deadline, a bounce fails at once, submission failures and failover,
a late return, the return address travelling alone, AUTH refused without TLS."""
from __future__ import annotations

import asyncio
import io
import json
import smtplib
from types import SimpleNamespace

import pytest

from gateway import config as config_mod
from gateway.app import RcptContextSource
from gateway.health import ProbeMailbox, ProbeRunner, RoundTripProbe
from gateway.intake.handler import IntakeHandler
from gateway.intake.server import IntakeServer
from gateway.logs import make_logger
from policies.directory import Directory, DirectoryWatcher
from spool import Spool
from tests.support.forwarder import ForwarderProc
from tests.support.peers import free_port

CANARY, RETURN, HELO = "canary@example.com", "mailgate-probe@gw.example.net", "gw.test"
PROBE_CONSUMED = (250, "2.0.0 Ok: probe consumed")
RCPT_OK = (250, "2.1.5 Recipient OK")
TOO_MANY_RECIPIENTS = (452, "4.5.3 Too many recipients")


@pytest.fixture
async def gateway_intake(tmp_path):
    """(mailbox, spool, port, log stream): the real intake with a ProbeMailbox for RETURN."""
    cfg = config_mod.parse({"server": {"hostname": HELO, "data_dir": str(tmp_path / "data")},
                            "smtp": {"listen": ["127.0.0.1:0"]},
                            "relay": {"accepted_domains": ["example.com"]}}, "test")
    spool = await Spool.open(cfg.spool_path)
    stream = io.StringIO()
    mailbox = ProbeMailbox(RETURN)
    handler = IntakeHandler(cfg, spool, RcptContextSource(cfg, DirectoryWatcher(None)),
                            lambda qid: None, make_logger("info", "kv", stream=stream),
                            probe_mailbox=mailbox)
    server = IntakeServer(cfg, handler)
    (_h, port), = await server.start()
    yield SimpleNamespace(mailbox=mailbox, spool=spool, port=port, log=stream)
    await server.stop()
    await spool.close()


def exchange(peers, tmp_path, gw_port, *extra, host="127.0.0.21", name="exchange") -> ForwarderProc:
    f = ForwarderProc(host, free_port(), tmp_path / f"fwd-{name}", name, canary=CANARY,
                      relay=f"127.0.0.1:{gw_port}", return_to=RETURN, extra=extra)
    peers.procs.append(f)
    return f.start()


def probe(mailbox, hosts, **kw) -> RoundTripProbe:
    async def resolve():
        return list(hosts)
    kw.setdefault("deadline", 10.0)
    return RoundTripProbe("roundtrip", resolve, mailbox, rcpt=CANARY, helo=HELO, **kw)


async def forwarded(ex: ForwarderProc, n: int = 1) -> list[str]:
    """The forwarder's relay replies once ``n`` are logged (it logs after the gateway's reply,
    which can come after the probe already saw its token)."""
    for _ in range(100):
        if len(ex.forwarded()) >= n:
            break
        await asyncio.sleep(0.1)
    return ex.forwarded()


async def stored(spool) -> int:
    return sum((await spool.counts()).values())


async def test_token_comes_back_and_is_consumed_not_spooled(peers, tmp_path, gateway_intake):
    gw = gateway_intake
    ex = exchange(peers, tmp_path, gw.port)
    p = probe(gw.mailbox, [("exchange", "127.0.0.21", ex.port)])
    r = await p.check()
    print(f"\nround trip through the forwarder: {r.latency * 1000:.1f} ms")
    assert (r.probe, r.ok, r.critical) == ("roundtrip", True, False)
    assert r.detail == (f"returned after {r.latency:.2f}s (submitted via exchange[127.0.0.21]:"
                        f"{ex.port}: 250 2.0.0 Ok: stored as exchange-0)"), r.detail
    assert r.latency > 0
    (env, data), = ex.messages()                    # what Exchange received: one probe to the canary
    assert env["rcpt_tos"] == [CANARY] and env["mail_from"] == RETURN
    token = data.split(b"X-Mailgate-Probe: ")[1][:32].decode()
    assert f"Subject: mailgate round-trip probe {token}\r\n".encode() in data
    assert await forwarded(ex) == [f"{RETURN} 250 2.0.0 Ok: probe consumed"]
    assert await stored(gw.spool) == 0              # consumed: never committed, never delivered
    assert "event='probe_consumed'" in gw.log.getvalue()
    assert f"outcome='returned' token='{token}'" in gw.log.getvalue()
    assert gw.mailbox.awaited == 0


async def test_delay_is_measured_in_the_latency(peers, tmp_path, gateway_intake):
    ex = exchange(peers, tmp_path, gateway_intake.port, "--delay", "1.5")
    r = await probe(gateway_intake.mailbox, [("exchange", "127.0.0.21", ex.port)]).check()
    assert r.ok, r.detail
    assert r.latency >= 1.5                          # the forwarder held it 1.5 s


async def test_dropped_probe_fails_at_the_deadline(peers, tmp_path, gateway_intake):
    ex = exchange(peers, tmp_path, gateway_intake.port, "--drop")
    p = probe(gateway_intake.mailbox, [("exchange", "127.0.0.21", ex.port)], deadline=2.0)
    r = await ProbeRunner([p]).run_once()
    (r,) = r
    assert not r.ok
    assert r.detail == (f"no return (submitted via exchange[127.0.0.21]:{ex.port}: 250 2.0.0 Ok: "
                        "stored as exchange-0): timeout after 1.8s"), r.detail
    assert ex.count() == 1 and ex.forwarded() == []
    assert gateway_intake.mailbox.awaited == 0


async def test_bounce_of_the_probe_fails_at_once_and_is_consumed(peers, tmp_path, gateway_intake):
    ex = exchange(peers, tmp_path, gateway_intake.port, "--bounce")
    r = await probe(gateway_intake.mailbox, [("exchange", "127.0.0.21", ex.port)]).check()
    assert not r.ok
    assert r.detail.startswith("bounced: Undeliverable: mailgate round-trip probe "), r.detail
    assert await forwarded(ex) == [f"{RETURN} 250 2.0.0 Ok: probe consumed"]
    assert await stored(gateway_intake.spool) == 0
    assert "outcome='bounced'" in gateway_intake.log.getvalue()


async def test_dead_host_fails_over_to_the_next_and_all_dead_is_a_failure(peers, tmp_path, gateway_intake):
    ex = exchange(peers, tmp_path, gateway_intake.port)
    dead = free_port()
    r = await probe(gateway_intake.mailbox, [("mx1", "127.0.0.11", dead),
                                             ("mx2", "127.0.0.21", ex.port)]).check()
    assert r.ok, r.detail
    assert f"submitted via mx2[127.0.0.21]:{ex.port}: 250 " in r.detail
    r = await probe(gateway_intake.mailbox, [("mx1", "127.0.0.11", dead)]).check()
    assert (r.ok, r.detail) == (False, f"submit mx1[127.0.0.11]:{dead} connect: connection refused")


async def test_late_return_is_consumed_and_logged_as_late(peers, tmp_path, gateway_intake):
    gw = gateway_intake
    ex = exchange(peers, tmp_path, gw.port, "--delay", "2.5")
    r = await probe(gw.mailbox, [("exchange", "127.0.0.21", ex.port)], deadline=1.0).check()
    assert not r.ok and r.detail.startswith("no return (submitted via"), r.detail
    assert await forwarded(ex) == [f"{RETURN} 250 2.0.0 Ok: probe consumed"]
    assert "outcome='late'" in gw.log.getvalue()
    assert await stored(gw.spool) == 0


async def test_return_address_travels_alone_and_forged_tokens_are_consumed(gateway_intake):
    gw = gateway_intake

    def session():
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("attacker.test")
            c.mail("eve@attacker.test")
            mixed = c.rcpt("bob@example.com"), c.rcpt(RETURN)
            c.rset()
            c.mail("eve@attacker.test")
            alone = c.rcpt(RETURN.upper()), c.rcpt("bob@example.com")
            forged = c.data(b"Subject: mailgate round-trip probe " + b"a" * 32 +
                            b"\r\nX-Mailgate-Probe: " + b"b" * 32 + b"\r\n\r\nhello\r\n")
            return mixed, alone, forged

    mixed, alone, forged = await asyncio.to_thread(session)
    assert [(c, t.decode()) for c, t in mixed] == [(250, "2.1.5 Recipient OK"), TOO_MANY_RECIPIENTS]
    assert [(c, t.decode()) for c, t in alone] == [RCPT_OK, TOO_MANY_RECIPIENTS]
    assert (forged[0], forged[1].decode()) == PROBE_CONSUMED
    assert "outcome='unknown'" in gw.log.getvalue()
    assert await stored(gw.spool) == 0


async def test_ordinary_mail_is_not_a_probe(gateway_intake):
    mb = gateway_intake.mailbox
    env = SimpleNamespace(mail_from="alice@remote.test", rcpt_tos=["bob@example.com"])
    assert mb.consume(env, b"Subject: mailgate round-trip probe\r\n\r\nX-Mailgate-Probe: " +
                      b"c" * 32 + b"\r\n") is None   # a token in the body is not a header
    fut = mb.expect("d" * 32)
    token_mail = b"X-Mailgate-Probe: " + b"d" * 32 + b"\r\n\r\nbody\r\n"
    assert mb.consume(env, token_mail) is None      # an awaited token under another envelope: mail
    forged = mb.consume(SimpleNamespace(mail_from="eve@attacker.test", rcpt_tos=[RETURN]), token_mail)
    assert (forged.outcome, forged.token) == ("forged", "d" * 32)   # consumed, does not pass
    assert not fut.done()
    own = SimpleNamespace(mail_from=RETURN.upper(), rcpt_tos=[RETURN])   # the probe's own envelope
    got = mb.consume(own, token_mail)
    assert (got.outcome, got.token) == ("returned", "d" * 32)
    assert fut.result()[0] is True
    mb.forget("d" * 32)


async def test_awaited_token_in_a_users_mail_is_queued_for_the_user(gateway_intake):
    """Mail quoting an awaited token (a reply, a forward of the probe) under any envelope but the
    probe's own is ordinary mail: queued for its recipient, and the check is not passed."""
    gw = gateway_intake
    token = "e" * 32
    fut = gw.mailbox.expect(token)
    body = (b"Subject: RE: mailgate round-trip probe " + token.encode() + b"\r\n"
            b"X-Mailgate-Probe: " + token.encode() + b"\r\n\r\nwhat is this?\r\n")

    def send():
        with smtplib.SMTP("127.0.0.1", gw.port, timeout=10) as c:
            c.ehlo("client.test")
            c.mail("alice@remote.test")
            c.rcpt("bob@example.com")
            return c.data(body)

    code, text = await asyncio.to_thread(send)
    assert code == 250 and text.startswith(b"2.0.0 Ok: queued as "), text
    assert await stored(gw.spool) == 1
    assert not fut.done()
    gw.mailbox.forget(token)


def directory_file(tmp_path, *addresses):
    d = tmp_path / "directory.json"
    d.write_text(json.dumps({"mailboxes": list(addresses)}))
    return Directory.load(d)


async def test_return_address_in_a_reloaded_directory_disables_the_probe_mailbox(peers, tmp_path):
    """After a reload lists the return address, it is that user's again: RCPT goes through the
    directory, mail to it is queued, the probe fails at once (never critical) without
    submitting; a later reload without it enables the mailbox again."""
    current = [directory_file(tmp_path, "bob@example.com")]
    stream = io.StringIO()
    mb = ProbeMailbox(RETURN, directory=lambda: current[0],
                      log=make_logger("info", "kv", stream=stream))
    env = SimpleNamespace(mail_from=RETURN, rcpt_tos=[RETURN])
    assert mb.accepts(RETURN) and mb.disabled is None
    current[0] = directory_file(tmp_path, "bob@example.com", RETURN)
    assert not mb.accepts(RETURN) and "recipient directory" in mb.disabled
    assert mb.consume(env, b"X-Mailgate-Probe: " + b"f" * 32 + b"\r\n\r\nx\r\n") is None
    ex = exchange(peers, tmp_path, free_port())
    r = await probe(mb, [("exchange", "127.0.0.21", ex.port)], critical=True).check()
    assert (r.ok, r.critical) == (False, False) and r.detail.startswith("disabled: "), r
    assert ex.count() == 0
    assert "event='probe_mailbox_disabled'" in stream.getvalue()
    current[0] = directory_file(tmp_path, "bob@example.com")
    assert mb.accepts(RETURN) and mb.disabled is None


async def test_auth_without_tls_is_refused_before_the_password_goes_out(peers, tmp_path, gateway_intake):
    ex = exchange(peers, tmp_path, gateway_intake.port)
    p = probe(gateway_intake.mailbox, [("exchange", "127.0.0.21", ex.port)], username="probe",
              password="secret", tls="none")
    r = await p.check()
    assert (r.ok, p.tls) == (False, "required")
    assert r.detail == (f"submit exchange[127.0.0.21]:{ex.port} STARTTLS: SMTPNotSupported: "
                        "not offered (required before AUTH)")
    assert ex.count() == 0


def test_bad_configuration_rejected():
    mb = ProbeMailbox(RETURN)
    with pytest.raises(ValueError):
        probe(mb, [], deadline=0)
    with pytest.raises(ValueError):
        probe(mb, [], tls="maybe")
    with pytest.raises(config_mod.ConfigError, match="roundtrip_return"):
        config_mod.parse({"probes": {"roundtrip": True, "roundtrip_to": CANARY}}, "t.toml")
