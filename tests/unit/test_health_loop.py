"""The health loop as a CLOSED LOOP: the real HealthLoop against a fake API and clock, with
scripted probe outcomes; every decision (gate, intent, Service selector, cold scale-up) is
fed into the next round. Stories a user would notice, then seeded random fault schedules
checking invariants (see ``health_sim`` for the world)."""

from __future__ import annotations

import asyncio
import copy
import itertools
import json
import logging
import random
import time
from collections import Counter
from datetime import timedelta
from typing import Any

from mcp_operator.api.models import MCPServer
from mcp_operator.health import extension
from mcp_operator.health.round import HealthState, Record, TierHealth
from tests.unit.health_sim import (
    START,
    Faults,
    Operator,
    World,
    record_open,
    server,
    set_tier,
    tier_failed,
)


def started(**spec: object) -> tuple[World, Operator]:
    world = World(server(**spec))
    op = Operator(world)
    op.settle(4)
    return world, op


def reasons(world: World) -> list[str]:
    return [e.reason for e in world.events]


# -- gates -----------------------------------------------------------------------------


def test_new_pods_serve_on_their_first_good_probe() -> None:
    world = World(server())
    op = Operator(world)
    op.round()
    assert all(world.gate(n) for n in world.pods), world.pods


def test_a_freeze_shorter_than_the_threshold_gates_nothing_out() -> None:
    world, op = started(health={"failureThreshold": 3})
    set_tier(world, "primary", "timeout")
    op.settle(2)
    assert sorted(world.serving("primary")) == sorted(world.tier_pods("primary"))
    set_tier(world, "primary", "ok")
    op.settle(3)
    assert world.selector == "primary" and world.persisted.record.phase == "Idle"


def test_one_pod_timing_out_leaves_after_the_threshold_and_its_sibling_serves() -> None:
    world, op = started(health={"failureThreshold": 3})
    bad, good = world.tier_pods("primary")
    world.health[bad] = "timeout"
    op.settle(2)
    assert world.gate(bad) is True  # two failures: still serving
    op.round()
    assert world.gate(bad) is False and world.gate(good) is True
    assert world.selector == "primary"  # min healthy 1: the tier is fine


def test_a_refused_connection_gates_the_pod_out_at_once() -> None:
    world, op = started(health={"failureThreshold": 3})
    dead = world.tier_pods("primary")[0]
    world.health[dead] = "refused"
    op.round()
    assert world.gate(dead) is False


def test_a_recovered_pod_needs_success_threshold_unless_its_tier_has_none() -> None:
    world, op = started(health={"failureThreshold": 1, "successThreshold": 3})
    one, _two = world.tier_pods("primary")
    world.health[one] = "refused"
    op.round()
    world.health[one] = "ok"
    op.settle(2)
    assert world.gate(one) is False  # two good probes of three: sibling carries traffic
    op.round()
    assert world.gate(one) is True
    # Whole tier out: the first good probe readies it (nothing left to protect).
    set_tier(world, "backup", "refused")
    op.round()
    set_tier(world, "backup", "ok")
    op.round()
    assert world.serving("backup")


def test_a_failed_gate_patch_retries_only_that_pod() -> None:
    world, op = started(health={"failureThreshold": 1})
    one, two = world.tier_pods("primary")
    world.health[one] = world.health[two] = "refused"
    world.faults = Faults(gate_patch={one})
    op.round()
    assert world.gate(one) is True and world.gate(two) is False
    op.round()
    assert world.gate(one) is False


def test_a_late_round_freezes_gates_and_switching_silently() -> None:
    """One late round is discarded: nothing moves, and nothing is written or announced
    (each passing stall of a loaded machine used to post an Event and rewrite status)."""
    world, op = started(health={"failureThreshold": 1})
    set_tier(world, "primary", "timeout")
    world.faults = Faults(late=True)
    before = world.changed_writes
    op.round()
    assert world.serving("primary") and world.selector == "primary"
    assert world.changed_writes == before
    assert "ProberDoubt" not in reasons(world)
    op.settle(3)
    assert world.selector == "backup"
    assert "ProberDoubt" not in reasons(world) and "ProberTrusted" not in reasons(world)


# -- auth and the operator's own errors ----------------------------------------------------


def test_an_oauth_server_serves_and_is_reported_unverified_not_failed_over() -> None:
    world = World(server())
    for name in world.pods:
        world.health[name] = "unverified"
    op = Operator(world)
    op.settle(10)
    assert all(world.gate(n) for n in world.pods)
    assert world.selector == "primary" and world.persisted.record.phase == "Idle"
    out = op.round()
    assert out is not None
    verified = next(c for c in out.conditions if c.type == "Verified")
    assert (verified.status, verified.reason) == ("False", "AuthenticationRequired")
    assert "bearerTokenSecretRef" in verified.message
    misconfigured = next(c for c in out.conditions if c.type == "Misconfigured")
    assert misconfigured.status == "False"


def test_a_missing_token_secret_is_misconfigured_and_holds_everything() -> None:
    world, op = started(health={"bearerTokenSecretRef": {"name": "t", "key": "k"}})
    set_tier(world, "primary", "refused")  # would fail over, but nothing is probed
    op.loop.tokens.clear()  # the Secret was deleted more than a minute (the cache) ago
    for _ in range(4):
        world.faults = Faults(token_missing=True)
        out = op.round()
    assert out is not None
    misconfigured = next(c for c in out.conditions if c.type == "Misconfigured")
    assert misconfigured.status == "True" and "t/k" in misconfigured.message
    assert world.selector == "primary" and world.serving("primary")


# -- failover records ---------------------------------------------------------------------


def test_killed_primary_fails_over_then_fails_back_after_cooldown() -> None:
    world, op = started()
    set_tier(world, "primary", "refused")
    op.settle(2)  # failure threshold 2
    assert world.selector == "backup" and world.persisted.active == "backup"
    assert world.persisted.record.phase == "Switched" and "FailedOver" in reasons(world)
    set_tier(world, "primary", "ok")
    op.settle(12)
    assert world.selector == "primary" and "FailedBack" in reasons(world)


def test_no_switch_to_a_backup_that_failed_this_round() -> None:
    world, op = started(health={"failureThreshold": 1})
    set_tier(world, "primary", "refused")
    set_tier(world, "backup", "timeout")  # one bad round: its breaker is still closed
    op.round()
    assert world.selector == "primary"


def test_cold_scale_up_cancelled_when_the_primary_recovers_scales_back_down() -> None:
    world, op = started(backup={"standby": "cold"}, failover={"coldStartTimeoutSeconds": 30})
    assert not world.tier_pods("backup")
    set_tier(world, "primary", "timeout")
    op.settle(2)
    assert world.persisted.record.phase == "ScalingBackup" and world.tier_pods("backup")
    set_tier(world, "backup", "timeout")  # the new backup is slow to start
    set_tier(world, "primary", "ok")
    op.settle(4)
    assert world.persisted.record.phase == "Cancelled"
    assert not world.tier_pods("backup")  # scaled back down
    set_tier(world, "backup", "ok")
    op.settle(10)
    assert world.selector == "primary"  # the abandoned scale-up never switches later
    assert "FailoverCancelled" in reasons(world)


def test_disabling_failover_cancels_a_pending_scale_up() -> None:
    world, op = started(backup={"standby": "cold"})
    set_tier(world, "primary", "timeout")
    op.settle(2)
    assert world.persisted.record.phase == "ScalingBackup"
    world.spec = server(backup={"standby": "cold"}, failover={"enabled": False})
    op.round()
    assert world.persisted.record.phase == "Cancelled" and not world.tier_pods("backup")


def test_service_apply_failure_keeps_the_intent_and_a_later_round_completes_it() -> None:
    world, op = started()
    set_tier(world, "primary", "refused")
    op.round()
    world.faults = Faults(apply=True)
    op.round()
    assert world.persisted.record.phase == "Intent" and world.selector == "primary"
    op.round()
    assert world.selector == "backup" and world.persisted.record.phase == "Switched"


def test_crash_after_the_service_apply_never_flips_the_selector_back() -> None:
    world, op = started()
    set_tier(world, "primary", "refused")
    op.round()
    world.faults = Faults(crash_after_apply=True)
    op.round()
    assert world.selector == "backup" and world.persisted.record.phase == "Intent"
    set_tier(world, "backup", "timeout")  # even a bad backup round: the switch is a fact
    op.round()
    assert world.persisted.record.phase == "Switched" and world.persisted.active == "backup"
    assert [t for _, t in world.selector_changes] == ["backup"]


def test_an_intent_left_by_a_long_outage_expires() -> None:
    world, op = started()
    world.persisted = world.memory_state = HealthState(
        record=Record(phase="Intent", target="backup", kind="failover", started_at=START)
    )
    world.now = START + timedelta(minutes=5)
    set_tier(world, "backup", "ok")
    op.crash()
    op.round()
    assert world.persisted.record.phase == "Cancelled"
    assert "expired" in (world.persisted.record.reason or "")


def test_a_stale_switchover_is_not_replayed_after_status_loss() -> None:
    world, op = started()
    world.annotation = "backup@2026-11-30T11:00:00Z"  # processed long ago
    world.persisted = world.memory_state = HealthState()  # status lost
    op.crash()
    op.settle(2)
    assert world.selector == "primary"
    assert "SwitchoverRejected" in reasons(world)
    assert world.persisted.record.last_switchover == world.annotation


def test_a_switchover_during_a_scale_up_is_decided_not_dropped() -> None:
    world, op = started(backup={"standby": "cold"}, failover={"coldStartTimeoutSeconds": 60})
    set_tier(world, "primary", "timeout")
    op.settle(2)
    set_tier(world, "backup", "timeout")
    world.annotation = "primary@2026-11-30T12:00:03Z"
    op.round()
    assert "SwitchoverRejected" in reasons(world)  # primary is failing: said so


def test_backup_disabled_is_a_single_tier_that_never_switches() -> None:
    world, op = started(backup={"enabled": False})
    assert not world.tier_pods("backup")
    set_tier(world, "primary", "refused")
    op.settle(6)
    assert world.selector == "primary" and world.persisted.record.phase == "Idle"


def test_steady_state_writes_nothing() -> None:
    world, op = started()
    op.settle(30)  # cooldowns and breakers settle
    before = world.changed_writes
    op.settle(50)
    assert world.changed_writes == before


# -- seeded random fault schedules --------------------------------------------------------

SCHEDULES = 10_000
ROUNDS = 7
SETTLE = 8


def _random_spec(rng: random.Random) -> dict[str, object]:
    return {
        "primary": {"replicas": rng.choice([1, 2])},
        "backup": {
            "standby": rng.choice(["hot", "cold"]),
            "enabled": rng.random() > 0.1,
        },
        "health": {
            "failureThreshold": rng.choice([1, 2, 3]),
            "successThreshold": rng.choice([1, 2]),
        },
        "failover": {
            "enabled": rng.random() > 0.2,
            "failback": rng.choice(["Automatic", "Manual"]),
            "cooldownSeconds": rng.choice([0, 2, 5]),
            "coldStartTimeoutSeconds": 5,
        },
    }


def _random_start(world: World, rng: random.Random) -> None:
    """Begin from an arbitrary reachable persisted situation, as a restarted operator would
    find it (the Service selects the active tier, or an intent's target it already got)."""
    phase = rng.choice(["Idle", "Idle", "Intent", "ScalingBackup", "Switched", "Cancelled"])
    active = rng.choice(["primary", "backup"])
    if phase == "ScalingBackup":
        active = "primary"
    other = "backup" if active == "primary" else "primary"
    record = Record(
        phase=phase,  # type: ignore[arg-type]
        target=other if phase in ("Intent", "ScalingBackup") else active,  # type: ignore[arg-type]
        kind=rng.choice(["failover", "failback", "switchover"]),
        started_at=START - timedelta(seconds=rng.choice([0, 3, 30, 300])),
    )
    primary = TierHealth(healthy=True) if rng.random() < 0.5 else TierHealth()
    backup = TierHealth(healthy=True) if rng.random() < 0.5 else TierHealth()
    state = HealthState(active=active, primary=primary, backup=backup, record=record)  # type: ignore[arg-type]
    world.persisted = world.memory_state = state
    choices = [active, other] if phase == "Intent" else [active]
    world.selector = rng.choice(choices) if world.spec.spec.backup.enabled else "primary"  # type: ignore[assignment]
    world.converge_backup()


def _random_faults(rng: random.Random, world: World) -> Faults:
    pods = list(world.pods)
    return Faults(
        status_write=rng.random() < 0.08,
        apply=rng.random() < 0.1,
        gate_patch={p for p in pods if rng.random() < 0.05},
        crash_after_write=rng.random() < 0.05,
        crash_after_apply=rng.random() < 0.05,
        late=rng.random() < 0.05,
    )


def _check_round(
    world: World,
    before_selector: str,
    faults: Faults,
    failed: dict[str, bool],
    probed: dict[str, str],
) -> None:
    spec = world.spec.spec
    if world.selector != before_selector:
        assert not failed[world.selector], ("switched to a tier that failed this round", world)
        kinds = [e.reason for e in world.events[-4:]]
        if not spec.failover.enabled and world.annotation is None:
            assert "FailedOver" not in kinds and "FailedBack" not in kinds, world
    # No healthy tier fully gated out (when nothing interfered with the gate patches).
    if not faults.late and not faults.gate_patch:
        for tier in ("primary", "backup"):
            names = [n for n in world.tier_pods(tier) if n in probed]  # type: ignore[arg-type]
            if any(probed[n] in ("ok", "unverified") for n in names):
                assert world.serving(tier), (tier, probed, world)  # type: ignore[arg-type]
    # No unbounded record.
    record = world.persisted.record
    # (A refused status write keeps whatever was persisted: the close waits for a write.)
    interfered = faults.status_write or faults.crash_after_write or faults.crash_after_apply
    if record_open(world.persisted) and record.started_at is not None and not interfered:
        limit = 60 if record.phase == "Intent" else spec.failover.cold_start_timeout_seconds
        age = (world.now - record.started_at).total_seconds()
        # One round late at most: a new switchover annotation is decided first (one round).
        assert age <= limit + 2 * spec.health.interval_seconds, (age, world)


_SPECS: dict[str, MCPServer] = {}


def _server(spec: dict[str, object]) -> MCPServer:
    """Validated once per distinct spec (a few hundred), not once per schedule."""
    key = json.dumps(spec, sort_keys=True)
    if key not in _SPECS:
        _SPECS[key] = server(**copy.deepcopy(spec))
    return _SPECS[key]


def run_schedule(seed: int) -> None:
    rng = random.Random(seed)
    world = World(_server(_random_spec(rng)))
    _random_start(world, rng)
    op = Operator(world)
    if rng.random() < 0.3:
        world.annotation = rng.choice(
            ["backup@2026-11-30T12:00:01Z", "primary@2026-11-30T12:00:02Z", "junk"]
        )
    for _ in range(ROUNDS):
        for tier in ("primary", "backup"):
            for name in world.tier_pods(tier):  # type: ignore[arg-type]
                world.health[name] = rng.choice(["ok", "ok", "timeout", "refused", "unverified"])
        world.faults = _random_faults(rng, world)
        faults = world.faults
        failed = {t: tier_failed(world, t) for t in ("primary", "backup")}  # type: ignore[arg-type]
        if rng.random() < 0.3 and not faults.apply:
            op.reconcile()
        selector, probed = world.selector, dict(world.health)
        op.round()
        _check_round(world, selector, faults, failed, probed)
        if rng.random() < 0.1:
            world.now += timedelta(seconds=rng.choice([30, 90]))  # the operator was away
    # Faults stop; the world heals: every record must close, the Service match status.
    for name in world.pods:
        world.health[name] = "ok"
    for _ in range(SETTLE):
        op.reconcile()
        selector, probed = world.selector, dict(world.health)
        failed = {t: tier_failed(world, t) for t in ("primary", "backup")}  # type: ignore[arg-type]
        op.round()
        _check_round(world, selector, Faults(), failed, probed)
        for name in world.pods:
            world.health.setdefault(name, "ok")
    assert not record_open(world.persisted), world.persisted.record
    expected = world.persisted.active if world.spec.spec.backup.enabled else "primary"
    assert world.selector == expected, (world.selector, world.persisted)
    opened = sum(
        1 for e in world.events if e.reason in ("ScalingBackup",)
    )  # a scale-up always ends in a switch or a cancel
    closed = sum(
        1
        for e in world.events
        if e.reason in ("FailedOver", "FailedBack", "SwitchedOver", "FailoverCancelled")
    )
    assert closed >= opened or not opened, reasons(world)


def test_random_fault_schedules_keep_the_invariants() -> None:
    """≥10,000 seeded schedules: no switch to a tier that failed this round; no healthy
    tier fully gated out; records always close and never outlive their limit; enabled:false
    never switches on its own; the Service ends where the status says."""
    started_at = time.monotonic()
    quiet = logging.getLogger("mcp_operator.health")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # injected faults log a warning each; not the point here
    try:
        for seed in range(SCHEDULES):
            run_schedule(seed)
    finally:
        quiet.setLevel(level)
    print(f"{SCHEDULES} schedules in {time.monotonic() - started_at:.1f}s")


def test_each_pod_is_probed_as_it_was_created() -> None:
    """A spec.port/path change rolls out new pods; old ones keep being probed at the port
    and path they serve (their container port and the renderer's stamp), so the rollout
    gates nothing out."""
    from mcp_operator.health.extension import pod_url
    from mcp_operator.render import RenderContext, render
    from mcp_operator.render.meta import PROBE_PATH_ANNOTATION, PROBE_SCHEME_ANNOTATION

    old = server(port=8080, path="/mcp")
    new = server(port=9000, path="/v2/mcp", health={"scheme": "https"})
    deployment = next(o for o in render(old, RenderContext()) if o["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    assert template["metadata"]["annotations"][PROBE_PATH_ANNOTATION] == "/mcp"
    assert template["metadata"]["annotations"][PROBE_SCHEME_ANNOTATION] == "http"
    pod = {**template, "status": {"podIP": "10.1.2.3"}}
    assert pod_url(pod, new) == "http://10.1.2.3:8080/mcp"  # probed as created
    bare = {"metadata": {"name": "p"}, "spec": {}, "status": {"podIP": "10.1.2.3"}}
    assert pod_url(bare, new) == "https://10.1.2.3:9000/v2/mcp"  # no stamp: the spec


def test_the_prober_doubts_itself_when_most_servers_fail_at_once() -> None:
    from mcp_operator.health.doubt import Doubt, RoundReport

    doubt = Doubt()
    for i in range(3):  # three servers failing: too few to tell the prober from the servers
        doubt.report(RoundReport(f"s{i}", 100.0, probes=3, suspect=3))
    assert doubt.verdict(100.0) is None
    doubt.report(RoundReport("s3", 100.0, probes=3, suspect=2))
    doubt.report(RoundReport("s4", 100.0, probes=3, suspect=0))
    assert doubt.verdict(100.0) is not None  # 4 of 5 failing at once: our own fault
    for i in range(4):  # refusals are the pods' own answer, never a reason to doubt
        doubt.report(RoundReport(f"s{i}", 101.0, probes=3, suspect=0))
    assert doubt.verdict(101.0) is not None  # held (hysteresis) ...
    assert doubt.verdict(111.0) is None  # ... until clear_s without the condition
    assert doubt.verdict(200.0) is None  # old reports age out


def test_every_probe_is_counted_by_tier_and_outcome_with_its_duration() -> None:
    """The series MCPServerProbeErrorRateHigh and MCPServerProbeLatencyHigh read."""
    from prometheus_client import REGISTRY

    def sample(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, {"namespace": "ns", "server": "s", **labels}) or 0

    ok = {"tier": "primary", "era": "modern", "outcome": "healthy"}
    bad = {"tier": "primary", "era": "none", "outcome": "unhealthy"}
    before_ok, before_bad = (
        sample("mcp_operator_probes_total", **ok),
        sample("mcp_operator_probes_total", **bad),
    )
    before_count = sample("mcp_operator_probe_duration_seconds_count", tier="primary", era="none")
    world, op = started()
    primaries = len(world.tier_pods("primary"))
    assert sample("mcp_operator_probes_total", **ok) - before_ok >= 4 * primaries
    set_tier(world, "primary", "timeout")
    op.settle(2)
    assert sample("mcp_operator_probes_total", **bad) - before_bad == 2 * primaries
    count = sample("mcp_operator_probe_duration_seconds_count", tier="primary", era="none")
    assert count - before_count == 2 * primaries


def test_rounds_of_many_servers_are_spread_over_the_interval_not_bunched() -> None:
    """A restarted operator starts every loop at once: their phases must spread them."""
    phases = [extension.phase(("ns", f"server-{n}"), 2.0) for n in range(1000)]
    assert all(0.0 <= p < 2.0 for p in phases)
    assert phases == [extension.phase(("ns", f"server-{n}"), 2.0) for n in range(1000)]
    buckets = Counter(int(p / 0.2) for p in phases)  # ten slices of the interval
    assert len(buckets) == 10 and max(buckets.values()) < 2 * 100, buckets


async def test_a_routine_status_write_stuck_in_the_api_queue_does_not_stop_probing() -> None:
    """At 1,000 servers a routine write waits minutes for the worker's lock and the API
    queue; the loop must keep probing meanwhile, and write the latest state once after."""
    world, op = started()
    set_tier(world, "backup", "timeout")  # every round has news: the breaker counts
    loop = op.loop
    loop.write_behind = True
    release = asyncio.Event()
    routine: list[bool] = []
    write = loop.ports.write_status
    probes: list[str] = []
    prober = loop.prober

    async def queued(urgent: bool) -> None:
        if not urgent:
            routine.append(urgent)
            await release.wait()
        await write(urgent)

    async def counted(*args: Any) -> Any:
        probes.append("probe")
        return await prober(*args)

    loop.ports.write_status = queued  # type: ignore[method-assign]
    loop.prober = counted
    for _ in range(5):
        await asyncio.wait_for(loop.round(world.spec), timeout=5)
        world.now += timedelta(seconds=1)
    assert len(probes) == 5 * len(world.pods)  # every round probed every pod
    assert len(routine) == 1  # one write in flight, the others folded into one due
    release.set()
    await asyncio.wait_for(loop._routine_write, timeout=5)  # type: ignore[arg-type]
    assert len(routine) == 2 and world.persisted == world.memory_state


def test_a_steady_server_writes_no_status_and_builds_none() -> None:
    """Rounds with nothing new skip the status write altogether (not only the API call:
    building the status to compare was ~8 % of the operator's CPU); a failed write is
    tried again by the next round, which has nothing new either."""
    world, op = started()
    calls: list[bool] = []
    write = op.loop.ports.write_status

    async def counted(urgent: bool) -> None:
        calls.append(urgent)
        await write(urgent)

    op.loop.ports.write_status = counted  # type: ignore[method-assign]
    op.settle(10)
    assert calls == []
    world.health[world.tier_pods("primary")[0]] = "refused"
    world.faults = Faults(status_write=True)
    op.round()  # the gate and the count change; the write fails
    written = world.persisted
    world.faults = Faults()
    op.round()
    assert len(calls) >= 2 and world.persisted != written
    assert world.persisted == world.memory_state
    calls.clear()
    op.settle(5)
    assert calls == []


def test_a_pod_keeps_its_probe_target_until_the_pod_or_the_spec_changes() -> None:
    """Targets are built once per pod version (building them every round was measurable
    at 1,000 servers); a new version of a pod, a new spec or a gone pod is never served
    from the cache."""
    world, op = started()
    seen: list[dict[str, Any]] = []
    prober = op.loop.prober

    async def recording(client: Any, target: Any, settings: Any) -> Any:
        seen[-1][target.url] = target
        return await prober(client, target, settings)

    op.loop.prober = recording

    def one_round() -> dict[str, Any]:
        seen.append({})
        op.round()
        return seen[-1]

    first, second = one_round(), one_round()
    assert first.keys() == second.keys() and len(first) == len(world.pods)
    assert all(second[url] is first[url] for url in first)
    name = world.tier_pods("primary")[0]
    world.pods[name] = copy.deepcopy(world.pods[name])  # a new version from the watch
    url = next(u for u in first if world.pods[name]["status"]["podIP"] in u)
    third = one_round()
    assert third[url] is not first[url] and third[url] == first[url]
    assert all(third[u] is first[u] for u in first if u != url)
    del world.pods[world.tier_pods("backup")[0]]
    one_round()
    assert len(op.loop._targets) == len(world.pods)
    world.spec = server(health={"headers": {"X-Tenant": "a"}})
    fourth = one_round()
    assert not any(fourth[u] is third[u] for u in fourth)


async def test_the_loop_runs_its_rounds_at_the_stretched_interval() -> None:
    """The real run loop (its own clock): a fleet paced x3 probes every 3 s, not 1 s, and
    each server's rounds land on its own slots of that grid."""
    from mcp_operator.health.pace import Pace, Pacer

    starts: dict[float, list[float]] = {1.0: [], 3.0: []}
    loops = []
    for stretch, seen in starts.items():
        _, op = started()  # interval 1 s
        pacer = Pacer()
        pacer.pace = Pace(stretch)
        loop = extension.HealthLoop(op.loop.ports, op.loop.doubt, op.loop.prober, pacer=pacer)
        loop.slots = op.loop.slots
        original = loop.round

        async def counted(server: MCPServer, late_s: float = 0.0, *, _o=original, _s=seen) -> Any:
            _s.append(time.monotonic())
            return await _o(server, late_s)

        loop.round = counted  # type: ignore[method-assign]
        loops.append(asyncio.create_task(loop.run()))
    await asyncio.sleep(7.5)
    for task in loops:
        task.cancel()
    await asyncio.gather(*loops, return_exceptions=True)
    gaps = {s: [b - a for a, b in itertools.pairwise(t)] for s, t in starts.items()}
    assert gaps[1.0] and all(0.9 < g < 1.3 for g in gaps[1.0]), gaps
    assert gaps[3.0] and all(2.9 < g < 3.3 for g in gaps[3.0]), gaps
    key = ("ns", "s")
    expected_offset = extension.phase(key, 3.0)
    assert all(
        abs((t - expected_offset) % 3.0) < 0.3 or (t - expected_offset) % 3.0 > 2.7
        for t in starts[3.0]
    ), starts
