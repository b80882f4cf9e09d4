"""Failover end to end: real control plane, pods as local processes, the operator as a
subprocess. Faults are injected on the pods' processes (found by ``--host <podIP>`` among
the node agent's children):

* *kept dead* -- a thread SIGKILLs every process of the pod as soon as the agent restarts
  it (a single kill is healed by the agent's restart in ~1 s, before any failover);
* *hung* -- SIGSTOP, which the agent does not notice (its TCP probes still connect), until
  SIGCONT.

Each test has its own namespace and uses fast health settings so a run takes minutes.
"""

from __future__ import annotations

import json
import re
import threading
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.faults import hung, kept_dead
from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply, get_server, stable_selector_tier, wait_condition

pytestmark = pytest.mark.e2e

NAME = "weather"
FAST_HEALTH = {
    "intervalSeconds": 1,
    "failureThreshold": 2,
    "successThreshold": 1,
    "recoveryTimeoutSeconds": 2,
}
COOLDOWN = 5
TIER_LABEL = "mcp-operator.dev/tier"
SERVER_LABEL = "mcp-operator.dev/server"


# -- cluster helpers -----------------------------------------------------------------------


def tier_ips(kubectl: Kubectl, ns: str, tier: str) -> set[str]:
    pods = get_json(kubectl, "pods", "-n", ns, "-l", f"{SERVER_LABEL}={NAME},{TIER_LABEL}={tier}")
    return {
        p["status"]["podIP"]
        for p in pods["items"]
        if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
    }


def fast_server(ns: str, **spec: Any) -> dict[str, Any]:
    health = {**FAST_HEALTH, **spec.pop("health", {})}
    failover = {"cooldownSeconds": COOLDOWN, **spec.pop("failover", {})}
    primary = {"replicas": 1, **spec.pop("primary", {})}
    return server_manifest(NAME, ns, primary=primary, health=health, failover=failover, **spec)


def start_healthy(kubectl: Kubectl, ns: str, **spec: Any) -> tuple[set[str], set[str]]:
    """Apply, wait for Ready and both tiers' MCP verdicts; return (primary, backup) IPs."""
    apply(kubectl, fast_server(ns, **spec))
    wait_condition(kubectl, ns, NAME, "Ready", "True", timeout=60)
    wait_condition(kubectl, ns, NAME, "PrimaryHealthy", "True", timeout=30)
    wait_condition(kubectl, ns, NAME, "BackupHealthy", "True", timeout=30)
    primary, backup = tier_ips(kubectl, ns, "primary"), tier_ips(kubectl, ns, "backup")
    assert len(primary) == 1 and len(backup) == 1, (primary, backup)
    return primary, backup


def wait_selector(kubectl: Kubectl, ns: str, tier: str, timeout: float) -> float:
    """Wait until the stable Service selects ``tier``; return when (monotonic)."""
    wait_for(
        lambda: stable_selector_tier(kubectl, ns, NAME) == tier,
        timeout=timeout,
        interval=0.1,
        what=f"stable Service selector -> {tier}",
    )
    return time.monotonic()


def failover_status(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return dict((get_server(kubectl, ns, NAME).get("status") or {}).get("failover") or {})


def events(kubectl: Kubectl, ns: str, reason: str) -> list[dict[str, Any]]:
    items = get_json(kubectl, "events", "-n", ns)["items"]
    return [
        e
        for e in items
        if e.get("reason") == reason
        and e["involvedObject"].get("name") == NAME
        and e["involvedObject"].get("kind") == "MCPServer"
    ]


def failovers_metric(op: OperatorProcess, ns: str, direction: str, kind: str) -> float:
    pattern = re.compile(
        r"^mcp_operator_failovers_total\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)$", re.M
    )
    want = {"namespace": ns, "server": NAME, "direction": direction, "reason": kind}
    for match in pattern.finditer(op.metrics()):
        labels = dict(re.findall(r'(\w+)="([^"]*)"', match["labels"]))
        if all(labels.get(k) == v for k, v in want.items()):
            return float(match["value"])
    return 0.0


def active_tier_metric(op: OperatorProcess, ns: str) -> dict[str, float]:
    found = {}
    for line in op.metrics().splitlines():
        if line.startswith("mcp_operator_active_tier{"):
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if labels.get("namespace") == ns and labels.get("server") == NAME:
                found[labels["tier"]] = float(line.rsplit(None, 1)[1])
    return found


def printed_column(kubectl: Kubectl, ns: str, column: str) -> str:
    lines = kubectl("get", "mcps", NAME, "-n", ns).stdout.splitlines()
    header, row = lines[0].split(), lines[1].split()
    return row[header.index(column)]


def ready_endpoint_ips(kubectl: Kubectl, ns: str) -> set[str]:
    slices = get_json(
        kubectl, "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={NAME}"
    )
    return {
        address
        for s in slices["items"]
        for ep in s.get("endpoints") or []
        if (ep.get("conditions") or {}).get("ready", True)
        for address in ep.get("addresses") or []
    }


def rfc3339_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ensure_running(op: OperatorProcess) -> None:
    if not op.alive:
        op.start()
    op.wait_live()


# -- tests ---------------------------------------------------------------------------------


@pytest.fixture
def op(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator (one per session: ``tests/e2e/ops.py`` is a pytest plugin);
    tests that kill it restart it before they end."""
    return operator


def test_primary_kept_dead_fails_over_to_backup(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    primary, backup = start_healthy(kubectl, unique_ns)
    before = failovers_metric(op, unique_ns, "primary_to_backup", "failover")
    assert active_tier_metric(op, unique_ns) == {"primary": 1.0, "backup": 0.0}

    with kept_dead(node_agent.pid, primary) as dead:
        switched = wait_selector(kubectl, unique_ns, "backup", timeout=30)
        took = switched - dead["first_kill"]
        # interval 1 s x threshold 2 (+ a round in flight, the write, the apply).
        assert took < 6, f"failover took {took:.1f}s"

        obj = wait_condition(kubectl, unique_ns, NAME, "FailedOver", "True", timeout=10)
        status = obj["status"]
        assert status["activeTier"] == "backup"
        fo = status["failover"]
        assert fo["phase"] == "Switched" and fo["targetTier"] == "backup"
        assert fo["kind"] == "failover" and fo["count"] == 1
        assert status["tiers"]["primary"]["breaker"]["phase"] in ("open", "half-open")
        assert printed_column(kubectl, unique_ns, "ACTIVE") == "backup"
        wait_for(lambda: events(kubectl, unique_ns, "FailedOver"), timeout=10, what="event")
        assert failovers_metric(op, unique_ns, "primary_to_backup", "failover") == before + 1
        assert active_tier_metric(op, unique_ns) == {"primary": 0.0, "backup": 1.0}
        # What clients reach: the stable Service's ready endpoints are the backup pods only.
        wait_for(
            lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
            timeout=15,
            what=f"ready endpoints == backup {backup}",
        )
        # Staying down keeps it there (no flapping while the primary is dead).
        time.sleep(3)
        assert stable_selector_tier(kubectl, unique_ns, NAME) == "backup"
        assert failover_status(kubectl, unique_ns)["count"] == 1
    print(f"\nkept-dead primary: selector switched {took:.2f}s after the first kill")


def test_hung_primary_fails_over_by_timeout_and_fails_back_after_cooldown(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    primary, _ = start_healthy(kubectl, unique_ns)
    with hung(node_agent.pid, primary):
        stopped = time.monotonic()
        switched = wait_selector(kubectl, unique_ns, "backup", timeout=30)
        status = get_server(kubectl, unique_ns, NAME)["status"]
        assert status["activeTier"] == "backup"
        assert status["failover"]["kind"] == "failover"
        error = status["tiers"]["primary"]["lastError"] or ""
        assert re.search(r"time|timeout|timed out", error, re.I), error
        resumed = time.monotonic()
    back = wait_selector(kubectl, unique_ns, "primary", timeout=60)
    status = get_server(kubectl, unique_ns, NAME)["status"]
    assert status["activeTier"] == "primary"
    assert status["failover"]["kind"] == "failback" and status["failover"]["count"] == 2
    # Failback only after the primary has been healthy for the whole cooldown.
    assert back - resumed >= COOLDOWN, f"failed back {back - resumed:.1f}s after SIGCONT"
    closed_since = datetime.fromisoformat(status["tiers"]["primary"]["breaker"]["since"])
    completed = datetime.fromisoformat(status["failover"]["completedAt"])
    assert (completed - closed_since).total_seconds() >= COOLDOWN
    wait_for(lambda: events(kubectl, unique_ns, "FailedBack"), timeout=10, what="event")
    wait_condition(kubectl, unique_ns, NAME, "FailedOver", "False", timeout=10)
    print(
        f"\nhung primary: failover {switched - stopped:.2f}s after SIGSTOP, "
        f"failback {back - resumed:.2f}s after SIGCONT"
    )


def test_manual_failback_waits_for_switchover_annotation(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    primary, _ = start_healthy(kubectl, unique_ns, failover={"failback": "Manual"})
    with kept_dead(node_agent.pid, primary):
        wait_selector(kubectl, unique_ns, "backup", timeout=30)
    # The primary comes back (after the agent's crash back-off) and is healthy again ...
    wait_for(
        lambda: (
            get_server(kubectl, unique_ns, NAME)["status"]["tiers"]["primary"]["breaker"]["phase"]
            == "closed"
        ),
        timeout=90,
        what="primary breaker closed again",
    )
    # ... but Manual failback keeps traffic on the backup well past the cooldown.
    time.sleep(COOLDOWN + 3)
    status = get_server(kubectl, unique_ns, NAME)["status"]
    assert condition({"status": status}, "PrimaryHealthy")["status"] == "True"  # type: ignore[index]
    assert status["activeTier"] == "backup"
    assert stable_selector_tier(kubectl, unique_ns, NAME) == "backup"
    assert status["failover"]["count"] == 1

    value = f"primary@{rfc3339_now()}"
    kubectl("annotate", "mcps", NAME, "-n", unique_ns, f"mcp-operator.dev/switchover={value}")
    wait_selector(kubectl, unique_ns, "primary", timeout=15)
    fo = wait_for(
        lambda: (
            (f := failover_status(kubectl, unique_ns)).get("phase") == "Switched"
            and f.get("kind") == "switchover"
            and f
        ),
        timeout=10,
        what="switchover recorded",
    )
    assert fo["lastSwitchover"] == value and fo["count"] == 2
    assert get_server(kubectl, unique_ns, NAME)["status"]["activeTier"] == "primary"
    wait_for(lambda: events(kubectl, unique_ns, "SwitchedOver"), timeout=10, what="event")

    # Fail over again; then re-applying the *same* annotation value (removed and set again)
    # is not a new request: traffic stays on the backup.
    primary = tier_ips(kubectl, unique_ns, "primary")
    with kept_dead(node_agent.pid, primary):
        wait_selector(kubectl, unique_ns, "backup", timeout=30)
        wait_for(
            lambda: failover_status(kubectl, unique_ns).get("phase") == "Switched",
            timeout=10,
            what="second failover recorded",
        )
    kubectl("annotate", "mcps", NAME, "-n", unique_ns, "mcp-operator.dev/switchover-")
    kubectl("annotate", "mcps", NAME, "-n", unique_ns, f"mcp-operator.dev/switchover={value}")
    wait_for(
        lambda: (
            get_server(kubectl, unique_ns, NAME)["status"]["tiers"]["primary"]["breaker"]["phase"]
            == "closed"
        ),
        timeout=90,
        what="primary breaker closed again",
    )
    time.sleep(COOLDOWN + 2)
    fo = failover_status(kubectl, unique_ns)
    assert stable_selector_tier(kubectl, unique_ns, NAME) == "backup"
    assert fo["count"] == 3 and fo["kind"] == "failover" and fo["lastSwitchover"] == value
    assert not events(kubectl, unique_ns, "SwitchoverRejected")


def test_both_tiers_down_is_no_healthy_tier_without_flapping(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    primary, backup = start_healthy(kubectl, unique_ns)
    with kept_dead(node_agent.pid, primary | backup):
        obj = wait_condition(
            kubectl, unique_ns, NAME, "Ready", "False", timeout=30, reason="NoHealthyTier"
        )
        count = obj["status"]["failover"]["count"]
        active = obj["status"]["activeTier"]
        selector = stable_selector_tier(kubectl, unique_ns, NAME)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            obj = get_server(kubectl, unique_ns, NAME)
            assert obj["status"]["failover"]["count"] == count
            assert obj["status"]["activeTier"] == active
            assert stable_selector_tier(kubectl, unique_ns, NAME) == selector
            ready = condition(obj, "Ready")
            assert ready is not None and ready["reason"] == "NoHealthyTier", ready
            time.sleep(0.5)
    assert count <= 1  # at most the failover that raced the backup's own breaker


def test_oauth_protected_server_is_served_and_reported_unverified(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    """Issue 8: a server answering 401 + WWW-Authenticate to the token-less probe (the MCP
    authorization spec's normal case) used to be gated out for ever. Its process is up:
    its pods serve, a condition says health could not be verified, and nothing fails over."""
    env = [{"name": "EXAMPLE_REQUIRE_TOKEN", "value": "x"}]
    apply(kubectl, fast_server(unique_ns, env=env))
    obj = wait_condition(kubectl, unique_ns, NAME, "Ready", "True", timeout=60)
    obj = wait_condition(kubectl, unique_ns, NAME, "Verified", "False", timeout=30)
    verified = condition(obj, "Verified")
    assert verified is not None and verified["reason"] == "AuthenticationRequired", verified
    assert "bearerTokenSecretRef" in verified["message"]
    primary = tier_ips(kubectl, unique_ns, "primary")
    wait_for(
        lambda: ready_endpoint_ips(kubectl, unique_ns) == primary,
        timeout=15,
        what=f"ready endpoints == primary {primary}",
    )
    deadline = time.monotonic() + 8  # 8 rounds, 4x the failure threshold
    while time.monotonic() < deadline:
        status = get_server(kubectl, unique_ns, NAME)["status"]
        assert (status.get("activeTier") or "primary") == "primary"
        assert status["failover"]["count"] == 0
        for tier in ("primary", "backup"):
            assert status["tiers"][tier]["breaker"]["phase"] == "closed", status["tiers"]
        time.sleep(0.5)
    assert stable_selector_tier(kubectl, unique_ns, NAME) == "primary"
    assert ready_endpoint_ips(kubectl, unique_ns) == primary
    assert not events(kubectl, unique_ns, "FailedOver")
    assert condition(get_server(kubectl, unique_ns, NAME), "Misconfigured")["status"] == "False"  # type: ignore[index]


def test_missing_token_secret_is_misconfigured_and_keeps_serving(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    """Only the operator's own probe errors are Misconfigured; gates hold meanwhile."""
    primary, _ = start_healthy(kubectl, unique_ns)
    kubectl("create", "secret", "generic", "probe-token", "-n", unique_ns, "--from-literal=t=abc")
    ref = {"name": "probe-token", "key": "t"}
    apply(kubectl, fast_server(unique_ns, health={"bearerTokenSecretRef": ref}))
    wait_condition(kubectl, unique_ns, NAME, "Reconciled", "True", timeout=30)
    kubectl("delete", "secret", "probe-token", "-n", unique_ns)
    obj = wait_condition(kubectl, unique_ns, NAME, "Misconfigured", "True", timeout=90)
    assert "probe-token/t" in condition(obj, "Misconfigured")["message"]  # type: ignore[index]
    assert ready_endpoint_ips(kubectl, unique_ns) == primary
    assert stable_selector_tier(kubectl, unique_ns, NAME) == "primary"


def test_reconcile_failure_does_not_stop_failover(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    """Issue 8: the health loop used to stop whenever the last reconcile was not Applied.
    A spec edit referencing a missing ConfigMap (MissingReference: nothing applied) must
    not stop probing, gating or failover."""
    primary, backup = start_healthy(kubectl, unique_ns)
    env = [
        {
            "name": "FROM_MISSING",
            "valueFrom": {"configMapKeyRef": {"name": "does-not-exist", "key": "k"}},
        }
    ]
    apply(kubectl, fast_server(unique_ns, env=env))
    wait_for(
        lambda: (
            (condition(get_server(kubectl, unique_ns, NAME), "Reconciled") or {}).get("reason")
            == "MissingReference"
        ),
        timeout=30,
        what="Reconciled=False MissingReference",
    )
    with kept_dead(node_agent.pid, primary) as dead:
        switched = wait_selector(kubectl, unique_ns, "backup", timeout=30)
        assert switched - dead["first_kill"] < 8
        wait_for(
            lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
            timeout=15,
            what=f"ready endpoints == backup {backup}",
        )


@pytest.mark.parametrize("died", ["before-switch", "after-switch"])
def test_operator_killed_with_intent_recorded_completes_on_restart(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str, died: str
) -> None:
    """Deterministic: the state a killed operator leaves is written while none runs.

    ``before-switch``: only the intent was recorded. ``after-switch``: the selector was
    switched too (and the reconcile wrote ``activeTier: backup``), but the completion was
    not recorded. Either way the new operator completes it exactly once.
    """
    primary, backup = start_healthy(kubectl, unique_ns)
    try:
        op.kill9()
        with kept_dead(node_agent.pid, primary):
            status: dict[str, Any] = {
                "failover": {
                    "phase": "Intent",
                    "targetTier": "backup",
                    "kind": "failover",
                    "reason": "primary breaker is open; backup is healthy",
                    "startedAt": rfc3339_now(),
                    "completedAt": None,
                }
            }
            if died == "after-switch":
                status["activeTier"] = "backup"
                kubectl(
                    "patch",
                    "service",
                    NAME,
                    "-n",
                    unique_ns,
                    "--type=merge",
                    "-p",
                    json.dumps({"spec": {"selector": {TIER_LABEL: "backup"}}}),
                )
            kubectl(
                "patch",
                "mcps",
                NAME,
                "-n",
                unique_ns,
                "--subresource=status",
                "--type=merge",
                "-p",
                json.dumps({"status": status}),
            )
            time.sleep(1)
            expected = "primary" if died == "before-switch" else "backup"
            assert stable_selector_tier(kubectl, unique_ns, NAME) == expected
            restarted = time.monotonic()
            op.start()
            op.wait_live()
            switched = wait_selector(kubectl, unique_ns, "backup", timeout=30)
            fo = wait_for(
                lambda: (f := failover_status(kubectl, unique_ns)).get("phase") == "Switched" and f,
                timeout=15,
                what="switch recorded",
            )
            completed = time.monotonic()
            assert fo["count"] == 1 and fo["targetTier"] == "backup"
            assert get_server(kubectl, unique_ns, NAME)["status"]["activeTier"] == "backup"
            found = wait_for(
                lambda: events(kubectl, unique_ns, "FailedOver"), timeout=10, what="event"
            )
            assert "primary → backup" in found[0]["message"], found[0]["message"]
            assert failovers_metric(op, unique_ns, "primary_to_backup", "failover") == 1
            assert failovers_metric(op, unique_ns, "backup_to_backup", "failover") == 0
            # The gauge is exported per probe round: it may trail the recorded switch by one.
            wait_for(
                lambda: active_tier_metric(op, unique_ns) == {"primary": 0.0, "backup": 1.0},
                timeout=10,
                what="active_tier gauge on backup",
            )
            wait_for(
                lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
                timeout=15,
                what="ready endpoints == backup",
            )
            print(
                f"\n{died}: selector on backup {switched - restarted:.2f}s, switch recorded "
                f"{completed - restarted:.2f}s after the restart"
            )
    finally:
        ensure_running(op)


def _watch_for_intent(
    cluster: ControlPlane, ns: str, found: threading.Event, seen: dict[str, Any]
) -> None:
    """Stream watch events of the MCPServer; set ``found`` at the first non-idle failover."""
    path = f"/apis/mcp-operator.dev/v1alpha1/namespaces/{ns}/mcpservers"
    params = {"watch": "1", "fieldSelector": f"metadata.name={NAME}", "timeoutSeconds": "60"}
    with (
        cluster.client(timeout=70) as client,
        client.stream("GET", path, params=params) as resp,
    ):
        for line in resp.iter_lines():
            if not line:
                continue
            obj = json.loads(line)["object"]
            fo = (obj.get("status") or {}).get("failover") or {}
            if fo.get("phase") in ("Intent", "Switched") and fo.get("targetTier") == "backup":
                seen["phase"] = fo["phase"]
                seen["at"] = time.monotonic()
                found.set()
                return


def test_operator_kill9_right_after_intent_completes_on_restart(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    cluster: ControlPlane,
    unique_ns: str,
) -> None:
    """Probabilistic: kill -9 as soon as a watch shows the intent (it may land before the
    selector switch, between it and the record, or after; each must converge)."""
    primary, backup = start_healthy(kubectl, unique_ns)
    found, seen = threading.Event(), {}
    watcher = threading.Thread(
        target=_watch_for_intent, args=(cluster, unique_ns, found, seen), daemon=True
    )
    watcher.start()
    time.sleep(0.5)  # the watch is open
    try:
        with kept_dead(node_agent.pid, primary):
            assert found.wait(30), "no failover intent within 30s"
            op.kill9()
            killed_after = time.monotonic() - seen["at"]
            at_kill = {
                "phase": failover_status(kubectl, unique_ns).get("phase"),
                "selector": stable_selector_tier(kubectl, unique_ns, NAME),
            }
            op.start()
            op.wait_live()
            wait_selector(kubectl, unique_ns, "backup", timeout=30)
            fo = wait_for(
                lambda: (f := failover_status(kubectl, unique_ns)).get("phase") == "Switched" and f,
                timeout=15,
                what="switch recorded",
            )
            assert fo["count"] == 1, fo  # completed once, not twice
            assert get_server(kubectl, unique_ns, NAME)["status"]["activeTier"] == "backup"
            wait_for(
                lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
                timeout=15,
                what="ready endpoints == backup",
            )
            print(
                f"\nwatch saw {seen['phase']}; kill -9 {killed_after * 1000:.0f} ms later; "
                f"state at kill: {at_kill}"
            )
    finally:
        ensure_running(op)
        watcher.join(timeout=1)


def test_cold_standby_scales_up_on_failure_and_back_to_zero_after_failback(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    apply(kubectl, fast_server(unique_ns, backup={"replicas": 1, "standby": "cold"}))
    wait_condition(kubectl, unique_ns, NAME, "Ready", "True", timeout=60)
    wait_condition(kubectl, unique_ns, NAME, "BackupHealthy", "Unknown", reason="ColdStandby")

    def backup_replicas() -> int:
        deploy = get_json(kubectl, "deployment", f"{NAME}-backup", "-n", unique_ns)
        return int(deploy["spec"]["replicas"])

    assert backup_replicas() == 0
    primary = tier_ips(kubectl, unique_ns, "primary")
    with kept_dead(node_agent.pid, primary):
        wait_for(lambda: backup_replicas() == 1, timeout=30, what="cold backup scaled up")
        wait_selector(kubectl, unique_ns, "backup", timeout=60)
        fo = failover_status(kubectl, unique_ns)
        assert (fo["phase"], fo["kind"], fo["targetTier"]) == ("Switched", "failover", "backup")
        backup = tier_ips(kubectl, unique_ns, "backup")
        wait_for(
            lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
            timeout=10,
            what="the stable Service's ready endpoints are the backup pod",
        )
    wait_selector(kubectl, unique_ns, "primary", timeout=90)
    wait_for(lambda: backup_replicas() == 0, timeout=30, what="cold backup scaled to zero")
    wait_condition(kubectl, unique_ns, NAME, "BackupHealthy", "Unknown", reason="ColdStandby")


def test_a_stable_server_writes_no_status(
    op: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    """Issue 9 (quiet steady state): no lastProbeTime heartbeat, no ticking message, so a
    server whose health does not change is not rewritten at all (interval 1 s: 10 rounds)."""
    start_healthy(kubectl, unique_ns)
    time.sleep(3)  # the first rounds settle (breaker counters, Verified, ready replicas)
    before = get_server(kubectl, unique_ns, NAME)["metadata"]["resourceVersion"]
    time.sleep(10)
    after = get_server(kubectl, unique_ns, NAME)["metadata"]["resourceVersion"]
    assert after == before, "the status of a stable server was rewritten"
