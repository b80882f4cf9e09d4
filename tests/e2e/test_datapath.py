"""The data path as a client sees it (issue 8): a tool is called every 50 ms through the
stable Service -- the node agent's kube-proxy stand-in, which forwards each new connection
to a *ready* EndpointSlice endpoint only -- while things happen. Each test reproduces one
user-visible bug of issue 8 and asserts what the client noticed:

* a 401-protected server (OAuth, the normal case under the MCP authorization spec) is
  served to clients that hold a token;
* changing ``spec.port`` on a serving server never leaves the Service without a ready
  endpoint;
* a cold-standby scale-up abandoned because the primary recovered does not switch traffic
  to the backup later (the "cold-standby blip");
* a server whose reconcile fails (a missing ConfigMap: ``MissingReference``) still fails
  over when its primary dies;
* a freeze shorter than ``failureThreshold`` probe rounds loses no request to gating (the
  frozen server's own calls time out; those are counted apart).

Kinds of failure are those of ``mcp_devcluster.traffic``: ``refused`` = refused/reset
before any reply (no ready endpoint, a dead backend), ``timeout``, ``error``.

Every test failed on main before the data-path fixes (operator/mcp_operator/health as at
2c3ae1c) and passes with them. The port-change client re-reads the Service's proxy address
(``spec.port`` is also the Service's port, so a client must follow it, as it would follow a
changed URL); the proxy keeps a retired port 5 s so that lag is not counted.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.faults import hung, kept_dead
from mcp_devcluster.stack import OperatorProcess
from mcp_devcluster.traffic import ToolTraffic, no_endpoint_resets, service_address, traffic
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply, get_server, stable_selector_tier, wait_condition
from tests.e2e.test_failover import (
    NAME,
    fast_server,
    ready_endpoint_ips,
    start_healthy,
    tier_ips,
    wait_selector,
)

pytestmark = pytest.mark.e2e

TOKEN = "e2e-client-token"


@pytest.fixture
def op(operator: OperatorProcess) -> Iterator[OperatorProcess]:
    """The session's operator, alive (a test elsewhere may have killed it)."""
    if not operator.alive:
        operator.start()
    operator.wait_live()
    yield operator


def service_url(cluster: ControlPlane, ns: str) -> Callable[[], str | None]:
    """Where a client reaches the stable Service: the proxy address the agent wrote on it,
    re-read by the client so that it follows a changed Service port."""
    http = cluster.client(timeout=5)

    def resolve() -> str | None:
        resp = http.get(f"/api/v1/namespaces/{ns}/services/{NAME}")
        return service_address(resp.json()) if resp.status_code == 200 else None

    wait_for(resolve, timeout=30, what="proxy address on the Service")
    return resolve


def gated_away(agent: NodeAgentProcess, ns: str) -> int:
    """Connections the Service refused for lack of a ready endpoint (the proxy's log)."""
    time.sleep(0.3)  # the last log lines
    return no_endpoint_resets(agent.log_path.read_text(errors="replace"), ns, NAME)


def patch_spec(kubectl: Kubectl, ns: str, spec: dict[str, Any]) -> None:
    kubectl("patch", "mcpserver", NAME, "-n", ns, "--type=merge", "-p", json.dumps({"spec": spec}))


def served(caller: ToolTraffic, seconds: float) -> bool:
    """The last ``seconds`` of calls all succeeded (and there were some)."""
    summary = caller.summary(since=time.monotonic() - seconds - caller.timeout)
    return summary.requests > 0 and summary.failures == 0


def rolled_out_to_port(kubectl: Kubectl, ns: str, port: int) -> bool:
    pods = get_json(kubectl, "pods", "-n", ns, "-l", f"mcp-operator.dev/server={NAME}")["items"]
    if any(p["metadata"].get("deletionTimestamp") for p in pods):
        return False
    ports = {cp.get("containerPort") for p in pods for cp in p["spec"]["containers"][0]["ports"]}
    active = tier_ips(kubectl, ns, "primary")
    return ports == {port} and bool(active) and ready_endpoint_ips(kubectl, ns) == active


# -- tests ---------------------------------------------------------------------------------


def test_401_protected_server_is_served_to_clients_with_a_token(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    cluster: ControlPlane,
    unique_ns: str,
) -> None:
    env = [{"name": "EXAMPLE_REQUIRE_TOKEN", "value": TOKEN}]
    apply(kubectl, fast_server(unique_ns, env=env))
    url = service_url(cluster, unique_ns)
    with traffic(url, token=TOKEN) as caller:
        # The probe has no token and gets 401 + WWW-Authenticate: the process is up and
        # speaks HTTP, so its pods must receive traffic.
        wait_for(lambda: served(caller, 2.0), timeout=45, what="token holders served")
        start = time.monotonic()
        time.sleep(4)  # several probe rounds: it stays served
        steady = caller.summary(since=start)
    assert steady.failures == 0, steady.details
    assert stable_selector_tier(kubectl, unique_ns, NAME) == "primary"


def test_port_change_loses_no_request_to_gating(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    cluster: ControlPlane,
    unique_ns: str,
) -> None:
    start_healthy(kubectl, unique_ns)
    url = service_url(cluster, unique_ns)
    with traffic(url) as caller:
        time.sleep(1)
        # The example server listens on $PORT: a user changes both, in one edit.
        patch_spec(kubectl, unique_ns, {"port": 8081, "env": [{"name": "PORT", "value": "8081"}]})
        wait_for(
            lambda: rolled_out_to_port(kubectl, unique_ns, 8081),
            timeout=60,
            what="rollout to port 8081",
        )
        time.sleep(2)
    summary = caller.summary()
    gated = gated_away(node_agent, unique_ns)
    print(f"\nport change: {summary.line()} no-endpoint={gated} {dict(summary.details)}")
    assert summary.requests > 40
    # Never without a ready endpoint.
    assert gated == 0, f"{gated} connections found no ready endpoint; {summary.details}"
    assert summary.failed["timeout"] == summary.failed["error"] == 0, summary.details
    if cluster.minor >= 30:
        # spec.pod.drainSeconds (a preStop sleep) keeps each old pod serving until the proxy
        # dropped it: nothing at all is lost. (Before 1.30 there is no sleep action, and a
        # deleted pod may still be listed for a moment after its SIGTERM -- the kubelet /
        # EndpointSlice race of any cluster: those calls are refused by the dying backend.)
        assert summary.failures == 0, summary.details
    assert served(caller, 1.5)


def test_abandoned_cold_scale_up_never_switches_traffic_later(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    cluster: ControlPlane,
    unique_ns: str,
) -> None:
    apply(kubectl, fast_server(unique_ns, backup={"standby": "cold"}))
    wait_condition(kubectl, unique_ns, NAME, "Ready", "True", timeout=60)
    wait_condition(kubectl, unique_ns, NAME, "PrimaryHealthy", "True", timeout=30)
    primary = tier_ips(kubectl, unique_ns, "primary")

    def phase() -> str:
        status = get_server(kubectl, unique_ns, NAME).get("status") or {}
        return str((status.get("failover") or {}).get("phase"))

    # The primary dies: the operator scales the cold backup up ...
    with kept_dead(node_agent.pid, primary):
        wait_for(lambda: phase() == "ScalingBackup", timeout=20, interval=0.1, what="scale-up")
        backup = wait_for(lambda: tier_ips(kubectl, unique_ns, "backup"), timeout=20)
    # ... but the primary comes back before the backup is up (its processes are kept dead).
    with kept_dead(node_agent.pid, backup):

        def primary_closed() -> bool:
            tiers = (get_server(kubectl, unique_ns, NAME).get("status") or {}).get("tiers") or {}
            return bool(tiers.get("primary", {}).get("breaker", {}).get("phase") == "closed")

        wait_for(primary_closed, timeout=45, what="primary recovered")
        assert stable_selector_tier(kubectl, unique_ns, NAME) == "primary"
        time.sleep(1)
    # The backup may start now. The scale-up was abandoned: traffic must stay on the healthy
    # primary, and the cancelled scale-up is undone.
    url = service_url(cluster, unique_ns)
    with traffic(url) as caller:
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert stable_selector_tier(kubectl, unique_ns, NAME) == "primary", (
                "switched to the backup after the scale-up was abandoned, primary healthy"
            )
            time.sleep(0.25)
    status = get_server(kubectl, unique_ns, NAME)["status"]
    assert status["failover"]["phase"] not in ("Intent", "ScalingBackup"), status["failover"]
    assert (status.get("activeTier") or "primary") == "primary"
    assert caller.summary().failures == 0, caller.summary().details
    wait_for(
        lambda: not tier_ips(kubectl, unique_ns, "backup"),
        timeout=30,
        what="cold backup scaled back down",
    )


def test_failing_reconcile_still_fails_over(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    cluster: ControlPlane,
    unique_ns: str,
) -> None:
    primary, backup = start_healthy(kubectl, unique_ns)
    missing = {"name": "FROM_CM", "valueFrom": {"configMapKeyRef": {"name": "gone", "key": "k"}}}
    patch_spec(kubectl, unique_ns, {"env": [missing]})

    def reconcile_failing() -> bool:
        conditions = (get_server(kubectl, unique_ns, NAME).get("status") or {}).get("conditions")
        return any(c.get("reason") == "MissingReference" for c in conditions or [])

    wait_for(reconcile_failing, timeout=30, what="reconcile failing with MissingReference")
    url = service_url(cluster, unique_ns)
    with traffic(url) as caller, kept_dead(node_agent.pid, primary) as dead:
        switched = wait_selector(kubectl, unique_ns, "backup", timeout=20) - dead["first_kill"]
        wait_for(
            lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
            timeout=15,
            what="backup endpoints",
        )
        wait_for(lambda: served(caller, 1.0), timeout=10, what="clients served by the backup")
    print(f"\nfailover while reconcile fails: switched {switched:.1f}s after the kill")
    assert switched < 8


def test_sub_threshold_freeze_loses_no_request_to_gating(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    cluster: ControlPlane,
    unique_ns: str,
) -> None:
    # Interval 2 s x threshold 3: a 3 s freeze spans at most 2 failed probes.
    health = {"intervalSeconds": 2, "failureThreshold": 3, "successThreshold": 2}
    primary, _ = start_healthy(kubectl, unique_ns, health=health)
    url = service_url(cluster, unique_ns)
    with traffic(url) as caller:
        time.sleep(1)
        with hung(node_agent.pid, primary):
            frozen = time.monotonic()
            time.sleep(3)
        time.sleep(6)  # the rounds after the freeze, where a gate would come back
    summary = caller.summary()
    print(f"\nsub-threshold freeze: {summary.line()} {dict(summary.details)}")
    refused = [f"{o.started - frozen:+.2f}s" for o in caller.outcomes if o.kind == "refused"]
    assert not refused, f"refused at {refused} from the freeze (the gate's doing)"
    assert gated_away(node_agent, unique_ns) == 0
    assert summary.failed["error"] == 0, summary.details
    assert served(caller, 2.0)
    assert stable_selector_tier(kubectl, unique_ns, NAME) == "primary"
    assert get_server(kubectl, unique_ns, NAME)["status"]["failover"]["count"] == 0
