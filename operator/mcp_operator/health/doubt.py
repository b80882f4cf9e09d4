"""The prober doubts itself first: a pure detector of probe failures that are more likely
the operator's fault than the servers'.

Why: the operator is in the data path -- its gates decide which pods receive traffic and its
breakers move the Service. When its own network, DNS, event loop or a NetworkPolicy breaks,
*every* probe fails at once, and acting on that would gate out healthy pods fleet-wide and
fail servers over for nothing. Kubernetes' node-lifecycle controller reasons the same way
about zones (``--unhealthy-zone-threshold`` 0.55): a mass failure is more likely the
observer's fault than every node's. So, fail-static:

* **mass failure** -- at least ``min_servers`` servers reported a round within ``window_s``
  and at least ``failing_share`` of them saw probes fail in a way the prober could have
  caused (timeouts, resets; *not* refused connections, which come from the pods' kernels);
  A round that ran late (below) counts as failing here too: a stall of the whole event
  loop makes every server's round late at once.
* **late round** -- a round that overran its time budget (or started late) by more than
  ``late_s``: the event loop stalled, and the timeouts it measured are its own. Judged per
  round (:meth:`Doubt.round_is_late`): that round is discarded *silently* (no Event, no
  gauge, no status write), the next on-time round counts.

While the fleet is in doubt, callers freeze gate demotions, breaker failures and switching,
export the ``mcp_operator_prober_doubt`` gauge and post an Event.

Hysteresis: doubt starts at the first round that meets the condition (fail-static must be
immediate) but ends only once the condition has stayed false for ``clear_s``. Without it,
a loaded machine whose probes time out in about half of the rounds flips doubt on and off
every few seconds, and every flip posted an Event per server and let the rounds in between
count their timeouts into breakers and status (a 20-server run measured 3 Events/s and
1.3 status writes/s with nothing changing). The cost: switching stays frozen for up to
``clear_s`` after a mass failure ends.

Trade-off, stated honestly: a fault that truly hits more than ``failing_share`` of all
servers at once with timeouts (say one node carrying most primaries freezes) is also frozen;
refused connections (a dead process or node-local reset) still count, so crashes fail over.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field

__all__ = ["Doubt", "DoubtSettings", "RoundReport"]


@dataclass(frozen=True)
class DoubtSettings:
    window_s: float = 10.0
    min_servers: int = 4
    failing_share: float = 0.55
    late_s: float = 0.5
    clear_s: float = 10.0


@dataclass(frozen=True)
class RoundReport:
    """One server's round. ``suspect`` counts probes that failed in a way the prober could
    have caused; ``late_s`` is how much the round overran or started late."""

    server: Hashable
    at: float
    probes: int
    suspect: int
    late_s: float = 0.0

    @property
    def failing(self) -> bool:
        return self.probes > 0 and self.suspect > 0


@dataclass
class Doubt:
    """Holds each server's latest report and the fleet's doubt; no clock of its own
    (``at`` is passed in).

    Every server's round asks for the verdict, so a full scan per call would cost
    O(servers) per round -- O(servers²) per interval, most of the prober's CPU at 1,000
    servers. The scan is cached: it is redone when the number of failing or reporting
    servers changed, or when ``at`` moved on by a tenth of the window (reports ageing
    out of the window are noticed that much later, at most 1 s by default).
    """

    settings: DoubtSettings = field(default_factory=DoubtSettings)
    latest: dict[Hashable, RoundReport] = field(default_factory=dict)
    _failing: int = 0
    _cached: tuple[float, int, int, str | None] | None = None
    _doubt: str | None = None
    """The fleet's current doubt (held through ``clear_s`` after the condition ends)."""
    _clear_since: float | None = None

    def report(self, report: RoundReport) -> None:
        before = self.latest.get(report.server)
        self._failing += int(self._bad(report)) - int(before is not None and self._bad(before))
        self.latest[report.server] = report

    def forget(self, server: Hashable) -> None:
        before = self.latest.pop(server, None)
        self._failing -= int(before is not None and self._bad(before))

    def _bad(self, report: RoundReport) -> bool:
        return report.failing or self.round_is_late(report)

    def round_is_late(self, report: RoundReport) -> bool:
        """This round's own measurements are untrustworthy (the event loop stalled)."""
        return report.late_s > self.settings.late_s

    def verdict(self, at: float) -> str | None:
        """``None`` when the prober trusts itself; else why it does not. Starts at once,
        ends ``clear_s`` after the condition last held (see the module's hysteresis)."""
        now = self._condition(at)
        if now is not None:
            self._doubt, self._clear_since = now, None
        elif self._doubt is not None:
            if self._clear_since is None:
                self._clear_since = at
            if at - self._clear_since >= self.settings.clear_s:
                self._doubt, self._clear_since = None, None
        return self._doubt

    def _condition(self, at: float) -> str | None:
        """Whether the latest reports meet the mass-failure condition right now."""
        cached = self._cached
        if (
            cached is not None
            and cached[1:3] == (self._failing, len(self.latest))
            and cached[0] <= at < cached[0] + self.settings.window_s / 10
        ):
            return cached[3]
        horizon = at - self.settings.window_s
        recent = [r for r in self.latest.values() if r.at >= horizon]
        failing = sum(1 for r in recent if self._bad(r))
        answer = None
        if len(
            recent
        ) >= self.settings.min_servers and failing >= self.settings.failing_share * len(recent):
            answer = (
                f"probes of {failing} of {len(recent)} servers failed or ran late at once "
                "(timeouts or errors); assuming the prober's own fault"
            )
        self._cached = (at, self._failing, len(self.latest), answer)
        return answer
