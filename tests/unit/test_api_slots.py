"""Writes that carry a traffic decision go ahead of routine writes (issue 9, deliverable 3).

A user notices this as failover latency while the operator is busy: 200 servers reconciling
at once queue thousands of routine calls; a failover intent must not wait behind them, nor
behind its own server's reconcile holding the worker lock (priority inversion)."""

from __future__ import annotations

import asyncio

from mcp_operator.reconcile.slots import ApiSlots


async def _saturated(slots: ApiSlots, order: list[str], release: asyncio.Event) -> list[object]:
    """Fill every slot with a call blocked on ``release``; then queue 50 routine calls."""

    async def call(name: str, key: object, urgent: bool = False) -> None:
        async with slots.slot(key, urgent=urgent):
            order.append(name)
            if name.startswith("hold"):
                await release.wait()
            await asyncio.sleep(0)

    tasks: list[object] = [
        asyncio.create_task(call(f"hold{i}", "other")) for i in range(slots.limit)
    ]
    await asyncio.sleep(0)
    tasks += [asyncio.create_task(call(f"routine{i}", f"s{i}")) for i in range(50)]
    await asyncio.sleep(0)
    return tasks


def test_an_urgent_write_does_not_wait_behind_a_full_queue() -> None:
    async def main() -> list[str]:
        slots, order, release = ApiSlots(4), [], asyncio.Event()
        tasks = await _saturated(slots, order, release)
        async with slots.slot("failing", urgent=True):
            order.append("failover-intent")
        release.set()
        await asyncio.gather(*tasks)  # type: ignore[arg-type]
        assert slots.in_use == 0
        return order

    order = asyncio.run(main())
    assert order.index("failover-intent") == 4  # right after the 4 calls already in flight
    assert order[5:] == [f"routine{i}" for i in range(50)]  # the rest stays FIFO


def test_a_boosted_servers_routine_calls_go_first() -> None:
    """The failing server's reconcile holds its worker lock and waits for a slot at the end of
    the queue; its urgent status write waits for that lock. Boosted, the reconcile's call is
    served first, so the failover write lands after one call, not after the queue."""

    async def main() -> list[str]:
        slots, order, release = ApiSlots(4), [], asyncio.Event()
        lock = asyncio.Lock()
        tasks = await _saturated(slots, order, release)

        async def reconcile() -> None:
            async with lock, slots.slot("failing"):
                order.append("reconcile-of-failing")

        async def failover_write() -> None:
            with slots.boosted("failing"):
                async with lock, slots.slot("failing", urgent=True):
                    order.append("failover-intent")

        rec = asyncio.create_task(reconcile())
        await asyncio.sleep(0)
        write = asyncio.create_task(failover_write())
        await asyncio.sleep(0)
        release.set()
        await asyncio.gather(rec, write, *tasks)  # type: ignore[arg-type]
        assert slots.in_use == 0 and not slots._boosted
        return order

    order = asyncio.run(main())
    assert order.index("reconcile-of-failing") == 4
    # The 4 slots freed with it went on to the queue's head; the write lands right after.
    assert order.index("failover-intent") < order.index("routine4"), order


def test_a_cancelled_waiter_neither_leaks_nor_loses_a_slot() -> None:
    async def main() -> None:
        slots = ApiSlots(1)
        async with slots.slot("a"):
            waiter = asyncio.create_task(slots.slot("b").__aenter__())
            await asyncio.sleep(0)
            waiter.cancel()
            await asyncio.sleep(0)
        assert slots.in_use == 0
        async with slots.slot("c"):
            assert slots.in_use == 1

    asyncio.run(main())


def test_the_oldest_reconcile_is_served_first_so_servers_finish_one_after_another() -> None:
    """Three servers reconcile at once, each making 3 calls one after another, through one
    slot that another call holds at first. First come, first served interleaves them
    (a0 b0 c0 a1 b1 c1 a2 b2 c2: all finish at the end). Oldest reconcile first, a call that
    comes back finds its place at the front: a finishes 5th, b 6th, and c starts only then."""

    async def main() -> list[str]:
        slots, order, release = ApiSlots(1), [], asyncio.Event()

        async def hold() -> None:
            async with slots.slot("other"):
                await release.wait()

        async def reconcile(name: str) -> None:
            with slots.reconciling(name):
                for step in range(3):
                    async with slots.slot(name):
                        order.append(f"{name}{step}")
                        await asyncio.sleep(0)

        tasks = [asyncio.create_task(hold())]
        await asyncio.sleep(0)
        for name in "abc":
            tasks.append(asyncio.create_task(reconcile(name)))
            await asyncio.sleep(0.002)  # a started first, then b, then c
        release.set()
        await asyncio.gather(*tasks)
        assert slots.in_use == 0
        return order

    order = asyncio.run(main())
    assert order == ["a0", "b0", "a1", "b1", "a2", "b2", "c0", "c1", "c2"], order
