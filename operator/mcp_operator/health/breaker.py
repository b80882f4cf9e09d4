"""The per-tier circuit breaker, as a pure state machine.

Why pure: the breaker decides failover, so it must survive an operator restart. Its state
is a frozen value persisted in the MCPServer status and rebuilt from there (never from
memory), and every transition takes ``now`` as an argument, so tests and a restarted
operator see exactly the same behaviour as the process that wrote the status.

States:

* ``closed`` -- the tier is trusted; ``failure_threshold`` consecutive failed rounds open it.
* ``open`` -- the tier is distrusted; rounds are ignored until ``recovery_timeout_s`` has
  passed since it opened, then the next round is the first half-open trial.
* ``half-open`` -- ``success_threshold`` consecutive successes close it; any failure reopens it.

A round whose verdict is ``None`` (only misconfigured pods answered) leaves the state as
it is: a wrong token or Host header says nothing about the server's health, and must never
open a breaker (and thereby cause a failover).
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from mcp_operator.health.probe import Outcome, ProbeResult

__all__ = [
    "BreakerPhase",
    "BreakerSettings",
    "BreakerState",
    "TierRound",
    "step",
    "tier_round_ok",
]


class BreakerPhase(enum.StrEnum):
    """The three classic circuit-breaker phases (values are what the status shows)."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half-open"


@dataclass(frozen=True)
class BreakerSettings:
    """Thresholds; validated once so ``step`` never has to defend against nonsense."""

    failure_threshold: int = 3
    success_threshold: int = 2
    recovery_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.failure_threshold < 1 or self.success_threshold < 1:
            raise ValueError("breaker thresholds must be >= 1")
        if self.recovery_timeout_s < 0:
            raise ValueError("recovery_timeout_s must be >= 0")


@dataclass(frozen=True)
class BreakerState:
    """One tier's breaker.

    ``failures`` counts consecutive failed rounds while closed; ``successes`` counts
    consecutive successful rounds while half-open. ``since`` is when the current phase
    began (``None`` for a breaker that never changed phase): for ``open`` it starts the
    recovery timer, for ``closed`` it is "healthy since", which the failback cooldown reads.
    """

    phase: BreakerPhase = BreakerPhase.CLOSED
    failures: int = 0
    successes: int = 0
    since: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        """A small JSON-able dict for the MCPServer status."""
        return {
            "phase": self.phase.value,
            "failures": self.failures,
            "successes": self.successes,
            "since": _format_time(self.since),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> BreakerState:
        """Rebuild from a status dict; anything unreadable yields a fresh closed breaker.

        Why lenient: the status is user-editable and may come from an older operator; a
        garbled status must not crash-loop the reconciler. A fresh breaker re-learns
        within ``failure_threshold`` rounds.
        """
        if not data:
            return cls()
        try:
            phase = BreakerPhase(data.get("phase", BreakerPhase.CLOSED.value))
            failures = max(0, int(data.get("failures", 0)))
            successes = max(0, int(data.get("successes", 0)))
            since = _parse_time(data.get("since"))
        except (TypeError, ValueError):
            return cls()
        return cls(phase=phase, failures=failures, successes=successes, since=since)


def step(
    state: BreakerState, round_ok: bool | None, now: datetime, settings: BreakerSettings
) -> BreakerState:
    """Apply one probe round (``None`` = no verdict) at time ``now``; return the new state."""
    if round_ok is None:
        return state
    if state.phase is BreakerPhase.OPEN:
        if not _recovery_due(state, now, settings):
            return state
        state = BreakerState(phase=BreakerPhase.HALF_OPEN, since=now)
    if state.phase is BreakerPhase.HALF_OPEN:
        return _step_half_open(state, round_ok, now, settings)
    return _step_closed(state, round_ok, now, settings)


def _recovery_due(state: BreakerState, now: datetime, settings: BreakerSettings) -> bool:
    if state.since is None:  # an open breaker of unknown age: let it be retried
        return True
    return (now - state.since).total_seconds() >= settings.recovery_timeout_s


def _step_closed(
    state: BreakerState, round_ok: bool, now: datetime, settings: BreakerSettings
) -> BreakerState:
    if round_ok:
        return replace(state, failures=0, successes=0)
    failures = state.failures + 1
    if failures >= settings.failure_threshold:
        return BreakerState(phase=BreakerPhase.OPEN, failures=failures, since=now)
    return replace(state, failures=failures)


def _step_half_open(
    state: BreakerState, round_ok: bool, now: datetime, settings: BreakerSettings
) -> BreakerState:
    if not round_ok:
        return BreakerState(phase=BreakerPhase.OPEN, failures=1, since=now)
    successes = state.successes + 1
    if successes >= settings.success_threshold:
        return BreakerState(phase=BreakerPhase.CLOSED, since=now)
    return replace(state, successes=successes)


@dataclass(frozen=True)
class TierRound:
    """The verdict of one probe round over a tier's pods.

    ``ok`` is ``True`` (enough healthy pods), ``False`` (not enough, and at least one pod
    failed or there were no pods at all) or ``None`` (no verdict: the shortfall is only
    misconfigured pods, which must not move the breaker). ``misconfigured`` is reported
    separately so the caller can surface it as a condition instead of a failure.
    """

    ok: bool | None
    healthy: int
    unhealthy: int
    misconfigured: int


def tier_round_ok(pod_results: Iterable[ProbeResult | Outcome], min_healthy: int = 1) -> TierRound:
    """Fold per-pod probe results into one round verdict for the tier's breaker."""
    outcomes = [r.outcome if isinstance(r, ProbeResult) else r for r in pod_results]
    healthy = outcomes.count(Outcome.HEALTHY)
    unhealthy = outcomes.count(Outcome.UNHEALTHY)
    # Unverified answers (401 without a token, ...) prove nothing either way, like the
    # operator's own misconfiguration: neither may move a breaker.
    misconfigured = outcomes.count(Outcome.MISCONFIGURED) + outcomes.count(Outcome.UNVERIFIED)
    ok: bool | None
    if healthy >= max(1, min_healthy):
        ok = True
    elif unhealthy == 0 and misconfigured > 0:
        ok = None
    else:
        ok = False
    return TierRound(ok=ok, healthy=healthy, unhealthy=unhealthy, misconfigured=misconfigured)


def _format_time(value: datetime | None) -> str | None:
    if value is None:
        return None
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError("time must be an RFC 3339 string")
    parsed = datetime.fromisoformat(value)
    if parsed.tzinfo is None:
        raise ValueError("time must carry a UTC offset")
    return parsed
