"""gateway/retry.py: log once per distinct error, back off, retry; supervise() restarts a task."""
from __future__ import annotations

import asyncio
import io

import pytest

from gateway.logs import make_logger
from gateway.retry import Backoff, FaultLog, retry, supervise
from spool import SpoolError


def logger():
    out = io.StringIO()
    return make_logger("info", stream=out), out


def test_backoff_doubles_up_to_its_cap_and_resets():
    b = Backoff(0.5, 3.0)
    assert [b.next() for _ in range(5)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    b.reset()
    assert b.next() == 0.5
    with pytest.raises(ValueError):
        Backoff(0, 1)


def test_each_distinct_error_is_logged_once_until_recovery():
    log, out = logger()
    faults = FaultLog(log, "spool_record_failed")
    full = SpoolError("spool commit failed: database or disk is full", full=True)
    assert faults.failed(full) is True
    assert [faults.failed(full) for _ in range(100)] == [False] * 100
    assert faults.failed(SpoolError("spool commit failed: disk I/O error")) is True
    assert faults.failures == 102
    faults.recovered()
    faults.recovered()                                 # nothing to report the second time
    text = out.getvalue()
    assert text.count("event='spool_record_failed'") == 2
    assert text.count("event='spool_record_failed_recovered'") == 1
    assert faults.failed(full) is True                 # worth a line again after a recovery


async def test_retry_retries_only_the_given_errors():
    log, _out = logger()
    calls = []

    async def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise SpoolError("database or disk is full", full=True)
        return "ok"

    assert await retry(flaky, FaultLog(log, "x"), retry_on=(SpoolError,),
                       backoff=Backoff(0.01, 0.02)) == "ok"
    assert len(calls) == 3

    async def broken():
        raise KeyError("not transient")

    with pytest.raises(KeyError):
        await retry(broken, FaultLog(log, "x"), retry_on=(SpoolError,))


async def test_supervise_restarts_a_task_that_raises():
    log, out = logger()
    runs = []

    async def task():
        runs.append(1)
        if len(runs) < 3:
            raise RuntimeError("boom")
        await asyncio.sleep(3600)

    t = asyncio.create_task(supervise("demo", task, log, backoff=Backoff(0.01, 0.02)))
    for _ in range(100):
        if len(runs) >= 3:
            break
        await asyncio.sleep(0.01)
    t.cancel()
    with pytest.raises(asyncio.CancelledError):
        await t
    assert len(runs) == 3
    assert out.getvalue().count("event='task_failed'") == 1     # the same error, logged once
