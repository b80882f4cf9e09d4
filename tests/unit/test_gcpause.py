"""The collector's time is counted per generation, and the operator's thresholds apply."""

from __future__ import annotations

import gc

from mcp_operator import gcpause, metrics


def _seconds(generation: str) -> float:
    return metrics.GC_SECONDS.labels(generation)._value.get()


def test_a_full_collection_is_counted_once_however_often_measuring_is_asked_for() -> None:
    gcpause.measure()
    gcpause.measure()
    assert gc.callbacks.count(gcpause._on_gc) == 1
    garbage: list[object] = []
    for _ in range(20_000):  # enough cycles for the collection to take measurable time
        a: list[object] = []
        a.append(a)
        garbage.append(a)
    del garbage, a
    before = _seconds("2")
    gc.collect()
    assert _seconds("2") > before


def test_tune_sets_the_thresholds_and_leaves_collection_on() -> None:
    saved = gc.get_threshold()
    try:
        gcpause.tune()
        assert gc.get_threshold() == gcpause.THRESHOLDS
        assert gc.isenabled()
    finally:
        gc.set_threshold(*saved)


def test_a_collection_during_a_scrape_does_not_deadlock_the_scraper() -> None:
    """A scrape holds the metric's lock while it copies the children (an allocation, which
    can start a collection in the same thread): the callback must not take that lock."""
    import threading

    done = threading.Event()

    def scrape_that_collects() -> None:
        with metrics.GC_SECONDS._lock:
            gcpause._on_gc("start", {"generation": 0})
            gcpause._on_gc("stop", {"generation": 0})
        done.set()

    thread = threading.Thread(target=scrape_that_collects, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert done.is_set()
