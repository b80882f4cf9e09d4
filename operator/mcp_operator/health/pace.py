"""Pacing: an operator short of CPU probes less often instead of timing out.

Why: one process runs every server's probe rounds. When it gets less CPU than the rounds
need (1,000 servers on a node shared with a busy control plane), every round starts late,
its probes time out on the event loop's own lag, timed-out connections are closed and the
next probe pays a new connection (more CPU), and the fleet-wide doubt then freezes every
gate: new pods are held out until the load passes. Measured: 1,114,606 connections for
1,060,133 requests in such a run (``bench/results/steady-1000-waves-2026-12-01.txt``).

So the fleet's rounds are paced together, as TCP paces a congested link: over each window
of ``window_s`` the share of rounds that started more than ``late_s`` late is counted; above
``late_share`` every interval is stretched by ``grow`` (up to ``max_stretch``), at or below
half of it the stretch decays by ``shrink`` back towards 1. Probing less often costs
detection time (a 2 s interval at stretch 2 is a 4 s one), which the operator reports (the
``mcp_operator_probe_interval_stretch`` gauge and a log line); timing out costs correctness.

Rounds start on slots of a grid (:func:`next_slot`), each server at its own phase of its
(stretched) interval: a fleet that fell behind is spread out again by the next stretch,
instead of keeping the bunches that made it late.

:func:`decide` is pure; :class:`Pacer` only counts the window (the loop passes ``now``).
A stretch that grew holds for ``hold_s`` above the one found late, as TCP's slow-start
threshold: decaying straight back into the overload would make a late window every minute.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

from mcp_operator import metrics

__all__ = ["Pace", "PaceSettings", "Pacer", "decide", "next_slot"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PaceSettings:
    window_s: float = 10.0
    late_s: float = 0.5
    late_share: float = 0.1
    grow: float = 1.25
    shrink: float = 0.9
    max_stretch: float = 4.0
    hold_s: float = 120.0
    """After a stretch grew, it does not decay to or below the one found late for this
    long: decaying back into the overload at once would make a late window every minute."""
    min_servers: int = 50
    """A window with rounds of fewer servers never stretches (and decays): a small fleet's
    own rounds cost too little CPU to be why they are late (a busy node is), and probing
    less often would only slow its failover."""


@dataclass(frozen=True)
class Pace:
    """The fleet's stretch, and the last stretch found too small (until ``floor_until``)."""

    stretch: float = 1.0
    floor: float = 1.0
    floor_until: float = 0.0


def decide(
    pace: Pace, rounds: int, late: int, servers: int, now: float, settings: PaceSettings
) -> Pace:
    """The next pace, from one window: ``rounds`` run, ``late`` of them over ``late_s``
    late, by ``servers`` distinct servers."""
    large = servers >= settings.min_servers
    share = late / rounds if rounds else 0.0
    if large and share > settings.late_share:
        grown = min(settings.max_stretch, pace.stretch * settings.grow)
        return Pace(grown, floor=pace.stretch, floor_until=now + settings.hold_s)
    if large and share > settings.late_share / 2:
        return pace
    held = large and now < pace.floor_until
    lowest = min(pace.stretch, pace.floor * settings.grow) if held else 1.0
    shrunk = max(lowest, pace.stretch * settings.shrink)
    return replace(pace, stretch=1.0 if shrunk < 1.0 + 1e-3 else shrunk)


def next_slot(after: float, offset: float, period: float) -> float:
    """The first time later than ``after`` on the grid ``offset + k * period``."""
    ahead = (offset - after) % period
    return after + (ahead if ahead > 1e-3 else ahead + period)


class Pacer:
    """The fleet's one pace, shared by every health loop; exports the stretch on change."""

    def __init__(self, settings: PaceSettings | None = None) -> None:
        self.settings = settings or PaceSettings()
        self.pace = Pace()
        self.since: float | None = None
        self.rounds = self.late = 0
        self.servers: set[tuple[str, str]] = set()
        metrics.PROBE_INTERVAL_STRETCH.set(1.0)

    def observe(self, key: tuple[str, str], late_s: float, now: float) -> None:
        """Count one round (``late_s``: how late it started); at a window's end, decide."""
        if self.since is None:
            self.since = now
        self.rounds += 1
        self.late += late_s > self.settings.late_s
        self.servers.add(key)
        if now - self.since < self.settings.window_s:
            return
        before = self.stretch
        self.pace = decide(self.pace, self.rounds, self.late, len(self.servers), now, self.settings)
        if self.stretch != before:
            self._report(before)
        self.since, self.rounds, self.late = now, 0, 0
        self.servers = set()

    @property
    def stretch(self) -> float:
        return self.pace.stretch

    def _report(self, before: float) -> None:
        metrics.PROBE_INTERVAL_STRETCH.set(self.stretch)
        if self.stretch > before:
            log.warning(
                "%d of %d probe rounds of %d servers started over %.1fs late: the operator "
                "is short of CPU; every probe interval is now stretched x%.2f (detection "
                "slows as much)",
                self.late,
                self.rounds,
                len(self.servers),
                self.settings.late_s,
                self.stretch,
            )
        elif self.stretch == 1.0:
            log.info("probe rounds are on time again: probe intervals as specified")
