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
