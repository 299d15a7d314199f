"""HttpProbe against real HTTP servers in their own processes: Python's http.server serving a
directory with owa/healthcheck.htm, and tests/support/healthpages.py answering configured statuses
(503, slow pages, HTTPS with a private CA)."""
from __future__ import annotations

import asyncio
import ssl
import time

from gateway.health import HttpProbe
from tests.support.peers import free_port

HTTP_OK, HTTP_NOT_FOUND, HTTP_UNAVAILABLE = "HTTP 200 OK", "HTTP 404", "HTTP 503 Service Unavailable"
OWA, EWS, MAPI = "/owa/healthcheck.htm", "/ews/healthcheck.htm", "/mapi/healthcheck.htm"
AUTODISCOVER = "/Autodiscover/healthcheck.htm"
WAIT = 10.0     # seconds: a bound for waiting on a check, never the thing asserted


async def test_healthy_page_is_ok_with_latency_and_time(static_site):
    probe = HttpProbe("http:owa", static_site + OWA, timeout=5.0)
    before, started = time.time(), time.monotonic()
    r = await probe.check()
    wall = time.monotonic() - started
    assert (r.probe, r.ok, r.detail, r.critical) == ("http:owa", True, HTTP_OK, False)
    assert 0 < r.latency <= wall                       # measured, not made up
    assert before <= r.at <= time.time()


async def test_missing_page_is_404_failure(static_site):
    r = await HttpProbe("http:ews", static_site + EWS, timeout=5.0).check()
    assert not r.ok
    assert r.detail.startswith(HTTP_NOT_FOUND), r.detail


async def test_503_from_autodiscover_is_failure(health_pages):
    # the federation outage of the field report: the only visible symptom was Autodiscover's 503
    hp = health_pages({OWA: 200, AUTODISCOVER: 503})
    owa = await HttpProbe("http:owa", hp.url(OWA), timeout=5.0).check()
    ad = await HttpProbe("http:autodiscover", hp.url(AUTODISCOVER), timeout=5.0).check()
    assert (owa.ok, owa.detail) == (True, HTTP_OK)
    assert (ad.ok, ad.detail) == (False, HTTP_UNAVAILABLE)


async def test_expect_status_is_what_counts(health_pages):
    hp = health_pages({OWA: 200, EWS: 204})
    assert not (await HttpProbe("http:owa", hp.url(OWA), expect_status=204).check()).ok
    r = await HttpProbe("http:ews", hp.url(EWS), expect_status=204).check()
    assert (r.ok, r.detail) == (True, "HTTP 204 No Content")


async def test_nothing_listening_fails_fast():
    url = f"http://127.0.0.1:{free_port()}{OWA}"
    async with asyncio.timeout(WAIT):
        r = await HttpProbe("http:owa", url, timeout=3.0).check()
    assert not r.ok
    assert r.detail.startswith("connect:") and "timeout" not in r.detail, r.detail   # refused


async def test_page_that_never_answers_fails_within_timeout(health_pages):
    hp = health_pages({MAPI: 200}, delays={MAPI: 30})
    async with asyncio.timeout(WAIT):      # the page answers after 30 s: only the probe's own
        r = await HttpProbe("http:mapi", hp.url(MAPI), timeout=1.5).check()   # timeout ends it
    assert not r.ok
    assert r.detail.startswith("read: timeout"), r.detail


async def test_https_verified_against_private_ca(health_pages, tls_ca):
    ca, cert, key = tls_ca
    hp = health_pages({OWA: 200}, tls=(cert, key))
    url = hp.url(OWA).replace("127.0.0.1", "localhost")
    untrusted = await HttpProbe("http:owa", url, timeout=5.0).check()   # system CAs only
    assert not untrusted.ok
    assert "CERTIFICATE_VERIFY_FAILED" in untrusted.detail, untrusted.detail
    trusted = await HttpProbe("http:owa", url, timeout=5.0,
                              verify_tls=ssl.create_default_context(cafile=ca)).check()
    assert (trusted.ok, trusted.detail) == (True, HTTP_OK)
    unverified = await HttpProbe("http:owa", url, timeout=5.0, verify_tls=False).check()
    assert unverified.ok
