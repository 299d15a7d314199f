"""gateway.delivery.budget: the delivery byte budget, pure asyncio (no I/O): bytes held never
exceed the limit, an item larger than the limit runs alone and is not starved, waiters are served
in order, and every exit (return, exception, cancellation while holding or while waiting)
gives the bytes back."""
from __future__ import annotations

import asyncio

import pytest

from gateway.delivery.budget import ByteBudget


def run(coro):
    return asyncio.run(coro)


async def _workers(budget: ByteBudget, sizes: list[int], log: list):
    """Each size holds the budget for a few loop turns; log (held, running) at each entry."""
    running = {"n": 0, "max": 0}

    async def one(size):
        async with budget.hold(size):
            running["n"] += 1
            running["max"] = max(running["max"], running["n"])
            log.append((size, budget.held, running["n"]))
            for _ in range(3):
                await asyncio.sleep(0)
            running["n"] -= 1

    await asyncio.gather(*(one(s) for s in sizes))
    return running["max"]


def test_concurrency_is_bounded_by_bytes():
    budget, log = ByteBudget(1000), []
    top = run(_workers(budget, [300] * 10, log))
    assert top == 3                                   # 3 × 300 fit in 1000, a 4th does not
    assert all(held <= 1000 for _s, held, _n in log)
    assert len(log) == 10 and budget.held == 0 and budget.waiting == 0


def test_an_oversize_item_passes_alone_and_is_not_starved():
    budget, log = ByteBudget(1000), []
    top = run(_workers(budget, [400, 400, 5000, 400, 400], log))
    big = [entry for entry in log if entry[0] == 5000]
    assert big == [(5000, 1000, 1)]                   # charged the whole limit, alone
    assert top == 2
    order = [s for s, _h, _n in log]
    assert order.index(5000) < order.index(400, 2)    # the later small ones waited behind it
    assert budget.held == 0


def test_release_on_exception():
    budget = ByteBudget(100)

    async def main():
        with pytest.raises(RuntimeError):
            async with budget.hold(80):
                raise RuntimeError("delivery failed")
        assert budget.held == 0
        async with budget.hold(100):                  # the whole budget is free again
            assert budget.held == 100

    run(main())
    assert budget.held == 0


def test_release_on_cancel_while_holding_and_while_waiting():
    budget = ByteBudget(100)

    async def main():
        inside = asyncio.Event()

        async def holder():
            async with budget.hold(70):
                inside.set()
                await asyncio.sleep(3600)

        async def waiter():
            async with budget.hold(70):
                await asyncio.sleep(3600)

        t1 = asyncio.create_task(holder())
        await inside.wait()
        t2 = asyncio.create_task(waiter())
        t3 = asyncio.create_task(waiter())
        await asyncio.sleep(0)
        assert budget.held == 70 and budget.waiting == 2
        t2.cancel()                                   # cancelled while waiting: holds nothing
        await asyncio.gather(t2, return_exceptions=True)
        assert budget.held == 70 and budget.waiting == 1
        t1.cancel()                                   # cancelled while holding (drain)
        await asyncio.gather(t1, return_exceptions=True)
        await asyncio.sleep(0)
        assert budget.held == 70 and budget.waiting == 0   # t3 got the bytes t1 gave back
        t3.cancel()
        await asyncio.gather(t3, return_exceptions=True)
        assert budget.held == 0

    run(main())


def test_cancel_right_after_the_grant_gives_the_bytes_back():
    budget = ByteBudget(100)

    async def main():
        first = await budget.acquire(100)
        t = asyncio.create_task(budget.acquire(50))
        await asyncio.sleep(0)
        budget.release(first)                         # grants t's future ...
        t.cancel()                                    # ... and t is cancelled before it runs
        await asyncio.gather(t, return_exceptions=True)
        assert budget.held == 0 and budget.waiting == 0

    run(main())


def test_a_cancelled_head_does_not_block_the_ones_behind_it():
    budget = ByteBudget(100)

    async def main():
        first = await budget.acquire(60)
        big = asyncio.create_task(budget.acquire(100))   # head: waits for everything
        small = asyncio.create_task(budget.acquire(30))  # fits, but queued behind the head
        await asyncio.sleep(0)
        assert budget.waiting == 2
        big.cancel()
        await asyncio.gather(big, return_exceptions=True)
        assert await asyncio.wait_for(small, 5) == 30
        assert budget.held == 90
        budget.release(first)
        budget.release(30)
        assert budget.held == 0

    run(main())


def test_limit_must_be_positive():
    with pytest.raises(ValueError):
        ByteBudget(0)
