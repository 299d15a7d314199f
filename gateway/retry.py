"""Surviving transient faults in long-running tasks: log once per distinct error, back off, retry.

A loop that must never die (the queue manager, the continuity controller, a delivery recording
its outcome while the disk is full) keeps one ``FaultLog`` per kind of work and a ``Backoff`` per
loop::

    faults = FaultLog(log, "qmgr_spool_failed")
    backoff = Backoff()
    while True:
        try:
            await step()
        except Exception as e:
            faults.failed(e)                     # logged once per distinct error
            await asyncio.sleep(backoff.next())  # 0.5 s, 1 s, 2 s, ... capped at 10 s
            continue
        faults.recovered()                       # one "<event>_recovered" line after a failure
        backoff.reset()

or, for one operation that must eventually succeed, ``await retry(op, faults, retry_on=...)``,
and, for a whole task of the application's TaskGroup, ``await supervise(name, factory, log)``:
if the task ever raises, it is started again after a backoff instead of ending the gateway.
Reads and writes no queue state. Errors are compared by type and message: a thousand deliveries
failing with "database or disk is full" log one line, until something succeeds again.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

__all__ = ["Backoff", "FaultLog", "retry", "supervise"]

T = TypeVar("T")

#: Seconds before the first retry, and the most between two retries.
INITIAL_DELAY = 0.5
MAX_DELAY = 10.0


class Backoff:
    """Delays in seconds that double from ``initial`` up to ``maximum``; ``reset()`` after a
    success. Raises ValueError if ``initial`` <= 0 or ``maximum`` < ``initial``."""

    def __init__(self, initial: float = INITIAL_DELAY, maximum: float = MAX_DELAY):
        if initial <= 0 or maximum < initial:
            raise ValueError(f"bad backoff {initial} s .. {maximum} s")
        self.initial, self.maximum = initial, maximum
        self._next = initial

    def next(self) -> float:
        """The delay to wait now (seconds); the following one is twice as long (capped)."""
        delay = self._next
        self._next = min(self._next * 2.0, self.maximum)
        return delay

    def reset(self) -> None:
        self._next = self.initial


class FaultLog:
    """Logs each distinct error once under ``event`` (an error line with ``error=`` and the
    caller's fields), until ``recovered()`` is called: then one ``<event>_recovered`` line, and
    the same error is worth a line again. Shared by concurrent tasks doing the same work."""

    def __init__(self, log, event: str):
        self.log, self.event = log, event
        self._seen: set[tuple[str, str]] = set()
        self.failures = 0            # failures since the last recovery (logged or not)

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def failed(self, exc: BaseException, **fields) -> bool:
        """Count a failure; log it if this error was not logged since the last recovery.
        Returns True if a line was written."""
        self.failures += 1
        key = (type(exc).__name__, str(exc))
        if key in self._seen:
            return False
        self._seen.add(key)
        self.log.error(self.event, error=f"{key[0]}: {key[1]}"[:500], exc_info=exc, **fields)
        return True

    def recovered(self, **fields) -> None:
        """The work succeeded: log the recovery once if it had failed."""
        if self.failures:
            self.log.info(f"{self.event}_recovered", failures=self.failures, **fields)
        self.failures = 0
        self._seen.clear()


async def retry(op: Callable[[], Awaitable[T]], faults: FaultLog, *,
                retry_on: tuple[type[BaseException], ...] = (Exception,),
                backoff: Backoff | None = None, **fields) -> T:
    """Await ``op()`` until it returns, and return its result. A failure of a type in
    ``retry_on`` is counted in ``faults`` (logged once per distinct error, with ``fields``) and
    followed by the next ``backoff`` delay; any other exception, and cancellation, propagate."""
    backoff = backoff or Backoff()
    while True:
        try:
            result = await op()
        except retry_on as e:
            faults.failed(e, **fields)
            await asyncio.sleep(backoff.next())
            continue
        faults.recovered(**fields)
        return result


async def supervise(name: str, factory: Callable[[], Awaitable[None]], log, *,
                    backoff: Backoff | None = None) -> None:
    """Run ``await factory()`` until cancelled. If it raises (it should not: each loop handles
    its own faults), log ``task_failed`` once per distinct error, wait the next ``backoff`` delay
    and start it again; a run that lasted over a minute resets the backoff."""
    backoff = backoff or Backoff(1.0, 30.0)
    faults = FaultLog(log, "task_failed")
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await factory()
            return
        except Exception as e:
            faults.failed(e, task=name)
            if loop.time() - started > 60.0:
                backoff.reset()
            await asyncio.sleep(backoff.next())
            log.info("task_restarted", task=name)
