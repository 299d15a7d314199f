"""The public API of gateway.health that the continuity engine imports, pinned."""
from __future__ import annotations

import dataclasses

import pytest

import gateway.health as health
from gateway.health import HttpProbe, OrganicSignal, Probe, ProbeResult, SmtpInboundProbe


async def _no_hosts():
    return []


def test_public_names():
    assert sorted(health.__all__) == sorted([
        "ProbeResult", "Probe", "SmtpInboundProbe", "mx_hosts", "HttpProbe",
        "EXCHANGE_HEALTH_PATHS", "OrganicSignal", "ProbeRunner", "RoundTripProbe", "ProbeMailbox"])
    assert all(hasattr(health, n) for n in health.__all__)


def test_probe_result_is_frozen_with_the_agreed_fields():
    assert [f.name for f in dataclasses.fields(ProbeResult)] == [
        "probe", "ok", "at", "latency", "detail", "critical"]
    r = ProbeResult("http:owa", True, 1.0, 0.1, "HTTP 200 OK", False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.ok = False


def test_probes_satisfy_the_protocol_with_the_agreed_defaults():
    smtp = SmtpInboundProbe("smtp:inbound", _no_hosts, canary_rcpt="c@example.com",
                            mail_from="p@gw.test", helo="gw.test")
    http = HttpProbe("http:owa", "https://exchange.example.test/owa/healthcheck.htm")
    for p in (smtp, http):
        assert isinstance(p, Probe)
    # the configuration's defaults (probes.smtp_interval/smtp_timeout, http_interval/http_timeout):
    # the SMTP probe decides continuity (detection within 56 s), HTTP probes are only shown
    assert (smtp.interval, smtp.timeout) == (10.0, 5.0)
    assert (http.interval, http.timeout) == (60.0, 10.0)
    assert (smtp.critical, smtp.tls, smtp.verify_tls) == (True, "opportunistic", False)
    assert (http.critical, http.verify_tls, http.expect_status) == (False, True, 200)
    organic = OrganicSignal()
    assert (organic.window, organic.min_events) == (120.0, 5)


async def test_no_hosts_is_a_failure_not_an_exception():
    p = SmtpInboundProbe("smtp:inbound", _no_hosts, canary_rcpt="c@example.com",
                         mail_from="p@gw.test", helo="gw.test")
    r = await p.check()
    assert (r.ok, r.detail, r.critical) == (False, "resolve: no hosts", True)


def test_bad_configuration_rejected():
    with pytest.raises(ValueError):
        SmtpInboundProbe("s", _no_hosts, canary_rcpt="c@x", mail_from="p@x", helo="h", tls="maybe")
    with pytest.raises(ValueError):
        HttpProbe("h", "ftp://exchange.example.test/")
    with pytest.raises(ValueError):
        HttpProbe("h", "http://exchange.example.test/", timeout=0)
