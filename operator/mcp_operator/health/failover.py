"""The failover policy, as one pure function from observations to a decision.

Why pure: the policy is where a wrong answer moves production traffic, so it is a table
that tests can enumerate. It reads only what the caller observed (breaker phases, replica
counts, annotations, the persisted in-progress record) and ``now``; it performs nothing.

Principles, in the order they are applied:

* A new ``switchover`` annotation is a user's explicit order and is looked at first, even
  while a record is in progress (it is never silently dropped): it is either carried out
  (superseding a record towards the other tier), adopted (same target as the record), or
  rejected with a reason the caller records and surfaces. Its timestamp is compared with
  the last processed one and with ``now``: an older or stale value (for instance replayed
  after the status was lost) is rejected, never acted on.
* An in-progress record always closes: an ``intent`` completes when the selector already
  points at its target or the target is healthy *this round*; otherwise it is cancelled
  (target unhealthy, automatic failover disabled, or older than ``intent_max_age_s``). A
  cold-standby ``scaling`` record completes when the backup is healthy, or is cancelled
  (timeout, primary recovered, disabled) -- and a cancelled scale-up scales back down.
* A failing active tier moves traffic to a tier that is healthy *this round* (its breaker
  closed and its latest round not failed). When none is, the decision is ``NoHealthyTier``.
* Failback to the primary is automatic after ``cooldown_s`` of continuous health, or waits
  for a switchover annotation (``Manual``).
* The flap guard holds automatic failback once ``flap_max_failovers`` happened within
  ``flap_window_s``. It never holds traffic on a failing tier.
* ``enabled: False`` means the operator never moves traffic on its own; an explicit
  switchover annotation is still obeyed (it is how a user gets back to the primary).

Messages never carry ticking values (seconds so far): they end up in conditions, and a
message that changes every round would rewrite the status every round.

Misconfiguration (a wrong probe token or Host header) never reaches this module as a
failure: the breaker ignores misconfigured rounds, so it cannot open a breaker.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final, Literal

from mcp_operator.health.breaker import BreakerPhase

__all__ = [
    "Cancel",
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
    intent_max_age_s: float = 60.0
    switchover_max_age_s: float = 3600.0


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
    primary_round: bool | None = True
    """This round's verdict for the primary (``None``: no verdict, e.g. only unverified)."""
    backup_round: bool | None = True
    selector: Tier | None = None
    """The tier the live stable Service selects (``None``: not observed)."""


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


@dataclass(frozen=True)
class Cancel:
    """Close the in-progress record without switching (Event + status carry ``reason``).
    ``rejected_switchover`` as for ``Stay``."""

    reason: str
    rejected_switchover: str | None = None


Decision = Stay | ScaleUpBackup | SwitchTo | Hold | NoHealthyTier | Cancel


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
    pending = observed.switchover
    if pending is not None and pending != observed.switchover_processed:
        return _switchover(settings, observed, pending, now)
    if record is not None and record.phase is FailoverPhase.INTENT:
        return _complete_intent(settings, observed, record, now)
    if record is not None and record.phase is FailoverPhase.SCALING:
        return _await_scale_up(settings, observed, record, now)
    if _trusted(observed, observed.active):
        return _while_active_healthy(settings, observed, now)
    return _while_active_failing(settings, observed, now)


def _other(tier: Tier) -> Tier:
    return "backup" if tier == "primary" else "primary"


def _trusted(observed: Observed, tier: Tier) -> bool:
    """The tier's breaker is closed: it is not failing (one bad round is not failing)."""
    return (observed.primary if tier == "primary" else observed.backup) is BreakerPhase.CLOSED


def _healthy(settings: FailoverSettings, observed: Observed, tier: Tier) -> bool:
    """Fit to receive traffic now: breaker closed, *this* round not failed (a closed breaker
    can hide failed rounds below its threshold), and for the backup, pods that answer."""
    if tier == "primary":
        return _trusted(observed, tier) and observed.primary_round is not False
    return (
        _trusted(observed, tier)
        and observed.backup_round is not False
        and observed.backup_ready_replicas > 0
    )


def _cold_backup(settings: FailoverSettings, observed: Observed) -> bool:
    """A scaled-down cold standby is not unhealthy: it is a scale-up away from serving."""
    return settings.standby is Standby.COLD and observed.backup_ready_replicas == 0


def _complete_intent(
    settings: FailoverSettings, observed: Observed, record: InProgress, now: datetime
) -> Decision:
    target = record.target
    why = f"completing recorded {record.kind} to {target}"
    if observed.selector == target:
        return SwitchTo(target, f"{why}: the Service already selects it", record.kind)
    if not settings.enabled and record.kind != "switchover":
        return Cancel(f"recorded {record.kind} to {target} cancelled: failover is disabled")
    if (now - record.started).total_seconds() > settings.intent_max_age_s:
        return Cancel(
            f"recorded {record.kind} to {target} expired: not completed within "
            f"{settings.intent_max_age_s:.0f}s"
        )
    if _healthy(settings, observed, target):
        return SwitchTo(target, why, record.kind)
    if target == "backup" and _cold_backup(settings, observed):
        return ScaleUpBackup(f"{why}: scaling the cold backup first", record.kind)
    return Cancel(f"recorded {record.kind} to {target} cancelled: {target} is not healthy")


def _await_scale_up(
    settings: FailoverSettings, observed: Observed, record: InProgress, now: datetime
) -> Decision:
    if not settings.enabled and record.kind != "switchover":
        return Cancel("cold backup scale-up cancelled: failover is disabled; scaling back down")
    waited = (now - record.started).total_seconds()
    if waited >= settings.scale_up_timeout_s:
        return Cancel(
            f"cold backup not healthy within {settings.scale_up_timeout_s:.0f}s of its "
            "scale-up; giving up and scaling it back down"
        )
    if _healthy(settings, observed, "backup"):
        return SwitchTo("backup", "cold backup is up and healthy", record.kind)
    if record.kind == "failover" and _healthy(settings, observed, "primary"):
        return Cancel("primary recovered while the cold backup was scaling; scaling it back down")
    return ScaleUpBackup(
        f"waiting for the cold backup (scale-up started {_stamp(record.started)})", record.kind
    )


def _switchover(
    settings: FailoverSettings, observed: Observed, value: str, now: datetime
) -> Decision:
    parsed = parse_switchover(value)
    if isinstance(parsed, InvalidSwitchover):
        return _reject(f"switchover rejected: {parsed.reason}", value)
    tier, when = parsed
    stale = _stale(settings, observed, when, now)
    if stale:
        return _reject(f"switchover rejected: {stale}", value)
    record = observed.in_progress
    if record is not None and record.target == tier:
        return _adopt(settings, observed, record, value, now)
    if tier == observed.active:
        return _reject(f"switchover rejected: {tier} is already active", value)
    if _healthy(settings, observed, tier):
        return SwitchTo(tier, f"switchover to {tier} requested", "switchover", value)
    if tier == "backup" and _cold_backup(settings, observed):
        return ScaleUpBackup("switchover to the cold backup: scaling it first", "switchover", value)
    return _reject(f"switchover rejected: {tier} is not healthy", value)


def _adopt(
    settings: FailoverSettings, observed: Observed, record: InProgress, value: str, now: datetime
) -> Decision:
    """A switchover towards the tier a record is already moving to: the record carries on,
    and its outcome is also the order's (recorded as processed either way)."""
    if record.phase is FailoverPhase.INTENT:
        decision = _complete_intent(settings, observed, record, now)
    else:
        decision = _await_scale_up(settings, observed, record, now)
    if isinstance(decision, SwitchTo | ScaleUpBackup):
        return replace(decision, switchover=value)
    if isinstance(decision, Cancel):
        return replace(decision, rejected_switchover=value)
    return _reject(f"switchover rejected: {getattr(decision, 'reason', '')}", value)


def _reject(reason: str, value: str) -> Decision:
    """A refused order is recorded as processed. An in-progress record is left to run; the
    rejection is reported as a ``Stay`` so the caller still surfaces the reason."""
    return Stay(reason, rejected_switchover=value)


def _stale(
    settings: FailoverSettings, observed: Observed, when: datetime, now: datetime
) -> str | None:
    """Why a switchover timestamp must not be acted on, if it must not."""
    processed = (
        parse_switchover(observed.switchover_processed) if observed.switchover_processed else None
    )
    if isinstance(processed, tuple) and when <= processed[1]:
        return f"its time {_stamp(when)} is not after the last processed {_stamp(processed[1])}"
    age = (now - when).total_seconds()
    if age > settings.switchover_max_age_s:
        return (
            f"its time {_stamp(when)} is older than {settings.switchover_max_age_s:.0f}s "
            "(a stale request is never replayed)"
        )
    if age < -300:
        return f"its time {_stamp(when)} is more than 5 minutes in the future"
    return None


def _stamp(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


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
        since = observed.primary_closed_since
        when = f" since {_stamp(since)}" if since else ""
        return Stay(f"primary healthy{when}; failback after {settings.cooldown_s:.0f}s of health")
    recent = _recent(observed.recent_failovers, now, settings.flap_window_s)
    if recent >= settings.flap_max_failovers:
        return Hold(
            f"flap guard: {recent} failovers within {settings.flap_window_s:.0f}s "
            f"(max {settings.flap_max_failovers}); staying on backup"
        )
    return SwitchTo(
        "primary", f"primary healthy for {settings.cooldown_s:.0f}s or more", "failback"
    )


def _phase(observed: Observed, tier: Tier) -> str:
    return (observed.primary if tier == "primary" else observed.backup).value


def _seconds_since(moment: datetime | None, now: datetime) -> float:
    """Unknown moments count as "just now": an unknown health age never triggers failback."""
    return 0.0 if moment is None else (now - moment).total_seconds()


def _recent(times: Sequence[datetime], now: datetime, window_s: float) -> int:
    horizon = now - timedelta(seconds=window_s)
    return sum(1 for t in times if t > horizon)
