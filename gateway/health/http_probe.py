"""HTTP probe: does one of Exchange's health pages answer as users' clients would see it?

Exchange publishes ``healthcheck.htm`` per protocol (``/owa/``, ``/ews/``, ``/Autodiscover/``,
``/mapi/``, ``/Microsoft-Server-ActiveSync/``, ``/oab/``, ``/rpc/``, ``/ecp/``); 200 means the
protocol's application pool is healthy. The probe GETs the page over a fresh connection each time
(a pooled connection would hide a front end that no longer accepts new clients), does not follow
redirects (a redirect to a login page is not a healthy health page), ignores proxy environment
variables (the gateway checks Exchange directly, as its next hop), and is ok only on
``expect_status``. Results are informative (``critical=False``) by default: a broken OWA does not
stop mail. Reads and writes no queue state.
"""
from __future__ import annotations

import ssl
import time

import httpx

from gateway.delivery.transport import client_tls_context

from .result import check_budget, ProbeResult, describe, failure

__all__ = ["HttpProbe", "EXCHANGE_HEALTH_PATHS"]

EXCHANGE_HEALTH_PATHS = {
    "owa": "/owa/healthcheck.htm",
    "ews": "/ews/healthcheck.htm",
    "autodiscover": "/Autodiscover/healthcheck.htm",
    "mapi": "/mapi/healthcheck.htm",
    "activesync": "/Microsoft-Server-ActiveSync/healthcheck.htm",
    "oab": "/oab/healthcheck.htm",
    "ecp": "/ecp/healthcheck.htm",
    "rpc": "/rpc/healthcheck.htm",
}


class HttpProbe:
    """GET ``url``; ok when the status is ``expect_status``. ``verify_tls`` may also be an
    ``ssl.SSLContext`` (a private CA)."""

    def __init__(self, name: str, url: str, *, interval: float = 60.0, timeout: float = 10.0,
                 verify_tls: bool | ssl.SSLContext = True, critical: bool = False,
                 expect_status: int = 200) -> None:
        if timeout <= 0 or interval <= 0:
            raise ValueError("interval and timeout must be positive")
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"{name}: url must be http:// or https://, not {url!r}")
        self.name, self.url, self.interval, self.timeout = name, url, interval, timeout
        self.verify_tls, self.critical, self.expect_status = verify_tls, critical, expect_status
        # built once: loading the CA bundle takes ~50 ms, which would count as latency every check
        self._tls = verify_tls if isinstance(verify_tls, ssl.SSLContext) else client_tls_context(verify_tls)


    async def check(self) -> ProbeResult:
        started = time.monotonic()
        budget = check_budget(self.timeout)
        try:
            async with httpx.AsyncClient(verify=self._tls, timeout=httpx.Timeout(budget),
                                         follow_redirects=False, trust_env=False,
                                         limits=httpx.Limits(max_keepalive_connections=0)) as client:
                resp = await client.get(self.url, headers={"User-Agent": "mailgate-health/1"})
        except httpx.TimeoutException as e:
            return failure(self.name, started, f"{_phase(e)}: timeout after "
                           f"{time.monotonic() - started:.1f}s", self.critical)
        except httpx.HTTPError as e:
            return failure(self.name, started, f"{_phase(e)}: {describe(_root(e))}", self.critical)
        except (OSError, ssl.SSLError, ValueError) as e:
            return failure(self.name, started, describe(e), self.critical)
        detail = f"HTTP {resp.status_code} {resp.reason_phrase}".strip()
        return ProbeResult(self.name, resp.status_code == self.expect_status, time.time(),
                           time.monotonic() - started, detail, self.critical)


def _root(e: BaseException) -> BaseException:
    """The innermost cause (httpx wraps httpcore wraps OSError wraps ConnectionRefusedError)."""
    seen = 0
    while (e.__cause__ or e.__context__) is not None and seen < 10:
        e, seen = e.__cause__ or e.__context__, seen + 1
    return e


def _phase(e: httpx.HTTPError) -> str:
    if isinstance(e, (httpx.ConnectError, httpx.ConnectTimeout)):
        return "connect"
    if isinstance(e, (httpx.ReadTimeout, httpx.ReadError, httpx.RemoteProtocolError)):
        return "read"
    return "request"
