"""Pacing as a closed loop: a fleet of probe rounds on a CPU of a given capacity, each
round's lateness fed to :func:`observe`, whose stretch schedules the next rounds.

What a user would notice without it (``bench/results/steady-1000-waves-2026-12-01.txt``):
an operator given less CPU than its rounds need runs every round seconds late, its probes
time out on its own lag, and fleet-wide doubt freezes every gate."""

from __future__ import annotations

import heapq
import logging

import pytest

from mcp_operator import metrics
from mcp_operator.health.pace import Pace, Pacer, PaceSettings, observe

INTERVAL = 2.0


def simulate(
    servers: int, cost_s: float, capacity: float, seconds: float, pace: Pace, paced: bool = True
) -> tuple[Pace, list[tuple[float, float, float]]]:
    """Rounds in due order on one CPU of ``capacity`` cores; each costs ``cost_s`` of CPU.
    Scheduling mirrors the health loop: next start = max(start + interval * stretch, now).
    Returns the pace and (start, lateness, stretch) of every round."""
    settings = PaceSettings()
    due = [(INTERVAL * i / servers, i) for i in range(servers)]
    heapq.heapify(due)
    free_at = 0.0
    rounds = []
    while due and due[0][0] < seconds:
        at, server = heapq.heappop(due)
        start = max(at, free_at)
        free_at = start + cost_s / capacity
        if paced:
            pace = observe(pace, start - at, start, settings)
        rounds.append((start, start - at, pace.stretch))
        heapq.heappush(due, (max(at + INTERVAL * pace.stretch, free_at), server))
    return pace, rounds


def late_share(rounds: list[tuple[float, float, float]], after: float) -> float:
    tail = [late for start, late, _ in rounds if start >= after]
    return sum(1 for late in tail if late > 0.5) / len(tail)


def test_a_starved_fleet_stretches_until_its_rounds_are_on_time() -> None:
    # 1,000 servers at 2.5 ms a round need 1.25 cores; the operator gets 0.8.
    _, unpaced = simulate(1000, 0.0025, 0.8, 300, Pace(), paced=False)
    assert late_share(unpaced, after=100) > 0.9  # without pacing: nearly every round late
    pace, rounds = simulate(1000, 0.0025, 0.8, 300, Pace())
    assert late_share(rounds, after=200) <= 0.1
    assert 1.25 / 0.8 <= pace.stretch <= 4.0  # enough to fit, never past the cap


def test_the_stretch_decays_to_one_when_the_cpu_comes_back() -> None:
    pace, _ = simulate(1000, 0.0025, 0.8, 300, Pace())
    assert pace.stretch > 1.5
    pace, rounds = simulate(1000, 0.0025, 2.0, 400, pace)
    assert pace.stretch == 1.0
    assert late_share(rounds, after=300) == 0.0


def test_a_fleet_with_enough_cpu_is_never_stretched() -> None:
    pace, rounds = simulate(1000, 0.0025, 1.6, 300, Pace())
    assert pace.stretch == 1.0 and max(stretch for *_, stretch in rounds) == 1.0


def test_a_passing_stall_is_not_a_stretch() -> None:
    """One stall (a GC pause, a burst of reconciles) makes a few rounds late: under the
    share, nothing changes."""
    settings = PaceSettings()
    pace = Pace()
    for i in range(500):
        pace = observe(pace, 2.0 if i in (100, 101, 102) else 0.0, i * 0.04, settings)
    assert pace.stretch == 1.0


def test_a_small_fleet_on_a_busy_node_is_never_stretched() -> None:
    """20 servers whose rounds are all late because something else holds the CPU: their
    own rounds are not the load, and stretching would only slow their failover."""
    settings = PaceSettings()
    pace = Pace()
    for i in range(2000):  # 10 rounds/s for 200 s, every one 1 s late
        pace = observe(pace, 1.0, i * 0.1, settings)
    assert pace.stretch == 1.0


def test_the_pacer_reports_its_stretch_and_why(caplog: pytest.LogCaptureFixture) -> None:
    pacer = Pacer()
    with caplog.at_level(logging.INFO, logger="mcp_operator.health.pace"):
        for i in range(601):  # 60 rounds/s, all late, for 10 s
            pacer.observe(1.0, i / 60)
    assert pacer.stretch == 1.25
    assert metrics.PROBE_INTERVAL_STRETCH._value.get() == 1.25
    assert "stretched x1.25" in caplog.text and "short of CPU" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="mcp_operator.health.pace"):
        for i in range(601, 3000):
            pacer.observe(0.0, i / 60)
    assert pacer.stretch == 1.0 and "on time again" in caplog.text
