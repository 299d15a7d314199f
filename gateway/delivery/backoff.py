"""Retry schedule for deferred mail: when to try again, and when to give up.

Postfix's defaults (minimal_backoff_time 300 s, maximal_backoff_time 4000 s, maximal_queue_lifetime
and bounce_queue_lifetime 5 days); the delay doubles after each failed attempt. RFC 5321 §4.5.4.1:
retries MUST happen, the intervals SHOULD be configurable, and giving up SHOULD take at least
4-5 days. Pure functions of the policy and the clock; reads and writes no queue state (the
scheduler stores the result in ``messages.next_attempt_at``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

__all__ = ["RetryPolicy", "next_attempt", "retry_delay", "expired", "spread_of", "JITTER"]


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


#: Retries are spread over [delay, delay × (1 + JITTER)): messages deferred in the same second
#: (a dead smarthost) do not all come back in the same second (no thundering herd on recovery).
JITTER = 0.2


def spread_of(queue_id: str, attempts: int) -> float:
    """A fraction in [0, 1) fixed by the message and its attempt count (CRC-32), so the same
    message is rescheduled the same way after a restart and different messages differ."""
    return (zlib.crc32(f"{queue_id}:{attempts}".encode()) % 10_000) / 10_000


def next_attempt(policy: RetryPolicy, attempts: int, now: float, spread: float = 0.0) -> float:
    """Unix time (seconds) of the next attempt, given ``attempts`` made so far (>= 1) and the
    time ``now`` of the last failure: ``retry_delay`` stretched by ``JITTER × spread``
    (``spread`` in [0, 1), e.g. spread_of(queue_id, attempts); 0 gives the bare delay). Never
    earlier than the bare delay. ValueError if attempts < 1 or spread is outside [0, 1)."""
    if not 0.0 <= spread < 1.0:
        raise ValueError(f"spread must be in [0, 1), got {spread}")
    return now + retry_delay(policy, attempts) * (1.0 + JITTER * spread)


def expired(policy: RetryPolicy, arrived_at: float, now: float, is_dsn: bool = False) -> bool:
    """True once the message has been queued for its lifetime (seconds since ``arrived_at``,
    unix time): ``bounce_lifetime`` for our own DSNs, else ``maximal_lifetime``. A lifetime of 0
    means: give up after the first failed attempt (as in Postfix)."""
    lifetime = policy.bounce_lifetime if is_dsn else policy.maximal_lifetime
    return now - arrived_at >= lifetime
