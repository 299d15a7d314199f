"""The DATA limits shared by intake workers (gateway.intake.shared_limits.SharedDataSlots):
``max_concurrent_data`` and its per-client limit counted over every worker on the shared table,
a slot freed by one worker taken by a transfer waiting in another, this worker's waiters served
in arrival order, a waiter that gives up holding nothing, a dead worker's transfers cleared.
Two "workers" here are two SharedDataSlots on one table (the multi-process locking of the
table is tests/gateway/intake/test_shared_limits.py's)."""
from __future__ import annotations

import asyncio
import contextlib

import pytest

from gateway.intake.shared_limits import SharedDataSlots, SharedTable, _key

A, B = "192.0.2.1", "2001:db8::7"


def pair(total: int, per_client: int) -> tuple[SharedTable, SharedDataSlots, SharedDataSlots]:
    t = SharedTable.create(2, max_connections=10)
    return t, SharedDataSlots(t, 1, total, per_client), SharedDataSlots(t, 2, total, per_client)


class Held:
    """``async with slots.hold(ip)`` in a task, held until ``release()``."""

    def __init__(self, slots: SharedDataSlots, ip: str):
        self.got, self.done = asyncio.Event(), asyncio.Event()
        self.task = asyncio.create_task(self._run(slots, ip))

    async def _run(self, slots, ip):
        async with slots.hold(ip):
            self.got.set()
            await self.done.wait()

    def release(self):
        self.done.set()


async def settle(s: float = 0.2):
    await asyncio.sleep(s)


def test_the_total_is_the_gateways_and_a_slot_freed_by_one_worker_goes_to_the_others_waiter():
    async def go():
        t, w1, w2 = pair(total=2, per_client=2)
        a, b = Held(w1, A), Held(w2, B)
        await settle()
        assert a.got.is_set() and b.got.is_set() and t.data_total() == 2
        c = Held(w1, B)                       # worker 1 has no slot of "its own" to wait for
        await settle()
        assert not c.got.is_set()
        b.release()                           # freed by worker 2
        await asyncio.wait_for(c.got.wait(), 1.0)
        assert t.data_total() == 2
        a.release(), c.release()
        await asyncio.gather(a.task, b.task, c.task)
        assert t.data_total() == 0
        assert t.find(_key(A), insert=False) is None and t.find(_key(B), insert=False) is None
    asyncio.run(go())


def test_the_per_client_limit_holds_over_both_workers_and_spares_other_clients():
    async def go():
        t, w1, w2 = pair(total=5, per_client=1)
        a = Held(w1, A)
        await settle()
        a2, b = Held(w2, A), Held(w2, B)      # A's second transfer, on the other worker
        await settle()
        assert a.got.is_set() and b.got.is_set() and not a2.got.is_set()
        a.release()
        await asyncio.wait_for(a2.got.wait(), 1.0)
        a2.release(), b.release()
        await asyncio.gather(a.task, a2.task, b.task)
        assert t.data_total() == 0
    asyncio.run(go())


def test_a_workers_waiters_are_served_in_arrival_order():
    async def go():
        t, w1, _ = pair(total=1, per_client=5)
        first = Held(w1, A)
        await settle(0.05)
        order, waiters = [], []
        for ip in (B, A, B):
            h = Held(w1, ip)
            waiters.append(h)
            await asyncio.sleep(0.01)
        first.release()
        for k, h in enumerate(waiters):
            await asyncio.wait_for(h.got.wait(), 2)
            order.append(k)
            assert sum(w.got.is_set() for w in waiters) == k + 1     # one at a time
            h.release()
            await h.task
        assert order == [0, 1, 2] and t.data_total() == 0
    asyncio.run(go())


def test_a_waiter_that_gives_up_holds_nothing_and_the_next_one_goes():
    async def go():
        t, w1, _ = pair(total=1, per_client=5)
        first = Held(w1, A)
        await settle(0.05)
        quitter, next_ = Held(w1, B), Held(w1, B)
        await settle(0.05)
        quitter.task.cancel()                 # the client went away while waiting
        with contextlib.suppress(asyncio.CancelledError):
            await quitter.task
        first.release()
        await asyncio.wait_for(next_.got.wait(), 2)
        assert t.data_total() == 1
        next_.release()
        await asyncio.gather(first.task, next_.task)
        assert t.data_total() == 0
    asyncio.run(go())


def test_a_dead_workers_transfers_are_cleared():
    async def go():
        t, w1, w2 = pair(total=2, per_client=2)
        a, a2 = Held(w1, A), Held(w1, A)
        await settle()
        late = Held(w2, A)
        await settle()
        assert not late.got.is_set()
        t.clear_worker(1)                     # worker 1 died with its two transfers
        await asyncio.wait_for(late.got.wait(), 1.0)
        assert t.data_total() == 1
        for h in (a, a2):
            h.task.cancel()
        late.release()
        await late.task
    asyncio.run(go())


@pytest.mark.parametrize("workers", [1, 3])
def test_session_and_data_counts_do_not_overlap(workers):
    """The DATA columns sit after the session columns: changing one leaves the other."""
    t = SharedTable.create(workers, max_connections=4)
    with t:
        off = t.find(_key(A), insert=True)
        t.add_client(off, workers, 2)
        t.add_total(workers, 2)
        t.add_client_data(off, 1, 1)
        t.add_data_total(1, 1)
        assert (t.total(), t.client_count(off), t.data_total(), t.client_data(off)) == (2, 2, 1, 1)
        t.add_client(off, workers, -2)        # the sessions went, the transfer keeps the entry
        assert t.find(_key(A), insert=False) == off
        t.add_client_data(off, 1, -1)
        assert t.find(_key(A), insert=False) is None
