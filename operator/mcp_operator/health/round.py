"""One health round, as a pure function: pods + probe outcomes + state + clock → gate
patches, new state, events, conditions and the switch to carry out.

Why pure: this is where a wrong answer costs requests (a gate) or moves production traffic
(a switch). The I/O layer (:mod:`mcp_operator.health.extension`) only probes, patches and
writes what this returns, so the whole loop can be run closed -- each round's decisions fed
into the next -- with a fake clock, a fake API and scripted probe outcomes
(``tests/unit/test_health_loop.py``), including crashes between any two writes.

A switch is two writes with an apply between them (CloudNativePG's order): the round records
the *intent* in the state it returns and names the tier in ``switch``; the caller writes the
status, applies the stable Service (rendered from the intent's target), and then calls
:func:`complete_switch`. A crash anywhere resumes from the persisted record: the next round
sees the intent and either completes it (the Service already selects the target, or the
target is healthy now) or cancels it with a reason. Every record closes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

from mcp_operator.health import breaker, failover
from mcp_operator.health.breaker import BreakerSettings, BreakerState, TierRound
from mcp_operator.health.gate import Evidence, GateSettings, GateState, step_tier
from mcp_operator.health.probe import Outcome, ProbeResult
from mcp_operator.reconcile.conditions import Want

__all__ = [
    "Event",
    "GatePatch",
    "HealthState",
    "PodView",
    "Record",
    "RoundInput",
    "RoundOutput",
    "RoundSettings",
    "TierHealth",
    "complete_switch",
    "evidence",
    "run_round",
]

Tier = Literal["primary", "backup"]
TIERS: tuple[Tier, Tier] = ("primary", "backup")
Phase = Literal["Idle", "Intent", "ScalingBackup", "Switched", "Cancelled"]
OPEN_PHASES = ("Intent", "ScalingBackup")
RECENT_KEPT = 20


@dataclass(frozen=True)
class TierHealth:
    """A tier's health as persisted in status. ``changed_at`` moves only when something
    else here changes (no heartbeat: a quiet steady state writes nothing)."""

    breaker: BreakerState = field(default_factory=BreakerState)
    healthy: bool | None = None
    healthy_pods: int = 0
    last_error: str | None = None
    era: str | None = None
    changed_at: datetime | None = None


@dataclass(frozen=True)
class Record:
    """The failover record. ``Intent``/``ScalingBackup`` are open; every open record ends
    ``Switched`` or ``Cancelled`` (with ``reason``)."""

    phase: Phase = "Idle"
    target: Tier | None = None
    kind: failover.SwitchKind | None = None
    reason: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    count: int = 0
    recent: tuple[datetime, ...] = ()
    last_switchover: str | None = None

    @property
    def open(self) -> bool:
        return self.phase in OPEN_PHASES


@dataclass(frozen=True)
class HealthState:
    active: Tier = "primary"
    primary: TierHealth = field(default_factory=TierHealth)
    backup: TierHealth = field(default_factory=TierHealth)
    record: Record = field(default_factory=Record)

    def tier(self, tier: Tier) -> TierHealth:
        return self.primary if tier == "primary" else self.backup


@dataclass(frozen=True)
class RoundSettings:
    breaker: BreakerSettings = field(default_factory=BreakerSettings)
    gate: GateSettings = field(default_factory=GateSettings)
    failover: failover.FailoverSettings = field(default_factory=failover.FailoverSettings)
    min_healthy: Mapping[Tier, int] = field(default_factory=lambda: {"primary": 1, "backup": 1})
    backup_enabled: bool = True


@dataclass(frozen=True)
class PodView:
    """A pod as the round needs it: its tier, its gate as set on the pod (``None``: never
    set), and this round's probe (``None``: not probed)."""

    name: str
    tier: Tier
    gate: bool | None
    result: ProbeResult | None


@dataclass(frozen=True)
class RoundInput:
    state: HealthState
    pods: Sequence[PodView]
    memory: Mapping[str, GateState]
    now: datetime
    doubt: str | None = None
    """Why the prober distrusts its own probes this round (fail-static), if it does."""
    probe_error: str | None = None
    """The operator's own probe error (a token Secret missing): nothing was probed."""
    switchover: str | None = None
    selector: Tier | None = None
    backup_scaled_down: bool = False


@dataclass(frozen=True)
class GatePatch:
    pod: str
    ready: bool
    reason: str
    message: str


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass(frozen=True)
class RoundOutput:
    state: HealthState
    memory: dict[str, GateState]
    gates: tuple[GatePatch, ...]
    events: tuple[Event, ...]
    conditions: tuple[Want, ...]
    decision: failover.Decision
    verdicts: Mapping[Tier, TierRound]
    switch: failover.SwitchTo | None = None
    """Apply the stable Service to ``switch.tier`` (the intent is in ``state``)."""
    rerender: bool = False
    """The desired children changed (a cold backup scales up or back down)."""
    no_healthy_tier: bool = False


def evidence(result: ProbeResult | None) -> Evidence:
    """What one probe says about its pod's gate (see :mod:`mcp_operator.health.gate`)."""
    if result is None or result.outcome is Outcome.MISCONFIGURED:
        return Evidence.NONE
    if result.outcome in (Outcome.HEALTHY, Outcome.UNVERIFIED):
        return Evidence.GOOD
    return Evidence.DEAD if result.refused else Evidence.BAD


def run_round(settings: RoundSettings, inp: RoundInput) -> RoundOutput:
    """The whole round; see the module docstring."""
    memory, gates = _gate(settings, inp)
    state = inp.state
    if not settings.backup_enabled:
        state = replace(state, active="primary")
    verdicts: dict[Tier, TierRound] = {}
    for tier in TIERS:
        health, verdicts[tier] = _fold_tier(settings, inp, tier)
        state = (
            replace(state, primary=health) if tier == "primary" else replace(state, backup=health)
        )
    decision = _decide(settings, inp, state, verdicts)
    events: list[Event] = []
    if isinstance(decision, failover.Stay) and decision.rejected_switchover and state.record.open:
        # A refused order is recorded, and the open record still advances this round.
        state, events, _, _ = _act(state, decision, inp)
        decision = _decide(settings, replace(inp, switchover=None), state, verdicts)
    state, more, switch, rerender = _act(state, decision, inp)
    events += more
    conditions = _conditions(settings, inp, state, verdicts, decision)
    return RoundOutput(
        state=state,
        memory=memory,
        gates=gates,
        events=tuple(events),
        conditions=tuple(conditions),
        decision=decision,
        verdicts=verdicts,
        switch=switch,
        rerender=rerender,
        no_healthy_tier=isinstance(decision, failover.NoHealthyTier),
    )


def complete_switch(
    state: HealthState, decision: failover.SwitchTo, now: datetime
) -> tuple[HealthState, Event]:
    """After the Service was applied: the record is ``Switched`` and traffic moved."""
    record = state.record
    recent = tuple(t for t in record.recent if now - t < timedelta(days=1))
    if decision.kind == "failover":
        recent = (*recent, now)[-RECENT_KEPT:]
    source: Tier = "backup" if decision.tier == "primary" else "primary"
    took = (now - record.started_at).total_seconds() if record.started_at else 0.0
    record = replace(
        record,
        phase="Switched",
        target=decision.tier,
        kind=decision.kind,
        completed_at=now,
        recent=recent,
        count=record.count + 1,
    )
    reason = {"failover": "FailedOver", "failback": "FailedBack", "switchover": "SwitchedOver"}
    event = Event(
        "Warning" if decision.kind == "failover" else "Normal",
        reason[decision.kind],
        f"traffic moved {source} → {decision.tier} in {took:.2f}s: {decision.reason}",
    )
    return replace(state, active=decision.tier, record=record), event


# -- gates ------------------------------------------------------------------------------


def _gate(
    settings: RoundSettings, inp: RoundInput
) -> tuple[dict[str, GateState], tuple[GatePatch, ...]]:
    memory: dict[str, GateState] = {}
    patches: list[GatePatch] = []
    for tier in TIERS:
        pods = [p for p in inp.pods if p.tier == tier]
        before = {p.name: _remembered(p, inp.memory.get(p.name)) for p in pods}
        seen = {
            p.name: evidence(p.result) if inp.probe_error is None else Evidence.NONE for p in pods
        }
        after = step_tier(before, seen, settings.gate, frozen=inp.doubt is not None)
        memory.update(after)
        for pod in pods:
            new = after[pod.name].ready
            if new is not None and new != pod.gate:
                patches.append(_patch(pod, new))
    return memory, tuple(patches)


def _remembered(pod: PodView, memory: GateState | None) -> GateState:
    """The pod's condition is the truth for ``ready``; memory only adds the counters."""
    if memory is None or memory.ready != pod.gate:
        return GateState(pod.gate)
    return memory


def _patch(pod: PodView, ready: bool) -> GatePatch:
    result = pod.result
    detail = result.detail if result else ""
    if ready:
        unverified = result is not None and result.outcome is Outcome.UNVERIFIED
        reason = "MCPUnverified" if unverified else "MCPHealthy"
        return GatePatch(pod.name, True, reason, detail or reason)
    refused = result is not None and result.refused
    reason = "ConnectionRefused" if refused else "MCPProbeFailed"
    return GatePatch(pod.name, False, reason, detail or reason)


# -- tiers ------------------------------------------------------------------------------


def _fold_tier(
    settings: RoundSettings, inp: RoundInput, tier: Tier
) -> tuple[TierHealth, TierRound]:
    old = inp.state.tier(tier)
    idle = tier == "backup" and (inp.backup_scaled_down or not settings.backup_enabled)
    if idle:
        # Forget a scaled-down tier's verdict, so it is judged afresh when it starts again.
        fresh = TierHealth()
        if _same_health(old, fresh):
            return old, TierRound(ok=None, healthy=0, unhealthy=0, misconfigured=0)
        return replace(fresh, changed_at=inp.now), TierRound(
            ok=None, healthy=0, unhealthy=0, misconfigured=0
        )
    results = [p.result for p in inp.pods if p.tier == tier and p.result is not None]
    if inp.probe_error is not None:
        results = []
        verdict = TierRound(ok=None, healthy=0, unhealthy=0, misconfigured=0)
    else:
        verdict = breaker.tier_round_ok(results, settings.min_healthy.get(tier, 1))
    ok = verdict.ok
    if ok is False and old.healthy is None:
        ok = None  # never healthy yet: still starting, not failing
    if inp.doubt is not None:
        ok = None  # fail-static: the prober's own measurements are not evidence
    state = breaker.step(old.breaker, ok, inp.now, settings.breaker)
    failing = [r.detail for r in results if r.outcome is Outcome.UNHEALTHY]
    new = TierHealth(
        breaker=state,
        healthy=(
            None
            if ok is None and old.healthy is None
            else state.phase is breaker.BreakerPhase.CLOSED
        ),
        healthy_pods=verdict.healthy if inp.doubt is None else old.healthy_pods,
        last_error=(failing[0][:500] if failing else None) if ok is not None else old.last_error,
        era=next((r.era for r in results if r.era), old.era),
        changed_at=old.changed_at,
    )
    if _same_health(new, old):
        return old, _this_round(verdict, inp)
    return replace(new, changed_at=inp.now), _this_round(verdict, inp)


def _this_round(verdict: TierRound, inp: RoundInput) -> TierRound:
    """The round's verdict as a switch target sees it: a failed round is failed even for a
    tier that was never healthy (the breaker forgives that as "still starting"; a switch
    must not), and nothing counts while the prober doubts itself."""
    return replace(verdict, ok=None) if inp.doubt is not None else verdict


def _same_health(a: TierHealth, b: TierHealth) -> bool:
    """Equal but for ``changed_at`` (written only when something else changes)."""
    return (a.breaker, a.healthy, a.healthy_pods, a.last_error, a.era) == (
        b.breaker,
        b.healthy,
        b.healthy_pods,
        b.last_error,
        b.era,
    )


# -- failover ---------------------------------------------------------------------------


def _observed(
    settings: RoundSettings, inp: RoundInput, state: HealthState, verdicts: Mapping[Tier, TierRound]
) -> failover.Observed:
    record = state.record
    in_progress = None
    if record.open and record.target and record.started_at:
        phase = (
            failover.FailoverPhase.INTENT
            if record.phase == "Intent"
            else failover.FailoverPhase.SCALING
        )
        in_progress = failover.InProgress(
            record.target, phase, record.started_at, record.kind or "failover"
        )
    primary, backup = state.primary, state.backup
    return failover.Observed(
        active=state.active,
        primary=primary.breaker.phase,
        backup=(
            backup.breaker.phase
            if settings.backup_enabled and backup.healthy is not None
            else breaker.BreakerPhase.OPEN
        ),
        backup_ready_replicas=backup.healthy_pods,
        primary_closed_since=primary.breaker.since,
        recent_failovers=record.recent,
        switchover=inp.switchover,
        switchover_processed=record.last_switchover,
        in_progress=in_progress,
        primary_round=verdicts["primary"].ok,
        backup_round=verdicts["backup"].ok,
        selector=inp.selector,
    )


def _decide(
    settings: RoundSettings, inp: RoundInput, state: HealthState, verdicts: Mapping[Tier, TierRound]
) -> failover.Decision:
    if not settings.backup_enabled:
        if state.record.open:
            return failover.Cancel("backup.enabled is false: single tier, nothing to fail over to")
        return failover.Stay("single tier (backup disabled): no failover")
    decision = failover.decide(
        settings.failover, _observed(settings, inp, state, verdicts), inp.now
    )
    if inp.doubt is None:
        return decision
    # Fail-static: while the prober doubts itself it starts nothing. Completing a switch
    # the Service already made, and closing records, stay allowed (they move no traffic).
    if isinstance(decision, failover.SwitchTo) and inp.selector != decision.tier:
        return failover.Stay(f"switching frozen: {inp.doubt}")
    if isinstance(decision, failover.ScaleUpBackup) and not state.record.open:
        return failover.Stay(f"switching frozen: {inp.doubt}")
    return decision


def _act(
    state: HealthState, decision: failover.Decision, inp: RoundInput
) -> tuple[HealthState, list[Event], failover.SwitchTo | None, bool]:
    record, now = state.record, inp.now
    events: list[Event] = []
    if isinstance(decision, failover.SwitchTo):
        if record.open and record.target != decision.tier:
            events.append(_cancelled(record, f"superseded by a {decision.kind} to {decision.tier}"))
        if not (record.phase == "Intent" and record.target == decision.tier):
            record = Record(
                phase="Intent",
                target=decision.tier,
                kind=decision.kind,
                reason=decision.reason[:500],
                started_at=now,
                count=record.count,
                recent=record.recent,
                last_switchover=record.last_switchover,
            )
        if decision.switchover:
            record = replace(record, last_switchover=decision.switchover)
        return replace(state, record=record), events, decision, False
    if isinstance(decision, failover.ScaleUpBackup):
        rerender = False
        if record.phase != "ScalingBackup":
            if record.open:
                events.append(_cancelled(record, "superseded by a cold backup scale-up"))
            record = Record(
                phase="ScalingBackup",
                target="backup",
                kind=decision.kind,
                reason=decision.reason[:500],
                started_at=now,
                count=record.count,
                recent=record.recent,
                last_switchover=record.last_switchover,
            )
            events.append(Event("Normal", "ScalingBackup", decision.reason))
            rerender = True
        if decision.switchover:
            record = replace(record, last_switchover=decision.switchover)
        return replace(state, record=record), events, None, rerender
    if isinstance(decision, failover.Cancel):
        events.append(_cancelled(record, decision.reason))
        record = replace(record, phase="Cancelled", reason=decision.reason[:500], completed_at=now)
        if decision.rejected_switchover:
            record = replace(record, last_switchover=decision.rejected_switchover)
        return replace(state, record=record), events, None, True
    if isinstance(decision, failover.Stay) and decision.rejected_switchover:
        events.append(Event("Warning", "SwitchoverRejected", decision.reason))
        record = replace(record, last_switchover=decision.rejected_switchover)
        return replace(state, record=record), events, None, False
    return state, events, None, False


def _cancelled(record: Record, reason: str) -> Event:
    return Event(
        "Warning",
        "FailoverCancelled",
        f"{record.kind or 'switch'} to {record.target} closed: {reason}",
    )


# -- conditions -------------------------------------------------------------------------


def _conditions(
    settings: RoundSettings,
    inp: RoundInput,
    state: HealthState,
    verdicts: Mapping[Tier, TierRound],
    decision: failover.Decision,
) -> list[Want]:
    wants = [_tier_condition("PrimaryHealthy", state.primary, verdicts["primary"])]
    if settings.backup_enabled and inp.backup_scaled_down:
        wants.append(
            Want(
                "BackupHealthy",
                "Unknown",
                "ColdStandby",
                "scaled to zero until a failover needs it",
            )
        )
    elif settings.backup_enabled:
        wants.append(_tier_condition("BackupHealthy", state.backup, verdicts["backup"]))
    else:
        wants.append(Want("BackupHealthy", "Unknown", "SingleTier", "backup.enabled is false"))
    message = getattr(decision, "reason", "")
    if state.active == "backup":
        wants.append(Want("FailedOver", "True", "ServingFromBackup", message))
    else:
        wants.append(Want("FailedOver", "False", "ServingFromPrimary", message))
    if inp.probe_error is not None:
        wants.append(Want("Misconfigured", "True", "ProbeSettings", inp.probe_error))
    else:
        wants.append(
            Want("Misconfigured", "False", "ProbesAccepted", "the probe's own settings work")
        )
    verified = _verified(inp)
    if verified is not None:
        wants.append(verified)
    return wants


def _verified(inp: RoundInput) -> Want | None:
    """Whether MCP-level health could be checked at all; ``None`` leaves it as it was."""
    results = [p.result for p in inp.pods if p.result is not None]
    if inp.probe_error is not None or not results:
        return None
    if any(r.outcome is Outcome.HEALTHY for r in results):
        return Want("Verified", "True", "MCPAnswered", "pods answer MCP to the operator's probe")
    unverified = [r for r in results if r.outcome is Outcome.UNVERIFIED]
    if not unverified:
        return None
    if any(r.challenge for r in unverified):
        return Want(
            "Verified",
            "False",
            "AuthenticationRequired",
            "pods answer with an authentication challenge, so MCP health cannot be verified; "
            "they keep serving and no failover happens on health. Fix: set "
            "spec.health.bearerTokenSecretRef to a Secret holding a token the server accepts",
        )
    return Want(
        "Verified",
        "False",
        "ProbeRejected",
        f"pods answer but refuse the probe ({unverified[0].detail}); they keep serving and no "
        "failover happens on health. Fix the probe settings in spec.health",
    )


def _tier_condition(type_: str, tier: TierHealth, verdict: TierRound) -> Want:
    if tier.healthy is None:
        return Want(type_, "Unknown", "Probing", "no MCP verdict yet")
    if tier.healthy:
        return Want(
            type_,
            "True",
            "MCPHealthy",
            f"{tier.healthy_pods} pod(s) answer MCP ({tier.era or 'unknown'} era)",
        )
    return Want(
        type_,
        "False",
        "CircuitOpen" if tier.breaker.phase == "open" else "Recovering",
        f"breaker {tier.breaker.phase}: {tier.last_error or 'no pods answer'}",
    )
