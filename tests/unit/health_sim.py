"""A closed-loop world for the health loop: the real :class:`HealthLoop` (probe → pure round
→ gates → intent → Service → completion) against a fake API with a fake clock, scripted
probe outcomes and injected faults (status write refused, Service apply refused, gate patch
refused, operator crash between any two writes, late rounds).

Decisions feed the next round: the Service selector the loop applied decides which tier the
next round's "traffic" goes to; a cold backup's pods exist only while the rendered state
asks for them; a crash throws away everything in memory and resumes from the persisted
status and the pods' gates, exactly what a restarted operator finds.
"""

from __future__ import annotations

import itertools
from collections.abc import Coroutine
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from mcp_operator.api.models import MCPServer
from mcp_operator.health import extension
from mcp_operator.health.doubt import Doubt
from mcp_operator.health.extension import HealthLoop
from mcp_operator.health.http1 import ProbeClient
from mcp_operator.health.probe import Outcome, ProbeResult, ProbeSettings, ProbeTarget
from mcp_operator.health.round import Event, GatePatch, HealthState, RoundOutput, Tier
from mcp_operator.kube.client import ApiError
from mcp_operator.render.meta import HEALTH_GATE, TIER_LABEL

Obj = dict[str, Any]
Health = Literal["ok", "timeout", "refused", "unverified"]
START = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


class Crash(Exception):
    """The operator process dies here."""


def run_sync(coro: Coroutine[Any, Any, Any]) -> Any:
    """Drive a coroutine that never really waits (every fake answers at once, and
    ``extension.gather`` is sequential here) without an event loop: several times faster
    than an event loop over tens of thousands of rounds."""
    try:
        while True:
            coro.send(None)
    except StopIteration as stop:
        return stop.value


async def sequential_gather(*aws: Any, return_exceptions: bool = False) -> list[Any]:
    results: list[Any] = []
    for aw in aws:
        try:
            results.append(await aw)
        except Exception as exc:
            if not return_exceptions:
                raise
            results.append(exc)
    return results


extension.gather = sequential_gather  # type: ignore[assignment]


class _Slots:
    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


def server(**spec: Any) -> MCPServer:
    health = {
        "intervalSeconds": 1,
        "timeoutSeconds": 1,
        "failureThreshold": 2,
        "successThreshold": 2,
        "recoveryTimeoutSeconds": 2,
        **spec.pop("health", {}),
    }
    failover = {"cooldownSeconds": 3, **spec.pop("failover", {})}
    return MCPServer.model_validate(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "s", "namespace": "ns", "uid": "u"},
            "spec": {"image": "x", "health": health, "failover": failover, **spec},
        }
    )


@dataclass
class Faults:
    """Faults for the next round (cleared after it)."""

    status_write: bool = False
    apply: bool = False
    gate_patch: set[str] = field(default_factory=set)  # pod names
    crash_after_write: bool = False  # dies right after a status write (the intent)
    crash_after_apply: bool = False  # dies right after the Service apply
    late: bool = False
    token_missing: bool = False


@dataclass
class World:
    spec: MCPServer
    now: datetime = START
    persisted: HealthState = field(default_factory=HealthState)
    memory_state: HealthState = field(default_factory=HealthState)
    selector: Tier = "primary"
    pods: dict[str, Obj] = field(default_factory=dict)
    health: dict[str, Health] = field(default_factory=dict)  # by pod name
    annotation: str | None = None
    faults: Faults = field(default_factory=Faults)
    events: list[Event] = field(default_factory=list)
    writes: int = 0
    changed_writes: int = 0
    selector_changes: list[tuple[datetime, Tier]] = field(default_factory=list)
    ids: Any = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        for _ in range(self.spec.spec.primary.replicas):
            self.add_pod("primary")
        self.converge_backup()
        self.memory_state = self.persisted

    # -- cluster ------------------------------------------------------------------------

    def add_pod(self, tier: Tier) -> str:
        n = next(self.ids)
        name = f"{tier[0]}{n}"
        self.pods[name] = {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": name,
                "labels": {TIER_LABEL: tier},
            },
            "spec": {},
            "status": {"phase": "Running", "podIP": f"10.0.0.{n}", "conditions": []},
        }
        self.health.setdefault(name, "ok")
        return name

    def tier_pods(self, tier: Tier) -> list[str]:
        return [n for n, p in self.pods.items() if p["metadata"]["labels"][TIER_LABEL] == tier]

    def rendered(self, state: HealthState) -> tuple[Tier, bool]:
        """What the worker renders from a status: (selected tier, backup runs)."""
        spec = self.spec.spec
        record = state.record
        active: Tier = state.active
        if record.phase == "Intent" and record.target:
            active = record.target
        if not spec.backup.enabled:
            return "primary", False
        warm = record.phase in ("Intent", "ScalingBackup") and record.target == "backup"
        runs = spec.backup.standby == "hot" or active == "backup" or warm
        return active, runs

    def converge_backup(self, state: HealthState | None = None) -> None:
        _, runs = self.rendered(state or self.persisted)
        have = self.tier_pods("backup")
        want = self.spec.spec.backup.replicas if runs else 0
        for name in have[want:]:
            del self.pods[name]
        for _ in range(want - len(have)):
            self.add_pod("backup")

    def apply(self, state: HealthState) -> None:
        tier, _ = self.rendered(state)
        if tier != self.selector:
            self.selector = tier
            self.selector_changes.append((self.now, tier))
        self.converge_backup(state)

    def gate(self, name: str) -> bool | None:
        for cond in self.pods[name]["status"]["conditions"]:
            if cond["type"] == HEALTH_GATE:
                return bool(cond["status"] == "True")
        return None

    def serving(self, tier: Tier) -> list[str]:
        return [n for n in self.tier_pods(tier) if self.gate(n)]

    def backup_scaled_down(self) -> bool:
        _, runs = self.rendered(self.memory_state)
        return self.spec.spec.backup.enabled and not runs


class FakePorts:
    """The :class:`~mcp_operator.health.extension.Ports` of one (simulated) process."""

    def __init__(self, world: World) -> None:
        self.world = world

    @property
    def key(self) -> tuple[str, str]:
        return ("ns", "s")

    def server(self) -> MCPServer | None:
        return self.world.spec

    def paused(self) -> bool:
        return False

    def state(self) -> HealthState:
        return self.world.memory_state

    def pods(self) -> list[Obj]:
        return list(self.world.pods.values())

    def selector(self) -> Tier | None:
        return self.world.selector

    def switchover(self) -> str | None:
        return self.world.annotation

    def backup_scaled_down(self, server: MCPServer) -> bool:
        return self.world.backup_scaled_down()

    def now(self) -> datetime:
        return self.world.now

    async def secret(self, name: str, key: str) -> str | None:
        return None if self.world.faults.token_missing else "token"

    def minted_token(self) -> str | None:
        return None

    async def patch_gate(self, pod: Obj, patch: GatePatch) -> Obj | None:
        name = pod["metadata"]["name"]
        if name in self.world.faults.gate_patch:
            raise ApiError(500, "InternalError", "injected")
        live = self.world.pods.get(name)
        if live is None:
            return None
        cond = {"type": HEALTH_GATE, "status": "True" if patch.ready else "False"}
        live["status"]["conditions"] = [cond]
        return live

    def set_state(self, state: HealthState, out: RoundOutput) -> None:
        self.world.memory_state = state

    async def write_status(self, urgent: bool) -> None:
        world = self.world
        if world.faults.status_write:
            raise ApiError(500, "InternalError", "injected")
        world.writes += 1
        if world.memory_state != world.persisted:
            world.changed_writes += 1
        world.persisted = world.memory_state
        if world.faults.crash_after_write and world.persisted.record.phase == "Intent":
            raise Crash

    async def apply_data_path(self, server: MCPServer) -> None:
        if self.world.faults.apply:
            raise ApiError(500, "InternalError", "injected")
        self.world.apply(self.world.memory_state)
        if self.world.faults.crash_after_apply:
            raise Crash

    def post_event(self, event: Event) -> None:
        self.world.events.append(event)


def fake_prober(world: World) -> Any:
    by_ip: dict[str, str] = {}

    async def prober(
        client: ProbeClient, target: ProbeTarget, settings: ProbeSettings
    ) -> ProbeResult:
        if not by_ip or len(by_ip) != len(world.pods):
            by_ip.clear()
            by_ip.update({p["status"]["podIP"]: n for n, p in world.pods.items()})
        name = by_ip[target.url.split("//")[1].split(":")[0]]
        health = world.health.get(name, "ok")
        if health == "ok":
            return ProbeResult(Outcome.HEALTHY, "modern", 0.001, "ok")
        if health == "unverified":
            return ProbeResult(Outcome.UNVERIFIED, None, 0.001, "HTTP 401", challenge=True)
        if health == "refused":
            return ProbeResult(Outcome.UNHEALTHY, None, 0.001, "ConnectError: refused", True)
        return ProbeResult(Outcome.UNHEALTHY, None, 0.001, "timeout during server/discover")

    return prober


class Operator:
    """One operator process: a HealthLoop over FakePorts; ``crash`` starts a fresh one."""

    def __init__(self, world: World) -> None:
        self.world = world
        self.loop = self._new()

    def _new(self) -> HealthLoop:
        loop = HealthLoop(FakePorts(self.world), Doubt(), prober=fake_prober(self.world))
        loop.slots = _Slots()  # type: ignore[assignment]
        loop.write_behind = False  # no event loop here: every write is awaited in the round
        loop.metrics = lambda out: None  # type: ignore[method-assign]  # global registry
        loop.client = lambda ca: None  # type: ignore[assignment,method-assign,return-value]
        return loop

    def crash(self) -> None:
        self.world.memory_state = self.world.persisted
        self.loop = self._new()

    def round(self) -> RoundOutput | None:
        """One round at the world's clock; faults apply to it and are then cleared."""
        world = self.world
        late = 2.0 if world.faults.late else 0.0
        try:
            out: RoundOutput | None = run_sync(self.loop.round(world.spec, late))
        except Crash:
            self.crash()
            out = None
        except ApiError:
            out = None  # the loop logs and retries next round
        world.faults = Faults()
        world.now += timedelta(seconds=world.spec.spec.health.interval_seconds)
        return out

    def reconcile(self) -> None:
        """The worker's own level-based reconcile, from its in-memory status."""
        self.world.apply(self.world.memory_state)

    def settle(self, rounds: int) -> None:
        for _ in range(rounds):
            self.round()


def set_tier(world: World, tier: Tier, health: Health) -> None:
    for name in world.tier_pods(tier):
        world.health[name] = health


def tier_failed(world: World, tier: Tier) -> bool:
    """Scripted truth: the tier has pods and none answers (min healthy 1)."""
    names = world.tier_pods(tier)
    return bool(names) and not any(world.health.get(n) in ("ok", "unverified") for n in names)


def record_open(state: HealthState) -> bool:
    return state.record.phase in ("Intent", "ScalingBackup")


__all__ = [
    "Crash",
    "Faults",
    "Operator",
    "World",
    "record_open",
    "replace",
    "run_sync",
    "server",
    "set_tier",
    "tier_failed",
]
