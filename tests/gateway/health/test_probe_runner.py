"""ProbeRunner: intervals, timeouts, history, consecutive failures, callbacks. The schedule is
checked on the pure ``next_check_delay`` and, live, on what the small in-test probes recorded
(order, no overlap, never early); runs last until the state asked for is reached, with a bound
only for waiting. Failure counting with the real HttpProbe against healthpages.py and the real
SmtpInboundProbe against a sink process."""
from __future__ import annotations

import asyncio
import time

import pytest

from gateway.health import HttpProbe, ProbeResult, ProbeRunner, SmtpInboundProbe
from gateway.health.runner import next_check_delay

OWA = "/owa/healthcheck.htm"
WAIT = 20.0     # seconds: a bound for waiting for a state, never the thing asserted
EARLY = 0.02    # seconds: loop.time() vs time.monotonic() rounding, for "never early"


class Ticker:
    """A probe that records when it was checked; ``hang`` never returns, ``boom`` raises."""

    def __init__(self, name, interval, *, timeout=1.0, ok=True, hang=False, boom=False, took=0.0):
        self.name, self.interval, self.timeout, self.critical = name, interval, timeout, True
        self.ok, self.hang, self.boom, self.took = ok, hang, boom, took
        self.starts: list[float] = []
        self.ends: list[float] = []

    async def check(self) -> ProbeResult:
        self.starts.append(time.monotonic())
        if self.hang:
            await asyncio.sleep(3600)
        if self.boom:
            raise RuntimeError("probe bug")
        await asyncio.sleep(self.took)
        self.ends.append(time.monotonic())
        return ProbeResult(self.name, self.ok, time.time(), self.took, "fine" if self.ok else "bad", True)


async def run_until(runner: ProbeRunner, pred, what: str) -> None:
    """Run ``runner`` until ``pred()`` holds (at most WAIT seconds), then cancel it."""
    task = asyncio.create_task(runner.run())
    try:
        await until(pred, WAIT, what)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()


async def until(pred, timeout: float, what: str):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_next_check_counts_the_interval_from_the_start_of_the_last():
    assert next_check_delay(started=100.0, interval=1.0, now=100.2) == pytest.approx(0.8)
    assert next_check_delay(started=100.0, interval=1.0, now=100.0) == 1.0
    assert next_check_delay(started=100.0, interval=1.0, now=101.0) == 0.0
    assert next_check_delay(started=100.0, interval=0.3, now=100.5) == 0.0   # overran: at once


async def test_each_probe_on_its_own_interval():
    fast, slow = Ticker("fast", 0.3), Ticker("slow", 1.0, took=0.2)
    await run_until(ProbeRunner([fast, slow]), lambda: len(slow.starts) >= 3, "3 checks of slow")
    assert len(fast.starts) > len(slow.starts), (fast.starts, slow.starts)
    for t in (fast, slow):
        # one probe's checks never overlap, and none starts before its interval is over
        assert all(end <= nxt for end, nxt in zip(t.ends, t.starts[1:])), t.name
        gaps = [b - a for a, b in zip(t.starts, t.starts[1:])]
        assert all(g >= t.interval - EARLY for g in gaps), (t.name, gaps)


async def test_history_is_bounded_and_merged_in_time_order():
    a, b = Ticker("a", 0.1), Ticker("b", 0.1, ok=False)
    runner = ProbeRunner([a, b], history=3)
    await run_until(runner, lambda: len(runner.history("a")) == 3 and runner.consecutive_failures("b") > 3,
                    "a full history of a and more failures of b than history holds")
    assert len(a.starts) >= 3
    ha = runner.history("a")
    assert len(ha) == 3 and [r.probe for r in ha] == ["a"] * 3
    assert ha[-1] == runner.latest()["a"] and ha[0].at < ha[-1].at
    merged = runner.history()
    assert len(merged) == 6 and [r.at for r in merged] == sorted(r.at for r in merged)
    assert runner.history("nope") == [] and runner.consecutive_failures("nope") == 0
    # every finished check of b failed, more than history holds (a check cut by the cancel may
    # have started without finishing)
    assert len(b.starts) - 1 <= runner.consecutive_failures("b") <= len(b.starts)
    assert runner.consecutive_failures("b") > 3
    assert runner.consecutive_failures("a") == 0


async def test_timeout_and_raising_probe_become_failures_and_others_keep_running():
    hang = Ticker("hang", 0.2, timeout=0.3, hang=True)
    boom, fine = Ticker("boom", 0.2, boom=True), Ticker("fine", 0.2)
    seen: list[str] = []
    runner = ProbeRunner([hang, boom, fine], on_result=lambda r: seen.append(r.probe))
    await run_until(runner, lambda: len(hang.starts) >= 2 and len(fine.starts) >= 4,
                    "a second check of the hanging probe")   # bounded, then checked again
    h = runner.latest()["hang"]
    assert (h.ok, h.detail, h.critical) == (False, "timeout after 0.3s", True)
    b = runner.latest()["boom"]
    assert (b.ok, b.detail) == (False, "probe error: RuntimeError: probe bug")
    assert runner.latest()["fine"].ok and len(fine.starts) >= 4
    assert len(fine.starts) - 1 <= seen.count("fine") <= len(fine.starts)


async def test_failing_callback_does_not_stop_the_runner():
    t = Ticker("t", 0.1)

    def bad(_result):
        raise ValueError("alert channel down")

    runner = ProbeRunner([t], on_result=bad)
    await run_until(runner, lambda: len(t.starts) >= 5, "5 checks")
    assert len(runner.history("t")) >= 4             # every finished check was kept


def test_duplicate_names_rejected():
    with pytest.raises(ValueError):
        ProbeRunner([Ticker("x", 1), Ticker("x", 2)])


async def test_consecutive_failures_of_a_real_health_page(health_pages):
    hp = health_pages({OWA: 503})
    owa = HttpProbe("http:owa", hp.url(OWA), interval=0.2, timeout=2.0)
    runner = ProbeRunner([owa])
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: runner.consecutive_failures("http:owa") >= 3, 10, "3 failures")
        assert runner.latest()["http:owa"].detail == "HTTP 503 Service Unavailable"
        assert all(not r.ok for r in runner.history("http:owa"))
        hp.set({OWA: 200})
        await until(lambda: runner.latest()["http:owa"].ok, 10, "recovery")
        assert runner.consecutive_failures("http:owa") == 0
        once = await runner.run_once()
        assert [(r.probe, r.ok) for r in once] == [("http:owa", True)]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_smtp_probe_fails_when_exchange_stops(peers):
    sink = peers.sink("127.0.0.11", None, "mx1")

    async def resolve():
        return [("mx1.site-a.smarthost.test", "127.0.0.11", sink.port)]

    smtp = SmtpInboundProbe("smtp:inbound", resolve, canary_rcpt="canary@example.com",
                            mail_from="probe@gw.test", helo="gw.test", interval=0.3, timeout=2.0)
    results: list[ProbeResult] = []
    runner = ProbeRunner([smtp], on_result=results.append)
    task = asyncio.create_task(runner.run())
    try:
        await until(lambda: len(results) >= 2, 10, "two checks")
        assert all(r.ok for r in results)
        await asyncio.to_thread(sink.stop)
        await until(lambda: runner.consecutive_failures("smtp:inbound") >= 2, 10, "2 failures")
        last = runner.latest()["smtp:inbound"]
        assert not last.ok and "connection refused" in last.detail, last.detail
        assert smtp.last_hosts[0].detail == "connect: connection refused"
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
