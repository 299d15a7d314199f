"""OrganicSignal: real delivery outcomes over a sliding window (pure; the clock is injected)."""
from __future__ import annotations

import pytest

from gateway.health import OrganicSignal

T0 = 1_800_000_000.0
TRY_LATER, USER_UNKNOWN, QUEUED = 451, 550, 250


class Clock:
    def __init__(self, t: float = T0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def fill(sig: OrganicSignal, n: int, *, ok=False, conn=False, code=None) -> None:
    for _ in range(n):
        sig.record(ok, connection_failure=conn, code=code)


def test_too_few_events_says_nothing():
    sig = OrganicSignal(window=120, min_events=5, clock=Clock())
    assert sig.snapshot() is None
    fill(sig, 4, conn=True)
    assert sig.snapshot() is None
    fill(sig, 1, conn=True)
    assert sig.snapshot() is not None


def test_all_connection_failures_is_down():
    clock = Clock()
    sig = OrganicSignal(clock=clock, wall=clock)
    fill(sig, 6, conn=True)
    clock.t += 3
    r = sig.snapshot()
    assert (r.probe, r.ok, r.critical, r.at, r.latency) == ("organic", False, True, T0 + 3, 0.0)
    assert r.detail == ("6 deliveries in 120s: 0 ok, 6 connection failures, 0 temporary failures, "
                        "0 permanent failures; unavailable 100%, delivered 0%")


def test_all_4xx_and_no_reply_is_down():
    sig = OrganicSignal(clock=Clock())
    fill(sig, 3, code=TRY_LATER)
    fill(sig, 2, code=None)                     # failed without any reply code: unavailable too
    r = sig.snapshot()
    assert not r.ok
    assert "5 temporary failures" in r.detail


def test_one_delivery_among_failures_is_up():
    sig = OrganicSignal(clock=Clock())
    fill(sig, 9, conn=True)
    fill(sig, 1, ok=True, code=QUEUED)
    r = sig.snapshot()
    assert r.ok
    assert "10 deliveries" in r.detail and "1 ok" in r.detail
    assert "unavailable 90%, delivered 10%" in r.detail


def test_5xx_means_exchange_answered():
    sig = OrganicSignal(clock=Clock())
    fill(sig, 4, conn=True)
    fill(sig, 1, code=USER_UNKNOWN)
    r = sig.snapshot()
    assert r.ok                                  # refusing one message is being up
    assert "1 permanent failures" in r.detail and "unavailable 80%" in r.detail


def test_window_slides():
    clock = Clock()
    sig = OrganicSignal(window=60, min_events=3, clock=clock)
    fill(sig, 3, ok=True, code=QUEUED)
    clock.t += 30
    fill(sig, 3, conn=True)
    assert sig.snapshot().ok                     # the successes are still in the window
    clock.t += 30                                # the successes are exactly 60 s old: out
    r = sig.snapshot()
    assert not r.ok and r.detail.startswith("3 deliveries in 60s"), r.detail
    clock.t += 30                                # everything has aged out: no opinion
    assert sig.snapshot() is None


def test_bad_parameters_rejected():
    with pytest.raises(ValueError):
        OrganicSignal(window=0)
    with pytest.raises(ValueError):
        OrganicSignal(min_events=0)


def test_a_wall_clock_step_neither_empties_nor_stretches_the_window():
    """The window runs on the monotonic clock; only the result's ``at`` is the wall clock."""
    mono, wall = Clock(5000.0), Clock()
    sig = OrganicSignal(window=120, min_events=5, clock=mono, wall=wall)
    fill(sig, 6, conn=True)
    wall.t += 3600                              # NTP step forward: the failures are still recent
    mono.t += 10
    r = sig.snapshot()
    assert r is not None and not r.ok and r.at == T0 + 3600
    wall.t -= 7200                              # and back: they still age out after 120 s
    mono.t += 111
    assert sig.snapshot() is None
