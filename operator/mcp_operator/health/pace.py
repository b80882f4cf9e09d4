"""Pacing: an operator short of CPU probes less often instead of timing out.

Why: one process runs every server's probe rounds. When it gets less CPU than the rounds
need (1,000 servers on a node shared with a busy control plane), every round starts late,
its probes time out on the event loop's own lag, timed-out connections are closed and the
next probe pays a new connection (more CPU), and the fleet-wide doubt then freezes every
gate: new pods are held out until the load passes. Measured: 1,114,606 connections for
1,060,133 requests in such a run (``bench/results/steady-1000-waves-2026-12-01.txt``).

So the fleet's rounds are paced together, as TCP paces a congested link: over each window
of ``window_s`` the share of rounds that started more than ``late_s`` late is counted; above
``late_share`` the interval is stretched by ``grow`` (up to ``max_stretch``), at or below
half of it the stretch decays by ``shrink`` back towards 1. Probing less often costs
detection time (a 2 s interval at stretch 2 is a 4 s one), which the operator reports (the
``mcp_operator_probe_interval_stretch`` gauge); timing out costs correctness.

Pure: no clock of its own (``now`` is passed in); the loop feeds every round's lateness.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from mcp_operator import metrics

log = logging.getLogger(__name__)

__all__ = ["Pace", "PaceSettings", "Pacer", "observe"]


@dataclass(frozen=True)
class PaceSettings:
    window_s: float = 10.0
    late_s: float = 0.5
    late_share: float = 0.1
    grow: float = 1.25
    shrink: float = 0.9
    max_stretch: float = 4.0
    min_rounds: int = 250
    """A window with fewer rounds (under ~50 servers at 2 s) never stretches: a small
    fleet's own rounds cost too little CPU to be why they are late (a busy node is), and
    probing less often would only slow its failover."""


@dataclass(frozen=True)
class Pace:
    """The fleet's stretch of every server's interval, and the window being counted."""

    stretch: float = 1.0
    since: float | None = None
    rounds: int = 0
    late: int = 0


def observe(pace: Pace, late_s: float, now: float, settings: PaceSettings) -> Pace:
    """Count one round (``late_s``: how late it started); at the end of a window, decide."""
    if pace.since is None:
        pace = replace(pace, since=now)
    pace = replace(pace, rounds=pace.rounds + 1, late=pace.late + int(late_s > settings.late_s))
    assert pace.since is not None
    if now - pace.since < settings.window_s:
        return pace
    share = pace.late / pace.rounds
    stretch = pace.stretch
    if share > settings.late_share and pace.rounds >= settings.min_rounds:
        stretch = min(settings.max_stretch, stretch * settings.grow)
    elif share <= settings.late_share / 2:
        stretch = max(1.0, stretch * settings.shrink)
    return Pace(stretch=stretch, since=now)


class Pacer:
    """The fleet's one pace, shared by every health loop; exports the stretch on change."""

    def __init__(self, settings: PaceSettings | None = None) -> None:
        self.settings = settings or PaceSettings()
        self.pace = Pace()
        metrics.PROBE_INTERVAL_STRETCH.set(1.0)

    @property
    def stretch(self) -> float:
        return self.pace.stretch

    def observe(self, late_s: float, now: float) -> None:
        before = self.pace
        self.pace = observe(before, late_s, now, self.settings)
        if self.pace.stretch == before.stretch:
            return
        metrics.PROBE_INTERVAL_STRETCH.set(self.pace.stretch)
        if self.pace.stretch > before.stretch:
            log.warning(
                "%d of %d probe rounds started over %.1fs late: the operator is short of CPU; "
                "every probe interval is now stretched x%.2f (detection slows as much)",
                before.late + int(late_s > self.settings.late_s),
                before.rounds + 1,
                self.settings.late_s,
                self.pace.stretch,
            )
        elif self.pace.stretch == 1.0:
            log.info("probe rounds are on time again: probe intervals as specified")
