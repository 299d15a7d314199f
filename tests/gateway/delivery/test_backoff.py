"""Retry schedule: Postfix's doubling backoff and the 5-day lifetime (RFC 5321 §4.5.4.1)."""
from __future__ import annotations

import pytest

from gateway.delivery.backoff import RetryPolicy, expired, next_attempt, retry_delay

DAY = 86400.0
T0 = 1_700_000_000.0


def test_default_schedule():
    policy = RetryPolicy()
    delays = [next_attempt(policy, n, T0) - T0 for n in range(1, 9)]
    assert delays == [300, 600, 1200, 2400, 4000, 4000, 4000, 4000]


def test_huge_attempt_counts_stay_capped():
    assert retry_delay(RetryPolicy(), 10_000) == 4000


def test_custom_policy():
    policy = RetryPolicy(minimal_backoff=60, maximal_backoff=200)
    assert [retry_delay(policy, n) for n in (1, 2, 3, 4)] == [60, 120, 200, 200]


@pytest.mark.parametrize("attempts", [0, -1])
def test_attempts_must_be_positive(attempts):
    with pytest.raises(ValueError):
        next_attempt(RetryPolicy(), attempts, T0)


@pytest.mark.parametrize("kwargs", [dict(minimal_backoff=0), dict(maximal_backoff=100),
                                    dict(maximal_lifetime=-1), dict(bounce_lifetime=-5)])
def test_bad_policy_rejected(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


def test_expiry_at_five_days():
    policy = RetryPolicy()
    assert not expired(policy, T0, T0)
    assert not expired(policy, T0, T0 + 5 * DAY - 1)
    assert expired(policy, T0, T0 + 5 * DAY)
    assert expired(policy, T0, T0 + 6 * DAY)


def test_dsn_uses_bounce_lifetime():
    policy = RetryPolicy(bounce_lifetime=1 * DAY)
    assert expired(policy, T0, T0 + DAY, is_dsn=True)
    assert not expired(policy, T0, T0 + DAY, is_dsn=False)


def test_zero_lifetime_gives_up_at_once():
    assert expired(RetryPolicy(maximal_lifetime=0), T0, T0)


def test_retries_of_messages_deferred_together_are_spread_and_never_early():
    """A dead smarthost defers many messages in the same second: their next attempts spread
    over [delay, delay x 1.2), so its recovery does not get them all at once (issue 10 item 3)."""
    from gateway.delivery.backoff import JITTER, spread_of
    policy = RetryPolicy()
    ids = [f"Q{i:06d}XYZ" for i in range(1000)]
    times = [next_attempt(policy, 1, T0, spread_of(q, 1)) - T0 for q in ids]
    assert min(times) >= 300 and max(times) < 300 * (1 + JITTER)
    per_10s = [sum(1 for t in times if 300 + 6 * k <= t < 300 + 6 * (k + 1)) for k in range(10)]
    assert max(per_10s) < 200, per_10s       # no bucket of 6 s gets most of them
    assert spread_of(ids[0], 1) == spread_of(ids[0], 1) != spread_of(ids[0], 2)
    assert next_attempt(policy, 1, T0) - T0 == 300
    with pytest.raises(ValueError):
        next_attempt(policy, 1, T0, 1.0)
