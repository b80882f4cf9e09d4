"""The health loop beside each worker: probe pods, gate readiness, move the breakers, and
carry out the failover policy's decision.

Order of a switch follows CloudNativePG: the *intent* is written to status first, then the
stable Service's selector is switched (by a reconcile with the new active tier), then the
completion is recorded with an Event and a metric. A restart between any two steps resumes
from the status: the policy sees the recorded intent and completes it.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx

from mcp_operator import metrics
from mcp_operator.api.models import FailoverStatus, MCPServer, Tier, TierStatus
from mcp_operator.health import breaker, failover, probe
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile.conditions import Want
from mcp_operator.reconcile.worker import PAUSE_ANNOTATION, ServerWorker, Shared
from mcp_operator.render.meta import HEALTH_GATE, TIER_LABEL
from mcp_operator.render.workload import tier_replicas

log = logging.getLogger(__name__)
Obj = dict[str, Any]
TIERS: tuple[Tier, Tier] = ("primary", "backup")
PROBE_TIME_REFRESH = timedelta(seconds=30)
BREAKER_CODE = {"closed": 0, "half-open": 1, "open": 2}


def install(shared: Shared) -> None:
    client = httpx.AsyncClient(
        limits=httpx.Limits(max_connections=200, max_keepalive_connections=0)
    )
    shared.companions.append(lambda worker: HealthLoop(worker, client).run())


@dataclass(frozen=True)
class PodProbe:
    pod: Obj
    result: probe.ProbeResult


def probeable(pod: Obj) -> bool:
    """Pods worth probing: scheduled, with an IP, running and not being deleted."""
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and not pod["metadata"].get("deletionTimestamp")
    )


class HealthLoop:
    """Per-object probe rounds every ``spec.health.intervalSeconds``."""

    def __init__(self, worker: ServerWorker, client: httpx.AsyncClient) -> None:
        self.worker = worker
        self.client = client
        self.token: tuple[float, str | None] = (0.0, None)

    async def run(self) -> None:
        while True:
            server = self.worker.server
            annotations = self.worker.body["metadata"].get("annotations") or {}
            paused = annotations.get(PAUSE_ANNOTATION) == "disabled"
            if server is None or paused or not self.worker.outcome.ok:
                await asyncio.sleep(1.0)
                continue
            started = time.monotonic()
            try:
                await self.round(server)
            except Exception:
                log.exception("health round of %s/%s failed", *self.worker.key)
            elapsed = time.monotonic() - started
            await asyncio.sleep(max(0.05, server.spec.health.interval_seconds - elapsed))

    async def round(self, server: MCPServer) -> None:
        by_tier = await self.probe_tiers(server)
        await self.gate_pods(by_tier)
        async with self.worker.lock:
            now = self.worker.shared.clock()
            verdicts = {tier: self.fold(server, tier, by_tier[tier], now) for tier in TIERS}
            await self.decide_and_act(server, verdicts, now)
            await self.worker.write_status()

    # -- probing ----------------------------------------------------------------------------

    async def probe_tiers(self, server: MCPServer) -> dict[Tier, list[PodProbe]]:
        spec = server.spec
        settings = probe.ProbeSettings(
            step_timeout_s=float(spec.health.timeout_seconds),
            budget_s=float(spec.health.timeout_seconds) * 2,
            cleanup_timeout_s=0.5,
        )
        token = await self.bearer_token(server)
        pods = [p for p in self.worker.shared.index.pods(self.worker.key) if probeable(p)]

        async def one(pod: Obj) -> PodProbe:
            url = f"http://{pod['status']['podIP']}:{spec.port}{spec.path}"
            target = probe.ProbeTarget(url=url, bearer_token=token)
            return PodProbe(pod, await probe.probe(self.client, target, settings))

        results = await asyncio.gather(*(one(p) for p in pods))
        by_tier: dict[Tier, list[PodProbe]] = {"primary": [], "backup": []}
        for item in results:
            tier = item.pod["metadata"]["labels"].get(TIER_LABEL)
            if tier in by_tier:
                by_tier[tier].append(item)
                self.record_metrics(tier, item.result)
        return by_tier

    async def bearer_token(self, server: MCPServer) -> str | None:
        """The probe's token, from the referenced Secret; cached for a minute."""
        minted = self.worker.probe_token()  # hook: spec.auth on → minted by the keys loop
        if minted is not None:
            return minted
        ref = server.spec.health.bearer_token_secret_ref
        if ref is None:
            return None
        fetched_at, value = self.token
        if time.monotonic() - fetched_at < 60:
            return value
        secret = await self.worker.shared.client.get("v1", "Secret", self.worker.key[0], ref.name)
        raw = ((secret or {}).get("data") or {}).get(ref.key)
        value = base64.b64decode(raw).decode().strip() if raw else None
        self.token = (time.monotonic(), value)
        return value

    def record_metrics(self, tier: str, result: probe.ProbeResult) -> None:
        namespace, name = self.worker.key
        era = result.era or "unknown"
        metrics.PROBE_DURATION.labels(namespace, name, tier, era).observe(result.duration_s)
        metrics.PROBE_TOTAL.labels(namespace, name, tier, era, result.outcome.value).inc()

    async def gate_pods(self, by_tier: dict[Tier, list[PodProbe]]) -> None:
        """Set each pod's readiness gate from its own probe, so Services route only to pods
        that answer MCP. Misconfiguration counts as not ready: clients would fail too."""
        patches = [
            self.set_gate(
                item.pod, item.result.outcome is probe.Outcome.HEALTHY, item.result.detail
            )
            for items in by_tier.values()
            for item in items
        ]
        await asyncio.gather(*patches)

    async def set_gate(self, pod: Obj, healthy: bool, detail: str) -> None:
        wanted = "True" if healthy else "False"
        current = next(
            (
                c
                for c in (pod.get("status") or {}).get("conditions") or []
                if c.get("type") == HEALTH_GATE
            ),
            None,
        )
        if current is not None and current.get("status") == wanted:
            return
        condition = {
            "type": HEALTH_GATE,
            "status": wanted,
            "reason": "MCPHealthy" if healthy else "MCPProbeFailed",
            "message": detail[:500],
            "lastTransitionTime": self.worker.shared.clock().strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        meta = pod["metadata"]
        try:
            result = await self.worker.shared.client.patch(
                "v1",
                "Pod",
                meta["namespace"],
                meta["name"],
                {"status": {"conditions": [condition]}},
                subresource="status",
                content_type="application/strategic-merge-patch+json",
            )
            self.worker.shared.index.observe("Pod", result, deleted=False)
        except ApiError as exc:
            if exc.status != 404:
                raise

    # -- breakers ---------------------------------------------------------------------------

    def fold(
        self, server: MCPServer, tier: Tier, items: list[PodProbe], now: datetime
    ) -> breaker.TierRound:
        """One round into the tier's breaker and status."""
        health = server.spec.health
        old: TierStatus = getattr(self.worker.status.tiers, tier)
        if self.cold_idle(server, tier):
            return self.forget_tier(tier, old)
        verdict = breaker.tier_round_ok([i.result for i in items], health.min_healthy_pods)
        ok = verdict.ok
        if ok is False and old.healthy is None:
            ok = None  # never healthy yet: still starting, not failing
        settings = breaker.BreakerSettings(
            health.failure_threshold,
            health.success_threshold,
            float(health.recovery_timeout_seconds),
        )
        state = breaker.step(
            breaker.BreakerState.from_dict(old.breaker.model_dump(mode="json")), ok, now, settings
        )
        failing = [i.result.detail for i in items if i.result.outcome is not probe.Outcome.HEALTHY]
        update = {
            "breaker": state.to_dict(),
            "healthy": None
            if ok is None and old.healthy is None
            else state.phase is breaker.BreakerPhase.CLOSED,
            "healthy_pods": verdict.healthy,
            "consecutive_failures": state.failures,
            "last_error": (failing[0][:500] if failing else None),
            "era": next((i.result.era for i in items if i.result.era), old.era),
        }
        new = old.model_validate({**old.model_dump(), **update})
        stale = old.last_probe_time is None or now - old.last_probe_time >= PROBE_TIME_REFRESH
        changed = new.model_copy(update={"last_probe_time": None}) != old.model_copy(
            update={"last_probe_time": None}
        )
        if changed or stale:
            new = new.model_copy(update={"last_probe_time": now})
        self.worker.status = self.worker.status.model_copy(
            update={"tiers": self.worker.status.tiers.model_copy(update={tier: new})}
        )
        self.tier_metrics(tier, new, verdict)
        return verdict

    def cold_idle(self, server: MCPServer, tier: Tier) -> bool:
        """A cold standby scaled to zero has no health to judge: it is a scale-up away."""
        return tier == "backup" and tier_replicas(server, tier, self.worker.render_context()) == 0

    def forget_tier(self, tier: Tier, old: TierStatus) -> breaker.TierRound:
        """Drop a scaled-down tier's verdict, so it is judged afresh when it starts again."""
        fresh = TierStatus(
            replicas=old.replicas, ready_replicas=old.ready_replicas, summary=old.summary
        )
        self.worker.status = self.worker.status.model_copy(
            update={"tiers": self.worker.status.tiers.model_copy(update={tier: fresh})}
        )
        return breaker.TierRound(ok=None, healthy=0, unhealthy=0, misconfigured=0)

    def tier_metrics(self, tier: Tier, status: TierStatus, verdict: breaker.TierRound) -> None:
        namespace, name = self.worker.key
        metrics.TIER_HEALTHY.labels(namespace, name, tier).set(1 if status.healthy else 0)
        metrics.BREAKER_STATE.labels(namespace, name, tier).set(BREAKER_CODE[status.breaker.phase])
        metrics.MISCONFIGURED.labels(namespace, name, tier).set(
            1 if verdict.misconfigured and not verdict.healthy else 0
        )

    # -- failover ---------------------------------------------------------------------------

    async def decide_and_act(
        self, server: MCPServer, verdicts: dict[Tier, breaker.TierRound], now: datetime
    ) -> None:
        decision = failover.decide(policy_settings(server), self.observed(server), now)
        self.worker.no_healthy_tier = isinstance(decision, failover.NoHealthyTier)
        self.worker.extra_conditions = self.health_conditions(server, verdicts, decision)
        if isinstance(decision, failover.SwitchTo):
            await self.switch(decision, now)
        elif isinstance(decision, failover.ScaleUpBackup):
            await self.scale_up(decision, now)
        elif isinstance(decision, failover.Stay) and decision.rejected_switchover:
            self.set_failover(last_switchover=decision.rejected_switchover)
            self.worker.shared.post_event(
                self.worker.body, "Warning", "SwitchoverRejected", decision.reason
            )
        self.active_tier_metric()

    def active_tier_metric(self) -> None:
        """Every round, not only on a switch: a server that never switched, or an operator
        that restarted, must still export which tier serves."""
        namespace, name = self.worker.key
        active = self.worker.status.active_tier or "primary"
        for tier in TIERS:
            metrics.ACTIVE_TIER.labels(namespace, name, tier).set(1 if tier == active else 0)

    def observed(self, server: MCPServer) -> failover.Observed:
        status = self.worker.status
        fo = status.failover
        in_progress = None
        if fo.phase in ("Intent", "ScalingBackup") and fo.target_tier and fo.started_at:
            phase = (
                failover.FailoverPhase.INTENT
                if fo.phase == "Intent"
                else failover.FailoverPhase.SCALING
            )
            in_progress = failover.InProgress(
                fo.target_tier, phase, fo.started_at, fo.kind or "failover"
            )
        primary, backup = status.tiers.primary, status.tiers.backup
        annotations = self.worker.body["metadata"].get("annotations") or {}
        return failover.Observed(
            active=status.active_tier or "primary",
            primary=breaker.BreakerPhase(primary.breaker.phase),
            backup=(
                breaker.BreakerPhase(backup.breaker.phase)
                if server.spec.backup.enabled and backup.healthy is not None
                else breaker.BreakerPhase.OPEN
            ),
            backup_ready_replicas=backup.healthy_pods,
            primary_closed_since=primary.breaker.since,
            recent_failovers=list(fo.recent),
            switchover=annotations.get(SWITCHOVER_ANNOTATION),
            switchover_processed=fo.last_switchover,
            in_progress=in_progress,
        )

    def set_failover(self, **update: Any) -> None:
        fo = self.worker.status.failover.model_copy(update=update)
        self.worker.status = self.worker.status.model_copy(update={"failover": fo})

    async def switch(self, decision: failover.SwitchTo, now: datetime) -> None:
        """Intent → selector switch → completion, each step persisted before the next."""
        fo = self.worker.status.failover
        if fo.phase not in ("Intent", "ScalingBackup") or fo.target_tier != decision.tier:
            self.set_failover(
                phase="Intent",
                target_tier=decision.tier,
                kind=decision.kind,
                reason=decision.reason[:500],
                started_at=now,
                completed_at=None,
            )
        if decision.switchover:
            self.set_failover(last_switchover=decision.switchover)
        await self.worker.write_status()
        previous = self.worker.status.active_tier or "primary"
        self.worker.status = self.worker.status.model_copy(update={"active_tier": decision.tier})
        await self.worker.reconcile()  # applies the stable Service with the new selector
        if not self.worker.outcome.ok:
            self.worker.status = self.worker.status.model_copy(update={"active_tier": previous})
            return
        recent = [t for t in self.worker.status.failover.recent if now - t < timedelta(days=1)]
        if decision.kind == "failover":
            recent = [*recent, now][-20:]
        completed = self.worker.shared.clock()
        self.set_failover(
            phase="Switched",
            completed_at=completed,
            recent=recent,
            count=self.worker.status.failover.count + 1,
        )
        # Not ``previous``: completing an intent whose selector switch a killed operator
        # already made (and wrote as activeTier) would report "backup → backup". With two
        # tiers, a switch to one always comes from the other.
        source: Tier = "backup" if decision.tier == "primary" else "primary"
        self.announce_switch(source, decision)

    async def scale_up(self, decision: failover.ScaleUpBackup, now: datetime) -> None:
        fo = self.worker.status.failover
        if fo.phase != "ScalingBackup":
            self.set_failover(
                phase="ScalingBackup",
                target_tier="backup",
                kind=decision.kind,
                reason=decision.reason[:500],
                started_at=now,
                completed_at=None,
            )
            if decision.switchover:
                self.set_failover(last_switchover=decision.switchover)
            await self.worker.write_status()
            await self.worker.reconcile()  # render_context sees ScalingBackup → warm backup
            self.worker.shared.post_event(
                self.worker.body, "Normal", "ScalingBackup", decision.reason
            )

    def announce_switch(self, previous: str, decision: failover.SwitchTo) -> None:
        namespace, name = self.worker.key
        direction = f"{previous}_to_{decision.tier}"
        metrics.FAILOVERS.labels(namespace, name, direction, decision.kind).inc()
        fo = self.worker.status.failover
        took = (
            (fo.completed_at - fo.started_at).total_seconds()
            if fo.completed_at and fo.started_at
            else 0.0
        )
        reason = {"failover": "FailedOver", "failback": "FailedBack", "switchover": "SwitchedOver"}[
            decision.kind
        ]
        self.worker.shared.post_event(
            self.worker.body,
            "Warning" if decision.kind == "failover" else "Normal",
            reason,
            f"traffic moved {previous} → {decision.tier} in {took:.2f}s: {decision.reason}",
        )
        log.info(
            "%s/%s: %s %s → %s (%s)",
            namespace,
            name,
            reason,
            previous,
            decision.tier,
            decision.reason,
        )

    def health_conditions(
        self,
        server: MCPServer,
        verdicts: dict[Tier, breaker.TierRound],
        decision: failover.Decision,
    ) -> list[Want]:
        status = self.worker.status
        wants = [tier_condition("PrimaryHealthy", status.tiers.primary, verdicts["primary"])]
        if self.cold_idle(server, "backup"):
            wants.append(
                Want(
                    "BackupHealthy",
                    "Unknown",
                    "ColdStandby",
                    "scaled to zero until a failover needs it",
                )
            )
        elif server.spec.backup.enabled:
            wants.append(tier_condition("BackupHealthy", status.tiers.backup, verdicts["backup"]))
        active = status.active_tier or "primary"
        message = getattr(decision, "reason", "")
        if active == "backup":
            wants.append(Want("FailedOver", "True", "ServingFromBackup", message))
        else:
            wants.append(Want("FailedOver", "False", "ServingFromPrimary", message))
        misconfigured = [t for t in TIERS if verdicts[t].misconfigured and not verdicts[t].healthy]
        if misconfigured:
            detail = getattr(status.tiers, misconfigured[0]).last_error or ""
            wants.append(
                Want(
                    "Misconfigured",
                    "True",
                    "ProbeRejected",
                    f"{', '.join(misconfigured)}: {detail} (no failover: the servers "
                    "answer, the probe's credentials or settings are wrong)",
                )
            )
        else:
            wants.append(Want("Misconfigured", "False", "ProbesAccepted", ""))
        return wants


SWITCHOVER_ANNOTATION = "mcp-operator.dev/switchover"


def tier_condition(type_: str, tier: TierStatus, verdict: breaker.TierRound) -> Want:
    if tier.healthy is None:
        return Want(type_, "Unknown", "Probing", "no MCP verdict yet")
    if tier.healthy:
        return Want(
            type_,
            "True",
            "MCPHealthy",
            f"{verdict.healthy} pod(s) answer MCP ({tier.era or 'unknown'} era)",
        )
    return Want(
        type_,
        "False",
        "CircuitOpen" if tier.breaker.phase == "open" else "Recovering",
        f"breaker {tier.breaker.phase}: {tier.last_error or 'no pods answer'}",
    )


def policy_settings(server: MCPServer) -> failover.FailoverSettings:
    spec = server.spec
    return failover.FailoverSettings(
        enabled=spec.failover.enabled and spec.backup.enabled,
        failback=failover.Failback(spec.failover.failback),
        cooldown_s=float(spec.failover.cooldown_seconds),
        standby=failover.Standby(spec.backup.standby),
        flap_max_failovers=spec.failover.max_failovers,
        flap_window_s=float(spec.failover.window_seconds),
        scale_up_timeout_s=float(spec.failover.cold_start_timeout_seconds),
    )


__all__ = ["FailoverStatus", "install"]
