"""Python's cyclic garbage collector, measured and kept off the probe path.

Why it matters here: the operator holds every child it watches (hundreds of MB at 1,000
servers) and allocates short-lived objects on every probe (~2,000 a second). Each full
collection walks the whole heap while the event loop stands still, so it is CPU the probes
do not get and lateness every round in flight sees. Its time is exported as
``mcp_operator_gc_seconds_total`` so a late fleet can be told apart from a slow one.
"""

from __future__ import annotations

import gc
import time
from typing import Any

from mcp_operator import metrics

_started: list[float] = []
# Bound once: the callback runs inside any allocation, also one made while the metric's
# own lock is held (a scrape copying its children). ``labels()`` takes that lock, so calling
# it here could deadlock the scraping thread and leave automatic collection off for good;
# a bound child's ``inc`` takes only the child's lock, which guards no allocation.
_BY_GENERATION = tuple(metrics.GC_SECONDS.labels(str(g)) for g in range(3))


def _on_gc(phase: str, info: dict[str, Any]) -> None:
    if phase == "start":
        _started[:] = [time.perf_counter()]
    elif _started:
        generation = min(2, max(0, int(info.get("generation", 2))))
        _BY_GENERATION[generation].inc(time.perf_counter() - _started.pop())


def measure() -> None:
    """Count the collector's time per generation (idempotent)."""
    if _on_gc not in gc.callbacks:
        gc.callbacks.append(_on_gc)


# Collect the young generation every 7,000 net allocations (not 700): a probe's objects
# mostly die by reference counting within its round, so fewer of them are ever scanned or
# promoted. Full collections (every 10 middle ones, as by default) thereby become about 10
# times rarer: each walks the whole heap (~0.15 s at 300 servers). Rarer still would keep
# the cyclic garbage of failing probes (exception, traceback, frames) around for longer.
THRESHOLDS: tuple[int, int, int] = (7_000, 10, 10)


def tune() -> None:
    """Set :data:`THRESHOLDS` (the operator's process only; tests keep Python's)."""
    gc.set_threshold(*THRESHOLDS)
