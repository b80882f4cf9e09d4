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

Waiters are otherwise served first come, first served; O(1) per call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter, deque
from collections.abc import AsyncIterator, Hashable, Iterator

__all__ = ["ApiSlots"]


class ApiSlots:
    """A FIFO semaphore of ``limit`` slots with per-key boosting (see the module)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.in_use = 0
        self._waiters: deque[tuple[Hashable, asyncio.Future[None]]] = deque()
        self._boosted: Counter[Hashable] = Counter()

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

    async def _acquire(self, key: Hashable) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        entry = (key, future)
        self._waiters.append(entry)
        try:
            await future  # the releaser handed its slot over (in_use unchanged)
        except BaseException:
            if future.done() and not future.cancelled():
                self._release()  # handed over just as we were cancelled: pass it on
            else:
                with contextlib.suppress(ValueError):
                    self._waiters.remove(entry)
            raise

    def _release(self) -> None:
        entry = self._next()
        if entry is None:
            self.in_use -= 1
            return
        entry[1].set_result(None)

    def _next(self) -> tuple[Hashable, asyncio.Future[None]] | None:
        """The boosted key's first waiter if any, else the first; skips cancelled ones."""
        if self._boosted:
            for entry in self._waiters:
                if entry[0] in self._boosted and not entry[1].done():
                    self._waiters.remove(entry)
                    return entry
        while self._waiters:
            entry = self._waiters.popleft()
            if not entry[1].done():
                return entry
        return None
