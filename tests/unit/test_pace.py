"""Pacing as a closed loop: a fleet of probe rounds on a CPU of a given capacity, each
round's lateness fed to the :class:`Pacer`, whose stretch schedules the next rounds on the
same grid the health loop uses (:func:`next_slot`).

What a user would notice without it (``bench/results/steady-1000-waves-2026-12-01.txt``):
an operator given less CPU than its rounds need runs every round seconds late, its probes
time out on its own lag, and fleet-wide doubt freezes every gate."""

from __future__ import annotations

import heapq
import logging
import zlib

import pytest

from mcp_operator import metrics
from mcp_operator.health.pace import Pace, Pacer, PaceSettings, decide, next_slot

INTERVAL = 2.0
Round = tuple[float, float, float]  # start, lateness, stretch after it


def simulate(
    servers: int, cost_s: float, capacity: float, seconds: float, pacer: Pacer | None
) -> list[Round]:
    """Rounds in due order on one CPU of ``capacity`` cores; each costs ``cost_s`` of CPU.
    Scheduling mirrors ``HealthLoop.run``: the next round is the server's next slot on the
    grid of its (stretched) interval, at least half an interval after the last one."""

    def phase(i: int, period: float) -> float:
        return zlib.crc32(f"ns/s{i}".encode()) % 1000 / 1000 * period

    due = [(next_slot(0.0, phase(i, INTERVAL), INTERVAL), i) for i in range(servers)]
    heapq.heapify(due)
    free_at = 0.0
    rounds = []
    while due and due[0][0] < seconds:
        at, server = heapq.heappop(due)
        start = max(at, free_at)
        free_at = start + cost_s / capacity
        if pacer is not None:
            pacer.observe(("ns", f"s{server}"), start - at, start)
        stretch = pacer.stretch if pacer is not None else 1.0
        rounds.append((start, start - at, stretch))
        period = INTERVAL * stretch
        after = max(at + period / 2, free_at)
        heapq.heappush(due, (next_slot(after, phase(server, period), period), server))
    return rounds


def late_share(rounds: list[Round], after: float) -> float:
    tail = [late for start, late, _ in rounds if start >= after]
    return sum(1 for late in tail if late > 0.5) / len(tail)


def test_a_starved_fleet_stretches_until_its_rounds_are_on_time() -> None:
    # 1,000 servers at 2.5 ms a round need 1.25 cores; the operator gets 0.8.
    unpaced = simulate(1000, 0.0025, 0.8, 300, None)
    assert late_share(unpaced, after=100) > 0.9  # without pacing: nearly every round late
    pacer = Pacer()
    rounds = simulate(1000, 0.0025, 0.8, 300, pacer)
    assert late_share(rounds, after=200) <= 0.1
    assert 1.25 / 0.8 <= pacer.stretch <= 4.0  # enough to fit, never past the cap


def test_a_badly_starved_fleet_is_spread_out_again_and_fits_under_the_cap() -> None:
    """2.5 cores of rounds on one: x4 fits (0.625 cores), and the grid spreads the rounds
    that fell behind instead of keeping them bunched."""
    pacer = Pacer()
    rounds = simulate(1000, 0.005, 1.0, 600, pacer)
    assert late_share(rounds, after=400) <= 0.1
    assert pacer.stretch <= 4.0


def test_the_stretch_decays_to_one_when_the_cpu_comes_back() -> None:
    pacer = Pacer()
    simulate(1000, 0.0025, 0.8, 300, pacer)
    assert pacer.stretch > 1.5
    rounds = simulate(1000, 0.0025, 2.0, 400, pacer)
    assert pacer.stretch == 1.0  # held 120 s above the stretch found late, then decayed
    assert late_share(rounds, after=300) == 0.0


def test_a_grown_stretch_holds_above_the_one_found_late() -> None:
    settings = PaceSettings()
    grown = decide(Pace(2.0), rounds=3000, late=900, servers=1000, now=0, settings=settings)
    assert grown == Pace(2.5, floor=2.0, floor_until=120.0)
    quiet = {"rounds": 2000, "late": 0, "servers": 1000, "settings": settings}
    assert decide(grown, now=60, **quiet).stretch == 2.5  # 2.0 was late: stays above it
    assert decide(grown, now=130, **quiet).stretch == 2.25  # the hold is over: decays


def test_a_fleet_with_enough_cpu_is_never_stretched() -> None:
    pacer = Pacer()
    rounds = simulate(1000, 0.0025, 1.6, 300, pacer)
    assert pacer.stretch == 1.0 and max(stretch for *_, stretch in rounds) == 1.0


def test_a_passing_stall_is_not_a_stretch() -> None:
    """One stall (a GC pause, a burst of reconciles) makes a few rounds late: under the
    share, nothing changes."""
    pacer = Pacer()
    for i in range(500):
        pacer.observe(("ns", f"s{i % 100}"), 2.0 if i in (100, 101, 102) else 0.0, i * 0.04)
    assert pacer.stretch == 1.0


def test_a_small_fleet_on_a_busy_node_is_never_stretched_and_unwinds() -> None:
    """20 servers whose rounds are all late because something else holds the CPU: their
    own rounds are not the load, and stretching would only slow their failover. A stretch
    left from a larger fleet decays."""
    settings = PaceSettings()
    assert decide(Pace(), rounds=100, late=100, servers=20, now=0, settings=settings) == Pace()
    held = Pace(2.0, floor=1.6, floor_until=100.0)
    assert decide(held, rounds=100, late=8, servers=20, now=0, settings=settings).stretch < 2
    pacer = Pacer()
    for i in range(2000):  # 10 rounds/s for 200 s, every one 1 s late
        pacer.observe(("ns", f"s{i % 20}"), 1.0, i * 0.1)
    assert pacer.stretch == 1.0


def test_a_stretched_fleet_still_counts_as_large() -> None:
    """At x4, 100 servers run only 125 rounds per window: they are counted as servers,
    not rounds, so a fleet that needs more than x2 gets it."""
    settings = PaceSettings()
    grown = decide(Pace(2.0), rounds=125, late=125, servers=100, now=0, settings=settings)
    assert grown.stretch == 2.5


def test_slots_are_on_the_servers_grid_and_always_ahead() -> None:
    assert next_slot(10.0, 0.5, 2.0) == pytest.approx(10.5)
    assert next_slot(10.5, 0.5, 2.0) == pytest.approx(12.5)  # never the same instant
    assert next_slot(11.9, 0.5, 4.0) == pytest.approx(12.5)


def test_the_pacer_reports_its_stretch_and_why(caplog: pytest.LogCaptureFixture) -> None:
    pacer = Pacer()
    with caplog.at_level(logging.INFO, logger="mcp_operator.health.pace"):
        for i in range(601):  # 60 rounds/s of 120 servers, all late, for 10 s
            pacer.observe(("ns", f"s{i % 120}"), 1.0, i / 60)
    assert pacer.stretch == 1.25
    assert metrics.PROBE_INTERVAL_STRETCH._value.get() == 1.25
    assert "stretched x1.25" in caplog.text and "short of CPU" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mcp_operator.health.pace"):
        for i in range(601, 60 * 200):  # on time: held 120 s, then decays
            pacer.observe(("ns", f"s{i % 120}"), 0.0, i / 60)
    assert pacer.stretch == 1.0 and "on time again" in caplog.text
