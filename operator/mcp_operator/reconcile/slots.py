"""In-flight API calls of all workers together, with priority for traffic decisions.

Why: routine writes (reconciles applying children, status refreshes) queue here so that at
most ``limit`` are in flight (more would queue inside the HTTP client's pool, see
``API_CONCURRENCY``). Writes that carry a traffic decision -- a failover intent or its
completion, a gate change -- must not wait behind them: at 200 servers reconciling at once
that queue is tens of seconds long. So:

* **urgent** calls never wait here (the HTTP pool holds at most ``limit`` routine calls, so
  an urgent one waits for one connection at most, not for the queue);
* **priority inheritance**: an urgent status write must take its server's worker lock, and a
  reconcile of that same server may hold it while its routine calls wait in this queue.
  While such a write waits, the server is *boosted*: its routine waiters are served before
  everyone else's, so the lock is released after its own calls, not after the whole queue.

* **oldest reconcile first**: otherwise a waiter's place is the start of its worker's
  current reconcile (:meth:`ApiSlots.reconciling`; the arrival time for other calls). A
  reconcile makes several calls one after another; first come, first served put each of them
  at the back of a queue of every other server's, so at 1,000 servers reconciling at once
  every server advanced one call per pass through the queue and all became Ready together
  at the very end. Oldest first, they finish one after another in the same total time.

O(log n) per call.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import time
from collections import Counter
from collections.abc import AsyncIterator, Hashable, Iterator
from dataclasses import dataclass, field

__all__ = ["ApiSlots"]


class ApiSlots:
    """A FIFO semaphore of ``limit`` slots with per-key boosting (see the module)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: list[_Waiter] = []  # a heap: (place, arrival, key, future)
        self._boosted: Counter[Hashable] = Counter()
        self._since: dict[Hashable, float] = {}
        self._arrivals = itertools.count()

    @contextlib.asynccontextmanager
    async def slot(self, key: Hashable = None, urgent: bool = False) -> AsyncIterator[None]:
        """Hold one slot for a routine call of ``key``'s worker; ``urgent``: do not wait."""
        if urgent:
            yield
            return
        await self._acquire(key)
        try:
            yield
        finally:
            self._release()

    async def __aenter__(self) -> None:
        """``async with slots:`` -- a routine call of no particular worker."""
        await self._acquire(None)

    async def __aexit__(self, *exc: object) -> None:
        self._release()

    @contextlib.contextmanager
    def boosted(self, key: Hashable) -> Iterator[None]:
        """While inside, ``key``'s routine waiters go first (nests; always undone)."""
        self._boosted[key] += 1
        try:
            yield
        finally:
            self._boosted[key] -= 1
            if self._boosted[key] <= 0:
                del self._boosted[key]

    @contextlib.contextmanager
    def reconciling(self, key: Hashable) -> Iterator[None]:
        """While inside, ``key``'s routine calls keep the place of this reconcile's start."""
        if key in self._since:  # nested: the outer reconcile's place holds
            yield
            return
        self._since[key] = time.monotonic()
        try:
            yield
        finally:
            del self._since[key]

    async def _acquire(self, key: Hashable) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        place = self._since.get(key, time.monotonic())
        entry = _Waiter(place, next(self._arrivals), key, future)
        heapq.heappush(self._waiters, entry)
        try:
            await future  # the releaser handed its slot over (in_use unchanged)
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            else:
                self._drop(entry)
            raise

    def _drop(self, entry: _Waiter) -> None:
        with contextlib.suppress(ValueError):
            self._waiters.remove(entry)
            heapq.heapify(self._waiters)

    def _release(self) -> None:
        entry = self._next()
        if entry is None:
            self.in_use -= 1
            return
        entry.future.set_result(None)

    def _next(self) -> _Waiter | None:
        """The boosted key's first waiter if any, else the first; skips cancelled ones."""
        if self._boosted:
            boosted = [w for w in self._waiters if w.key in self._boosted and not w.future.done()]
            if boosted:
                entry = min(boosted)
                self._drop(entry)
                return entry
        while self._waiters:
            entry = heapq.heappop(self._waiters)
            if not entry.future.done():
                return entry
        return None


@dataclass(order=True)
class _Waiter:
    """Ordered by (place, arrival); keys and futures are never compared."""

    place: float
    arrival: int
    key: Hashable = field(compare=False)
    future: asyncio.Future[None] = field(compare=False)
