"""Retry schedule for deferred mail: when to try again, and when to give up.

Postfix's defaults (minimal_backoff_time 300 s, maximal_backoff_time 4000 s, maximal_queue_lifetime
and bounce_queue_lifetime 5 days); the delay doubles after each failed attempt. RFC 5321 §4.5.4.1:
retries MUST happen, the intervals SHOULD be configurable, and giving up SHOULD take at least
4-5 days. Pure functions of the policy and the clock; reads and writes no queue state (the
scheduler stores the result in ``messages.next_attempt_at``).
"""
from __future__ import annotations

from dataclasses import dataclass

__all__ = ["RetryPolicy", "next_attempt", "retry_delay", "expired"]


@dataclass(frozen=True)
class RetryPolicy:
    """All values in seconds. ``bounce_lifetime`` applies to DSNs we generated ourselves.
    Raises ValueError if minimal_backoff <= 0, maximal_backoff < minimal_backoff, or a
    lifetime is negative."""
    minimal_backoff: float = 300.0
    maximal_backoff: float = 4000.0
    maximal_lifetime: float = 5 * 86400.0
    bounce_lifetime: float = 5 * 86400.0

    def __post_init__(self) -> None:
        if self.minimal_backoff <= 0:
            raise ValueError(f"minimal_backoff must be > 0 s, got {self.minimal_backoff}")
        if self.maximal_backoff < self.minimal_backoff:
            raise ValueError(f"maximal_backoff ({self.maximal_backoff} s) < minimal_backoff "
                             f"({self.minimal_backoff} s)")
        if self.maximal_lifetime < 0 or self.bounce_lifetime < 0:
            raise ValueError("queue lifetimes must be >= 0 s")


def retry_delay(policy: RetryPolicy, attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts (>= 1): minimal_backoff doubled per
    attempt, capped at maximal_backoff (300, 600, 1200, 2400, 4000, 4000, ...). ValueError if
    attempts < 1."""
    if attempts < 1:
        raise ValueError(f"attempts must be >= 1, got {attempts}")
    doublings = min(attempts - 1, 64)            # 2**64 * anything positive is past any cap
    return min(policy.minimal_backoff * 2.0 ** doublings, policy.maximal_backoff)


def next_attempt(policy: RetryPolicy, attempts: int, now: float) -> float:
    """Unix time (seconds) of the next attempt, given ``attempts`` made so far (>= 1) and the
    time ``now`` of the last failure. ValueError if attempts < 1."""
    return now + retry_delay(policy, attempts)


def expired(policy: RetryPolicy, arrived_at: float, now: float, is_dsn: bool = False) -> bool:
    """True once the message has been queued for its lifetime (seconds since ``arrived_at``,
    unix time): ``bounce_lifetime`` for our own DSNs, else ``maximal_lifetime``. A lifetime of 0
    means: give up after the first failed attempt (as in Postfix)."""
    lifetime = policy.bounce_lifetime if is_dsn else policy.maximal_lifetime
    return now - arrived_at >= lifetime
