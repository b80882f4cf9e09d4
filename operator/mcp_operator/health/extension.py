"""The health loop beside each worker: the thin I/O around :mod:`mcp_operator.health.round`.

Per round: probe each pod (bounded per server), run the pure round, patch the gates that
changed (each on its own: one failed patch retries only that pod), then write what the round
decided. A switch follows CloudNativePG's order -- the *intent* is written to status first,
then the stable Service is applied (rendered from the intent's target), then the completion
is written with an Event and a metric. A crash between any two steps resumes from status.

The loop keeps running whatever the last reconcile said (a missing ConfigMap, a refused
apply, API errors): the data path must outlive control-plane trouble. It uses the last spec
that parsed, so an invalid edit does not stop probing either. Only a paused object (the user
asked the operator to keep its hands off) is left alone.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, NamedTuple, Protocol

from mcp_operator import metrics
from mcp_operator.api.models import FailoverStatus, MCPServer, MCPServerStatus, TierStatus
from mcp_operator.health import breaker, failover, probe
from mcp_operator.health.doubt import Doubt, RoundReport
from mcp_operator.health.gate import GateSettings, GateState
from mcp_operator.health.http1 import ProbeClient
from mcp_operator.health.pace import Pacer, next_slot
from mcp_operator.health.round import (
    TIERS,
    Event,
    GatePatch,
    HealthState,
    PodView,
    Record,
    RoundInput,
    RoundOutput,
    RoundSettings,
    Tier,
    TierHealth,
    complete_switch,
    run_round,
)
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile.conditions import Want
from mcp_operator.reconcile.worker import PAUSE_ANNOTATION, ServerWorker, Shared
from mcp_operator.render.meta import (
    HEALTH_GATE,
    MCP_PORT_NAME,
    PROBE_PATH_ANNOTATION,
    PROBE_SCHEME_ANNOTATION,
    TIER_LABEL,
)
from mcp_operator.render.workload import tier_replicas

log = logging.getLogger(__name__)
Obj = dict[str, Any]
BREAKER_CODE = {"closed": 0, "half-open": 1, "open": 2}
SWITCHOVER_ANNOTATION = "mcp-operator.dev/switchover"
PROBES_PER_SERVER = 8
"""Concurrent probes per server: one server's hung pods can only exhaust its own slots."""
TOKEN_TTL_S = 60.0
gather = asyncio.gather
"""Concurrent waits; the closed-loop unit tests swap in a sequential one, which lets them
drive tens of thousands of rounds without an event loop."""
ROUND_SLACK_S = 0.25
LATE_ROUND = "this probe round ran late (the operator's event loop stalled)"


def install(shared: Shared) -> None:
    doubt, pacer = Doubt(), Pacer()
    shared.companions.append(
        lambda worker: HealthLoop(WorkerPorts(worker), doubt, pacer=pacer).run()
    )


# -- the I/O the loop needs -------------------------------------------------------------


class Ports(Protocol):
    """Everything the loop reads and writes; :class:`WorkerPorts` is the real one, the
    closed-loop unit tests bring a fake."""

    @property
    def key(self) -> tuple[str, str]: ...

    def server(self) -> MCPServer | None: ...
    def paused(self) -> bool: ...
    def state(self) -> HealthState: ...
    def pods(self) -> list[Obj]: ...
    def selector(self) -> Tier | None: ...
    def switchover(self) -> str | None: ...
    def backup_scaled_down(self, server: MCPServer) -> bool: ...
    def now(self) -> datetime: ...
    async def secret(self, name: str, key: str) -> str | None: ...
    def minted_token(self) -> str | None: ...
    async def patch_gate(self, pod: Obj, patch: GatePatch) -> Obj | None: ...
    def set_state(self, state: HealthState, out: RoundOutput) -> None: ...
    async def write_status(self, urgent: bool) -> None: ...
    async def apply_data_path(self, server: MCPServer) -> None: ...
    def post_event(self, event: Event) -> None: ...


class ProbeSettingsError(Exception):
    """The operator's own probe settings are broken (e.g. a token Secret is missing)."""


# -- the loop ---------------------------------------------------------------------------


class _Persisted(NamedTuple):
    """The part of a round's output that its status write carries."""

    state: HealthState
    conditions: tuple[Want, ...]
    no_healthy_tier: bool


ProbeFn = Callable[
    [ProbeClient, probe.ProbeTarget, probe.ProbeSettings], Awaitable[probe.ProbeResult]
]


class HealthLoop:
    """Per-object probe rounds every ``spec.health.intervalSeconds``."""

    def __init__(
        self,
        ports: Ports,
        doubt: Doubt,
        prober: ProbeFn = probe.probe,
        pacer: Pacer | None = None,
    ) -> None:
        self.ports = ports
        self.doubt = doubt
        self.pacer = pacer or Pacer()
        self.prober = prober
        self.memory: dict[str, GateState] = {}
        self.last_server: MCPServer | None = None
        self.slots = asyncio.Semaphore(PROBES_PER_SERVER)
        self.tokens: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.clients: dict[str | None, ProbeClient] = {}
        self.doubting = False
        self._settings: tuple[MCPServer, RoundSettings, probe.ProbeSettings] | None = None
        self._published: dict[str, tuple[int, ...]] = {}
        self.write_behind = True
        """Routine status writes run beside the loop (see :meth:`persist`); off in the
        simulation, which drives rounds without an event loop."""
        self._routine_write: asyncio.Task[None] | None = None
        self._routine_due: _Persisted | None = None
        self._persisted: _Persisted | None = None
        """What the last successful status write carried from this loop: a round that
        would write the same again skips building the status (a model copy, a dump and a
        compare per round, ~8 % of the operator's CPU at 300 steady servers)."""
        self._probe_series: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        # Per pod: the pod object, spec and token its target was built from (see targets()).
        self._targets: dict[str, tuple[Obj, MCPServer, str | None, probe.ProbeTarget]] = {}

    async def run(self) -> None:
        try:
            next_start: float | None = None
            while True:
                server = self.ports.server() or self.last_server
                if server is None or self.ports.paused():
                    await asyncio.sleep(1.0)
                    next_start = None
                    continue
                self.last_server = server
                period = float(server.spec.health.interval_seconds) * self.pacer.stretch
                if next_start is None:
                    next_start = self.slot(time.monotonic(), period)
                    await asyncio.sleep(max(0.0, next_start - time.monotonic()))
                late = max(0.0, time.monotonic() - next_start)
                metrics.PROBE_ROUND_LATENESS.observe(late)
                self.pacer.observe(self.ports.key, late, time.monotonic())
                try:
                    await self.round(server, late)
                except Exception:
                    log.exception("health round of %s/%s failed", *self.ports.key)
                period = float(server.spec.health.interval_seconds) * self.pacer.stretch
                next_start = self.slot(max(next_start + period / 2, time.monotonic()), period)
                await asyncio.sleep(max(0.05, next_start - time.monotonic()))
        finally:
            self.doubt.forget(self.ports.key)
            if self._routine_write is not None:
                self._routine_write.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._routine_write
            for client in self.clients.values():
                client.close_idle()

    def slot(self, after: float, period: float) -> float:
        """The server's next round: on its own phase of a grid of ``period`` (the spec's
        interval, stretched by the pacer), so the fleet's rounds stay spread out."""
        return next_slot(after, phase(self.ports.key, period), period)

    async def round(self, server: MCPServer, late_s: float = 0.0) -> RoundOutput:
        """Probe, decide (pure), act. Returns the round's output (for tests)."""
        started = time.monotonic()
        pods = [p for p in self.ports.pods() if probeable(p)]
        probe_error: str | None = None
        try:
            results = await self.probe_pods(server, pods)
        except ProbeSettingsError as exc:
            probe_error, results = str(exc), {}
        overrun = time.monotonic() - started - _budget(server) - ROUND_SLACK_S
        report = RoundReport(
            self.ports.key,
            self.ports.now().timestamp(),
            probes=len(results),
            suspect=sum(1 for r in results.values() if _suspect(r)),
            late_s=max(late_s, overrun),
        )
        self.doubt.report(report)
        fleet = self.doubt.verdict(report.at)
        # Only the fleet's doubt (held with hysteresis) is announced. One late round is
        # discarded silently: its timeouts are the event loop's, and announcing it posted
        # an Event and a status change for every passing stall of a loaded machine.
        self.announce_doubt(fleet)
        doubt = fleet
        if doubt is None and self.doubt.round_is_late(report):
            doubt = LATE_ROUND
            log.debug("%s/%s: round %.2fs late, discarded", *self.ports.key, report.late_s)
        inp = RoundInput(
            state=self.ports.state(),
            pods=[_view(p, results.get(_uid(p))) for p in pods],
            memory=self.memory,
            now=self.ports.now(),
            doubt=doubt,
            probe_error=probe_error,
            switchover=self.ports.switchover(),
            selector=self.ports.selector(),
            backup_scaled_down=self.ports.backup_scaled_down(server),
        )
        out = run_round(self.settings(server), inp)
        self.memory = out.memory
        await self.patch_gates(pods, out.gates)
        await self.act(server, inp, out)
        self.metrics(out)
        return out

    def settings(self, server: MCPServer) -> RoundSettings:
        """Built once per spec (the round runs every second; the spec rarely changes)."""
        return self._per_spec(server)[1]

    def probe_settings(self, server: MCPServer) -> probe.ProbeSettings:
        """Built once per spec, like :meth:`settings`."""
        return self._per_spec(server)[2]

    def _per_spec(self, server: MCPServer) -> tuple[MCPServer, RoundSettings, probe.ProbeSettings]:
        if self._settings is None or self._settings[0] is not server:
            timeout = float(server.spec.health.timeout_seconds)
            built = probe.ProbeSettings(
                step_timeout_s=timeout, budget_s=timeout * 2, cleanup_timeout_s=0.5
            )
            self._settings = (server, round_settings(server), built)
        return self._settings

    # -- probing ------------------------------------------------------------------------

    async def probe_pods(self, server: MCPServer, pods: list[Obj]) -> dict[str, probe.ProbeResult]:
        settings = self.probe_settings(server)
        # spec.auth on: the keys loop mints the probe's token; else the referenced Secret.
        token = self.ports.minted_token() or await self.secret_value(
            server.spec.health.bearer_token_secret_ref, "bearer token"
        )
        ca = await self.secret_value(server.spec.health.ca_secret_ref, "CA bundle")
        client = self.client(ca)

        async def one(pod: Obj, target: probe.ProbeTarget) -> tuple[str, probe.ProbeResult]:
            # The slot is taken before the probe's clock starts: waiting for a slot is
            # never counted against the pod.
            async with self.slots:
                result = await self.prober(client, target, settings)
            self.count_probe(pod, result)
            return _uid(pod), result

        targets = self.targets(server, pods, token)
        return dict(await gather(*(one(p, t) for p, t in zip(pods, targets, strict=True))))

    def targets(
        self, server: MCPServer, pods: list[Obj], token: str | None
    ) -> list[probe.ProbeTarget]:
        """Each pod's probe target, rebuilt only when the pod object (a new version from
        the watch), the spec or the token changed: the same ones every round otherwise.
        Entries of pods no longer listed are dropped."""
        kept: dict[str, tuple[Obj, MCPServer, str | None, probe.ProbeTarget]] = {}
        out = []
        for pod in pods:
            uid = _uid(pod)
            hit = self._targets.get(uid)
            if hit is None or hit[0] is not pod or hit[1] is not server or hit[2] != token:
                hit = (pod, server, token, _target(pod, server, token))
            kept[uid] = hit
            out.append(hit[3])
        self._targets = kept
        return out

    async def secret_value(self, ref: Any, what: str) -> str | None:
        """A Secret key's value, cached for a minute; a missing one is the operator's own
        probe error (``Misconfigured``), never the server's ill health."""
        if ref is None:
            return None
        cache_key = (ref.name, ref.key)
        fetched_at, value = self.tokens.get(cache_key, (0.0, None))
        if time.monotonic() - fetched_at >= TOKEN_TTL_S or value is None:
            value = await self.ports.secret(ref.name, ref.key)
            self.tokens[cache_key] = (time.monotonic(), value)
        if value is None:
            raise ProbeSettingsError(
                f"the probe's {what} Secret key {ref.name}/{ref.key} does not exist; "
                "gates and failover hold their last state until it does"
            )
        return value

    def client(self, ca: str | None) -> ProbeClient:
        """One client per CA (per server): its own kept-alive connections, so no other
        server's probes ever wait for them (concurrency is bounded by ``slots``). A CA that
        changed leaves its old client's connections to be closed here."""
        for old in [key for key in self.clients if key != ca]:
            self.clients.pop(old).close_idle()
        if ca not in self.clients:
            self.clients[ca] = probe.client_for(ca)
        client = self.clients[ca]
        client.prune()
        return client

    # -- acting -------------------------------------------------------------------------

    async def patch_gates(self, pods: list[Obj], patches: tuple[GatePatch, ...]) -> None:
        """Each patch on its own: a failure is logged and that pod alone is retried next
        round (its remembered gate differs from the pod's, so the round emits it again)."""
        by_uid = {_uid(p): p for p in pods}
        results = await gather(
            *(self.ports.patch_gate(by_uid[p.pod], p) for p in patches), return_exceptions=True
        )
        for patch, result in zip(patches, results, strict=True):
            if isinstance(result, BaseException):
                log.warning("gate patch of %s failed (retried next round): %r", patch.pod, result)

    async def act(self, server: MCPServer, inp: RoundInput, out: RoundOutput) -> None:
        before = inp.state
        if out.switch is not None:
            await self.persist(before, out, urgent=True)  # the intent, before the switch
            if inp.selector != out.switch.tier:  # else the switch already is a fact
                try:
                    await self.ports.apply_data_path(server)
                except ApiError as exc:
                    log.warning(
                        "%s/%s: Service apply failed, intent kept: %s", *self.ports.key, exc
                    )
                    return
            state, event = complete_switch(out.state, out.switch, self.ports.now())
            completed = replace(out, state=state)
            await self.persist(out.state, completed, urgent=True)
            self.ports.post_event(event)
            self.count_switch(out.switch)
            return
        await self.persist(before, out, urgent=out.rerender or bool(out.events))
        if out.rerender:
            try:
                await self.ports.apply_data_path(server)
            except ApiError as exc:
                log.warning("%s/%s: apply after %s failed: %s", *self.ports.key, out.decision, exc)

    async def persist(self, before: HealthState, out: RoundOutput, urgent: bool) -> None:
        """Write the state; on failure restore ``before`` in memory (nothing decided here may
        act -- e.g. render a Service from an intent -- unless it is durable) and re-raise.

        A routine state (no switch, no re-render, no Event: counts and verdicts nothing acts
        on) is written behind the loop instead. Such a write waits for the worker's lock
        and then in the queue of routine API calls, which at 1,000 servers reconciling is
        minutes long: awaited here, it stopped the loop's probing (a 1,000-server run made
        2,068 probes in 12 minutes, and no pod passed its gate)."""
        wanted = _Persisted(out.state, out.conditions, out.no_healthy_tier)
        if not urgent and before == out.state and wanted == self._persisted:
            return  # the status already says all of it (most rounds of a steady fleet)
        self.ports.set_state(out.state, out)
        if not urgent and self.write_behind:
            self._write_routine(wanted)
            return
        try:
            await self.ports.write_status(urgent)
        except Exception:
            self.ports.set_state(before, out)
            self._persisted = None
            raise
        self._persisted = wanted
        for event in out.events:
            self.ports.post_event(event)

    def _write_routine(self, wanted: _Persisted) -> None:
        """One write at a time, of the latest state (the worker writes only what changed):
        rounds that finish while one is in flight leave one more to follow it."""
        self._routine_due = wanted
        if self._routine_write is None or self._routine_write.done():
            self._routine_write = asyncio.create_task(self._write_routine_states())

    async def _write_routine_states(self) -> None:
        while self._routine_due is not None:
            wanted, self._routine_due = self._routine_due, None
            try:
                await self.ports.write_status(False)
            except Exception as exc:  # the next round's state brings it back
                log.warning("%s/%s: status write failed: %s", *self.ports.key, exc)
                self._persisted = None
                return
            self._persisted = wanted

    def announce_doubt(self, doubt: str | None) -> None:
        if (doubt is not None) == self.doubting:
            return
        self.doubting = doubt is not None
        metrics.PROBER_DOUBT.labels(*self.ports.key).set(1 if doubt else 0)
        if doubt:
            log.warning(
                "%s/%s: probes distrusted, gates and switching frozen: %s", *self.ports.key, doubt
            )
            self.ports.post_event(
                Event("Warning", "ProberDoubt", f"gates and switching frozen: {doubt}")
            )
        else:
            log.info("%s/%s: probes trusted again, gates and switching resume", *self.ports.key)
            self.ports.post_event(
                Event("Normal", "ProberTrusted", "probes healthy again; resuming")
            )

    # -- metrics ------------------------------------------------------------------------

    def metrics(self, out: RoundOutput) -> None:
        """The tiers' gauges, set only when a value changed: at 1,000 servers the rounds
        run 500 times a second, and the registry's label lookups were a tenth of their CPU.
        The series go with the server (``metrics.forget``, when its loop is cancelled)."""
        namespace, name = self.ports.key
        for tier in TIERS:
            health = out.state.tier(tier)
            verdict = out.verdicts[tier]
            values = (
                1 if health.healthy else 0,
                BREAKER_CODE[health.breaker.phase.value],
                1 if verdict.misconfigured and not verdict.healthy else 0,
                1 if tier == out.state.active else 0,
            )
            if self._published.get(tier) == values:
                continue
            self._published[tier] = values
            gauges = (
                metrics.TIER_HEALTHY,
                metrics.BREAKER_STATE,
                metrics.MISCONFIGURED,
                metrics.ACTIVE_TIER,
            )
            for gauge, value in zip(gauges, values, strict=True):
                gauge.labels(namespace, name, tier).set(value)

    def count_probe(self, pod: Obj, result: probe.ProbeResult) -> None:
        """Per-probe duration and outcome (the alerts' error rate and p95 latency). Labels
        stay bounded: the tier label, the era (modern, legacy or none), four outcomes. The
        labelled children are looked up once per combination (see :meth:`metrics`)."""
        tier = (pod["metadata"].get("labels") or {}).get(TIER_LABEL)
        if tier not in TIERS:
            return
        key = (tier, result.era or "none", result.outcome.value)
        series = self._probe_series.get(key)
        if series is None:
            namespace, name = self.ports.key
            series = self._probe_series[key] = (
                metrics.PROBE_DURATION.labels(namespace, name, *key[:2]),
                metrics.PROBE_TOTAL.labels(namespace, name, *key),
            )
        series[0].observe(result.duration_s)
        series[1].inc()

    def count_switch(self, decision: failover.SwitchTo) -> None:
        namespace, name = self.ports.key
        source = "backup" if decision.tier == "primary" else "primary"
        metrics.FAILOVERS.labels(
            namespace, name, f"{source}_to_{decision.tier}", decision.kind
        ).inc()
        log.info(
            "%s/%s: %s %s → %s (%s)",
            namespace,
            name,
            decision.kind,
            source,
            decision.tier,
            decision.reason,
        )


# -- pure helpers -----------------------------------------------------------------------


@contextlib.contextmanager
def _no_boost(key: object) -> Iterator[None]:
    yield


def phase(key: tuple[str, str], interval: float) -> float:
    """Where in the interval a server's rounds fall: spread by its name, so the loops a
    restarted operator starts all at once do not probe in one burst every interval (at
    1,000 servers, 4,000 probes at the same instant and a late round for most of them).
    Stable across restarts; costs one interval at most before a server's first round."""
    return zlib.crc32("/".join(key).encode()) % 1000 / 1000 * interval


def probeable(pod: Obj) -> bool:
    """Pods worth probing: scheduled, with an IP, running and not being deleted."""
    status = pod.get("status") or {}
    return (
        status.get("phase") == "Running"
        and bool(status.get("podIP"))
        and not pod["metadata"].get("deletionTimestamp")
    )


def _target(pod: Obj, server: MCPServer, token: str | None) -> probe.ProbeTarget:
    health = server.spec.health
    return probe.ProbeTarget(
        url=pod_url(pod, server),
        host_header=health.host_header,
        bearer_token=token,
        headers=dict(health.headers),
        sni_hostname=(health.host_header or "").split(":")[0] or None,
    )


def pod_url(pod: Obj, server: MCPServer) -> str:
    """The pod probed as it was created: its own container port and the path and scheme
    stamped on it by the renderer (the spec's only for pods that predate the stamp)."""
    annotations = pod["metadata"].get("annotations") or {}
    path = annotations.get(PROBE_PATH_ANNOTATION) or server.spec.path
    scheme = annotations.get(PROBE_SCHEME_ANNOTATION) or server.spec.health.scheme
    port = server.spec.port
    for container in (pod.get("spec") or {}).get("containers") or []:
        for item in container.get("ports") or []:
            if item.get("name") == MCP_PORT_NAME and item.get("containerPort"):
                port = int(item["containerPort"])
    host = pod["status"]["podIP"]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{path}"


def _uid(pod: Obj) -> str:
    meta = pod["metadata"]
    return str(meta.get("uid") or meta["name"])


def _view(pod: Obj, result: probe.ProbeResult | None) -> PodView:
    tier = (pod["metadata"].get("labels") or {}).get(TIER_LABEL)
    return PodView(
        name=_uid(pod),
        tier="backup" if tier == "backup" else "primary",
        gate=gate_of(pod),
        result=result,
    )


def gate_of(pod: Obj) -> bool | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == HEALTH_GATE:
            return bool(cond.get("status") == "True")
    return None


def _suspect(result: probe.ProbeResult) -> bool:
    """A failure the prober itself could have caused (not a refusal from the pod)."""
    return result.outcome is probe.Outcome.UNHEALTHY and not result.refused


def _budget(server: MCPServer) -> float:
    return float(server.spec.health.timeout_seconds) * 2 + 0.5


def round_settings(server: MCPServer) -> RoundSettings:
    spec = server.spec
    health = spec.health
    return RoundSettings(
        breaker=breaker.BreakerSettings(
            health.failure_threshold,
            health.success_threshold,
            float(health.recovery_timeout_seconds),
        ),
        gate=GateSettings(health.failure_threshold, health.success_threshold),
        failover=failover.FailoverSettings(
            enabled=spec.failover.enabled and spec.backup.enabled,
            failback=failover.Failback(spec.failover.failback),
            cooldown_s=float(spec.failover.cooldown_seconds),
            standby=failover.Standby(spec.backup.standby),
            flap_max_failovers=spec.failover.max_failovers,
            flap_window_s=float(spec.failover.window_seconds),
            scale_up_timeout_s=float(spec.failover.cold_start_timeout_seconds),
            intent_max_age_s=intent_max_age(server),
        ),
        min_healthy={"primary": spec.min_healthy("primary"), "backup": spec.min_healthy("backup")},
        backup_enabled=spec.backup.enabled,
    )


def intent_max_age(server: MCPServer) -> float:
    """An intent completes within a round unless the Service apply keeps failing: after
    ten rounds (at least a minute) it is cancelled, and a new one may start afresh."""
    return max(60.0, 10.0 * server.spec.health.interval_seconds)


# -- state <-> status -------------------------------------------------------------------


def state_of(status: MCPServerStatus) -> HealthState:
    def tier(t: TierStatus) -> TierHealth:
        return TierHealth(
            breaker=breaker.BreakerState.from_dict(t.breaker.model_dump(mode="json")),
            healthy=t.healthy,
            healthy_pods=t.healthy_pods,
            last_error=t.last_error,
            era=t.era,
            changed_at=t.last_probe_time,
        )

    fo = status.failover
    record = Record(
        phase=fo.phase,
        target=fo.target_tier,
        kind=fo.kind,
        reason=fo.reason,
        started_at=fo.started_at,
        completed_at=fo.completed_at,
        count=fo.count,
        recent=tuple(fo.recent),
        last_switchover=fo.last_switchover,
    )
    return HealthState(
        active=status.active_tier or "primary",
        primary=tier(status.tiers.primary),
        backup=tier(status.tiers.backup),
        record=record,
    )


def with_state(status: MCPServerStatus, state: HealthState) -> MCPServerStatus:
    def tier(old: TierStatus, new: TierHealth) -> TierStatus:
        return old.model_validate(
            {
                **old.model_dump(),
                "breaker": new.breaker.to_dict(),
                "healthy": new.healthy,
                "healthy_pods": new.healthy_pods,
                "consecutive_failures": new.breaker.failures,
                "last_error": new.last_error,
                "era": new.era,
                "last_probe_time": new.changed_at,
            }
        )

    r = state.record
    fo = FailoverStatus(
        phase=r.phase,
        target_tier=r.target,
        kind=r.kind,
        reason=r.reason,
        started_at=r.started_at,
        completed_at=r.completed_at,
        count=r.count,
        recent=list(r.recent),
        last_switchover=r.last_switchover,
    )
    tiers = status.tiers.model_copy(
        update={
            "primary": tier(status.tiers.primary, state.primary),
            "backup": tier(status.tiers.backup, state.backup),
        }
    )
    return status.model_copy(update={"active_tier": state.active, "tiers": tiers, "failover": fo})


@dataclass
class WorkerPorts:
    """The real ports: the worker's status and index, the API client, kopf events."""

    worker: ServerWorker
    _state: tuple[MCPServerStatus, HealthState] | None = None

    @property
    def key(self) -> tuple[str, str]:
        return self.worker.key

    def server(self) -> MCPServer | None:
        return self.worker.server

    def paused(self) -> bool:
        annotations = self.worker.body["metadata"].get("annotations") or {}
        return annotations.get(PAUSE_ANNOTATION) == "disabled"

    def state(self) -> HealthState:
        """Read back from the status once per status object (the worker replaces it on
        every change, never edits it in place), not once per round."""
        status = self.worker.status
        if self._state is None or self._state[0] is not status:
            self._state = (status, state_of(status))
        return self._state[1]

    def pods(self) -> list[Obj]:
        return self.worker.shared.index.pods(self.worker.key)

    def selector(self) -> Tier | None:
        service = self.worker.shared.index.children(self.worker.key).get(
            ("Service", self.worker.key[1])
        )
        tier = ((service or {}).get("spec") or {}).get("selector", {}).get(TIER_LABEL)
        return tier if tier in TIERS else None

    def switchover(self) -> str | None:
        annotations = self.worker.body["metadata"].get("annotations") or {}
        value = annotations.get(SWITCHOVER_ANNOTATION)
        return str(value) if value is not None else None

    def backup_scaled_down(self, server: MCPServer) -> bool:
        ctx = self.worker.render_context()
        return server.spec.backup.enabled and tier_replicas(server, "backup", ctx) == 0

    def now(self) -> datetime:
        return self.worker.shared.clock()

    def minted_token(self) -> str | None:
        return self.worker.probe_token()

    async def secret(self, name: str, key: str) -> str | None:
        found = await self.worker.shared.client.get("v1", "Secret", self.worker.key[0], name)
        raw = ((found or {}).get("data") or {}).get(key)
        return base64.b64decode(raw).decode().strip() if raw else None

    async def patch_gate(self, pod: Obj, patch: GatePatch) -> Obj | None:
        condition = {
            "type": HEALTH_GATE,
            "status": "True" if patch.ready else "False",
            "reason": patch.reason,
            "message": patch.message[:500],
            "lastTransitionTime": self.now().strftime("%Y-%m-%dT%H:%M:%SZ"),
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
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise
        self.worker.shared.index.observe("Pod", result, deleted=False)
        return result

    def set_state(self, state: HealthState, out: RoundOutput) -> None:
        self.worker.status = with_state(self.worker.status, state)
        self.worker.no_healthy_tier = out.no_healthy_tier
        self.worker.extra_conditions = list(out.conditions)

    async def write_status(self, urgent: bool) -> None:
        # An urgent write waits for the worker's lock, which a reconcile of this server may
        # hold while its calls queue behind every other server's: boost them meanwhile.
        boost = self.worker.shared.api_slots.boosted if urgent else _no_boost
        with boost(self.worker.key):
            async with self.worker.lock:
                await self.worker.write_status(urgent=urgent)

    async def apply_data_path(self, server: MCPServer) -> None:
        with self.worker.shared.api_slots.boosted(self.worker.key):  # a switch: urgent
            async with self.worker.lock:
                await self.worker.apply_data_path(server)

    def post_event(self, event: Event) -> None:
        self.worker.shared.post_event(self.worker.body, event.type, event.reason, event.message)


__all__ = ["HealthLoop", "Ports", "WorkerPorts", "install", "round_settings"]
