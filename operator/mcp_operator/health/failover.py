"""The failover policy, as one pure function from observations to a decision.

Why pure: the policy is where a wrong answer moves production traffic, so it is a table
that tests can enumerate. It reads only what the caller observed (breaker phases, replica
counts, annotations, the persisted in-progress record) and ``now``; it performs nothing.

Principles, in the order they are applied:

* An in-progress record in phase ``intent`` is completed first: the operator may have died
  between recording the intent and acting on it, and a restart must not forget it.
* A cold-standby scale-up (phase ``scaling``) is waited on for a bounded time, then given up.
* A new, valid ``switchover`` annotation is a user's explicit order and wins over automatic
  rules (and over the flap guard), but only towards a healthy tier; otherwise it is rejected
  with a reason the caller surfaces.
* A failing active tier moves traffic to a healthy other tier. When neither tier is healthy
  the decision is ``NoHealthyTier``: switching between two broken tiers only adds churn.
* Failback to the primary is automatic after ``cooldown_s`` of continuous health, or waits
  for a switchover annotation (``Manual``).
* The flap guard holds automatic failback once ``flap_max_failovers`` happened within
  ``flap_window_s``. It never holds traffic on a failing tier: moving to the healthy tier is
  always safer than staying, so the ping-pong is broken by refusing to return.

Misconfiguration (a wrong probe token or Host header) never reaches this module as a
failure: the breaker ignores misconfigured rounds, so it cannot open a breaker.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from mcp_operator.health.breaker import BreakerPhase

__all__ = [
    "Decision",
    "Failback",
    "FailoverPhase",
    "FailoverSettings",
    "Hold",
    "InProgress",
    "InvalidSwitchover",
    "NoHealthyTier",
    "Observed",
    "ScaleUpBackup",
    "Standby",
    "Stay",
    "SwitchKind",
    "SwitchTo",
    "Tier",
    "decide",
    "parse_switchover",
]

Tier = Literal["primary", "backup"]
SwitchKind = Literal["failover", "failback", "switchover"]
_TIERS: Final[tuple[Tier, Tier]] = ("primary", "backup")


class Failback(enum.StrEnum):
    AUTOMATIC = "Automatic"
    MANUAL = "Manual"


class Standby(enum.StrEnum):
    HOT = "hot"
    COLD = "cold"


class FailoverPhase(enum.StrEnum):
    """Phases of a persisted switch: recorded, waiting for a cold backup, done."""

    INTENT = "intent"
    SCALING = "scaling"
    SWITCHED = "switched"


@dataclass(frozen=True)
class FailoverSettings:
    enabled: bool = True
    failback: Failback = Failback.AUTOMATIC
    cooldown_s: float = 300.0
    standby: Standby = Standby.HOT
    flap_max_failovers: int = 3
    flap_window_s: float = 3600.0
    scale_up_timeout_s: float = 300.0


@dataclass(frozen=True)
class InProgress:
    """The persisted record of a switch the operator has started."""

    target: Tier
    phase: FailoverPhase
    started: datetime
    kind: SwitchKind = "failover"


@dataclass(frozen=True)
class Observed:
    """What the caller saw this round. All datetimes must be timezone-aware.

    ``primary_closed_since`` is when the primary's breaker last closed (its breaker
    ``since`` while closed); ``recent_failovers`` are times of automatic switches.
    """

    active: Tier
    primary: BreakerPhase
    backup: BreakerPhase
    backup_ready_replicas: int
    primary_closed_since: datetime | None = None
    recent_failovers: Sequence[datetime] = ()
    switchover: str | None = None
    switchover_processed: str | None = None
    in_progress: InProgress | None = None


@dataclass(frozen=True)
class Stay:
    """Keep the active tier. ``rejected_switchover`` names an annotation value that was
    refused (the caller records it as processed and surfaces ``reason``)."""

    reason: str
    rejected_switchover: str | None = None


@dataclass(frozen=True)
class ScaleUpBackup:
    """Cold standby: scale the backup up (or keep waiting for it), then switch."""

    reason: str
    kind: SwitchKind = "failover"
    switchover: str | None = None


@dataclass(frozen=True)
class SwitchTo:
    """Move traffic to ``tier``. ``switchover`` is the annotation value it fulfils, if any."""

    tier: Tier
    reason: str
    kind: SwitchKind = "failover"
    switchover: str | None = None


@dataclass(frozen=True)
class Hold:
    """The flap guard refused an automatic switch."""

    reason: str


@dataclass(frozen=True)
class NoHealthyTier:
    """Neither tier can serve; nothing is switched."""

    reason: str


Decision = Stay | ScaleUpBackup | SwitchTo | Hold | NoHealthyTier


@dataclass(frozen=True)
class InvalidSwitchover:
    reason: str


_RFC3339: Final = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_switchover(value: str) -> tuple[Tier, datetime] | InvalidSwitchover:
    """Parse ``"<tier>@<RFC3339>"``; the timestamp makes each request distinct."""
    tier, sep, stamp = value.strip().partition("@")
    if not sep:
        return InvalidSwitchover(f"expected '<tier>@<RFC3339 time>', got {value[:80]!r}")
    if tier not in _TIERS:
        return InvalidSwitchover(f"unknown tier {tier[:40]!r}; expected 'primary' or 'backup'")
    if not _RFC3339.fullmatch(stamp):
        return InvalidSwitchover(f"timestamp {stamp[:40]!r} is not RFC 3339")
    try:
        when = datetime.fromisoformat(stamp.upper())
    except ValueError:
        return InvalidSwitchover(f"timestamp {stamp[:40]!r} is not a valid date")
    return ("primary" if tier == "primary" else "backup"), when


def decide(settings: FailoverSettings, observed: Observed, now: datetime) -> Decision:
    """The whole policy; see the module docstring for the order of the rules."""
    record = observed.in_progress
    if record is not None and record.phase is FailoverPhase.INTENT:
        return _complete_intent(settings, observed, record)
    if record is not None and record.phase is FailoverPhase.SCALING:
        return _await_scale_up(settings, observed, record, now)
    pending = observed.switchover
    if pending is not None and pending != observed.switchover_processed:
        return _switchover(settings, observed, pending)
    if _healthy(settings, observed, observed.active):
        return _while_active_healthy(settings, observed, now)
    return _while_active_failing(settings, observed, now)


def _other(tier: Tier) -> Tier:
    return "backup" if tier == "primary" else "primary"


def _healthy(settings: FailoverSettings, observed: Observed, tier: Tier) -> bool:
    """A tier is healthy when its breaker is closed (and, for the backup, it has pods)."""
    if tier == "primary":
        return observed.primary is BreakerPhase.CLOSED
    return observed.backup is BreakerPhase.CLOSED and observed.backup_ready_replicas > 0


def _cold_backup(settings: FailoverSettings, observed: Observed) -> bool:
    """A scaled-down cold standby is not unhealthy: it is a scale-up away from serving."""
    return settings.standby is Standby.COLD and observed.backup_ready_replicas == 0


def _complete_intent(
    settings: FailoverSettings, observed: Observed, record: InProgress
) -> Decision:
    target = record.target
    why = f"completing recorded {record.kind} to {target}"
    if _healthy(settings, observed, target):
        return SwitchTo(target, why, record.kind)
    if target == "backup" and _cold_backup(settings, observed):
        return ScaleUpBackup(f"{why}: scaling the cold backup first", record.kind)
    if not _healthy(settings, observed, _other(target)):
        return NoHealthyTier(f"{why} impossible: neither tier is healthy")
    return Stay(f"recorded {record.kind} to {target} abandoned: {target} is not healthy")


def _await_scale_up(
    settings: FailoverSettings, observed: Observed, record: InProgress, now: datetime
) -> Decision:
    if _healthy(settings, observed, "backup"):
        return SwitchTo("backup", "cold backup is up and healthy", record.kind)
    waited = (now - record.started).total_seconds()
    if waited >= settings.scale_up_timeout_s:
        return Stay(
            f"cold backup not healthy {waited:.0f}s after scale-up "
            f"(limit {settings.scale_up_timeout_s:.0f}s); giving up"
        )
    if record.kind == "failover" and _healthy(settings, observed, "primary"):
        return Stay("primary recovered while the cold backup was scaling; scale-up abandoned")
    return ScaleUpBackup(f"waiting for the cold backup ({waited:.0f}s so far)", record.kind)


def _switchover(settings: FailoverSettings, observed: Observed, value: str) -> Decision:
    parsed = parse_switchover(value)
    if isinstance(parsed, InvalidSwitchover):
        return Stay(f"switchover rejected: {parsed.reason}", rejected_switchover=value)
    tier, _ = parsed
    if tier == observed.active:
        return Stay(f"switchover rejected: {tier} is already active", rejected_switchover=value)
    if _healthy(settings, observed, tier):
        return SwitchTo(tier, f"switchover to {tier} requested", "switchover", value)
    if tier == "backup" and _cold_backup(settings, observed):
        return ScaleUpBackup("switchover to the cold backup: scaling it first", "switchover", value)
    return Stay(f"switchover rejected: {tier} is not healthy", rejected_switchover=value)


def _while_active_failing(
    settings: FailoverSettings, observed: Observed, now: datetime
) -> Decision:
    active, other = observed.active, _other(observed.active)
    other_ok = _healthy(settings, observed, other)
    cold = other == "backup" and _cold_backup(settings, observed)
    if not other_ok and not cold:
        return NoHealthyTier(f"{active} is failing and {other} is not healthy")
    if _phase(observed, active) == BreakerPhase.HALF_OPEN.value:
        return Stay(f"{active} breaker is half-open: waiting for its verdict")
    if not settings.enabled:
        return Stay(f"{active} is failing but automatic failover is disabled")
    if cold:
        return ScaleUpBackup("primary is failing: scaling the cold backup")
    return SwitchTo(other, f"{active} breaker is {_phase(observed, active)}; {other} is healthy")


def _while_active_healthy(
    settings: FailoverSettings, observed: Observed, now: datetime
) -> Decision:
    if observed.active == "primary":
        return Stay("primary is healthy")
    if not _healthy(settings, observed, "primary"):
        return Stay("serving from backup; primary is not healthy yet")
    if not settings.enabled:
        return Stay("serving from backup; automatic failback is disabled")
    if settings.failback is Failback.MANUAL:
        return Stay("serving from backup; failback is Manual: waiting for a switchover annotation")
    healthy_for = _seconds_since(observed.primary_closed_since, now)
    if healthy_for < settings.cooldown_s:
        return Stay(
            f"primary healthy for {healthy_for:.0f}s; failback after {settings.cooldown_s:.0f}s"
        )
    recent = _recent(observed.recent_failovers, now, settings.flap_window_s)
    if recent >= settings.flap_max_failovers:
        return Hold(
            f"flap guard: {recent} failovers within {settings.flap_window_s:.0f}s "
            f"(max {settings.flap_max_failovers}); staying on backup"
        )
    return SwitchTo("primary", f"primary healthy for {healthy_for:.0f}s", "failback")


def _phase(observed: Observed, tier: Tier) -> str:
    return (observed.primary if tier == "primary" else observed.backup).value


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    """Unknown moments count as "just now": an unknown health age never triggers failback."""
    return 0.0 if moment is None else (now - moment).total_seconds()


def _recent(times: Sequence[datetime], now: datetime, window_s: float) -> int:
    horizon = now - timedelta(seconds=window_s)
    return sum(1 for t in times if t > horizon)
