"""Several Nodes in two zones: registration, the real scheduler's placement, a zone loss.

The session's node agent runs NODE_COUNT nodes spread over ZONE_COUNT zones. kube-scheduler
binds the pods (so affinity is real) and the node lifecycle controller watches the node Leases
(so a lost zone turns NotReady).
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.nodeagent.agent import DOWN_ANNOTATION
from mcp_devcluster.stack import OperatorProcess
from mcp_devcluster.traffic import traffic
from tests.e2e.ops import stable_selector_tier
from tests.e2e.test_datapath import served, service_url
from tests.e2e.test_failover import (
    NAME,
    SERVER_LABEL,
    TIER_LABEL,
    failover_status,
    ready_endpoint_ips,
    start_healthy,
    wait_selector,
)

from .conftest import NODE_COUNT, ZONE_COUNT, NodeAgentProcess, get_json, pid_alive, wait_for

pytestmark = pytest.mark.e2e

ZONE = "topology.kubernetes.io/zone"


def nodes_of(kubectl: Any, agent: NodeAgentProcess) -> dict[str, dict[str, Any]]:
    items = get_json(kubectl, "nodes")["items"]
    return {n["metadata"]["name"]: n for n in items if n["metadata"]["name"] in agent.node_names}


def ready_status(node: dict[str, Any]) -> str:
    cond = next(c for c in node["status"]["conditions"] if c["type"] == "Ready")
    return str(cond["status"])


def spread_deployment(name: str, image: str, replicas: int) -> str:
    """Pods that must not share a zone (required anti-affinity on the zone label)."""
    labels = {"app": name}
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": labels},
                "template": {
                    "metadata": {"labels": labels},
                    "spec": {
                        "terminationGracePeriodSeconds": 2,
                        "affinity": {
                            "podAntiAffinity": {
                                "requiredDuringSchedulingIgnoredDuringExecution": [
                                    {"labelSelector": {"matchLabels": labels}, "topologyKey": ZONE}
                                ]
                            }
                        },
                        "containers": [
                            {
                                "name": "server",
                                "image": image,
                                "ports": [{"name": "http", "containerPort": 8080}],
                                "readinessProbe": {
                                    "tcpSocket": {"port": "http"},
                                    "periodSeconds": 1,
                                },
                            }
                        ],
                    },
                },
            },
        }
    )


def running_pods(kubectl: Any, ns: str, app: str) -> list[dict[str, Any]]:
    items = get_json(kubectl, "pods", "-n", ns, "-l", f"app={app}")["items"]
    return [p for p in items if p["status"].get("phase") == "Running"]


def test_nodes_registered_in_zones_with_leases(node_agent: NodeAgentProcess, kubectl: Any) -> None:
    nodes = nodes_of(kubectl, node_agent)
    assert sorted(nodes) == sorted(node_agent.node_names)
    assert len(nodes) == NODE_COUNT >= 3
    zones = {n["metadata"]["labels"][ZONE] for n in nodes.values()}
    assert len(zones) == ZONE_COUNT >= 2
    for name, node in nodes.items():
        assert node["metadata"]["labels"]["kubernetes.io/hostname"] == name
        assert node["metadata"]["labels"]["topology.kubernetes.io/region"]
        assert ready_status(node) == "True"
        lease = get_json(kubectl, "lease", name, "-n", "kube-node-lease")
        assert lease["spec"]["holderIdentity"].startswith(f"{name}/")


def test_scheduler_spreads_pods_over_zones(
    cluster: ControlPlane,
    node_agent: NodeAgentProcess,
    kubectl: Any,
    unique_ns: str,
    example_image: str,
) -> None:
    """Required zone anti-affinity: one pod per zone runs, one more than zones cannot."""
    kubectl(
        "apply", "-n", unique_ns, "-f", "-", input=spread_deployment("spread", example_image, 2)
    )
    pods = wait_for(
        lambda: (p := running_pods(kubectl, unique_ns, "spread")) and len(p) == 2 and p,
        timeout=60,
        what="2 running pods",
    )
    nodes = nodes_of(kubectl, node_agent)
    zones = {nodes[p["spec"]["nodeName"]]["metadata"]["labels"][ZONE] for p in pods}
    assert len(zones) == 2, [p["spec"]["nodeName"] for p in pods]

    kubectl("scale", "deployment", "spread", "-n", unique_ns, "--replicas=3")

    def third_unschedulable() -> str | None:
        for pod in get_json(kubectl, "pods", "-n", unique_ns, "-l", "app=spread")["items"]:
            for cond in pod["status"].get("conditions", []):
                if cond["type"] == "PodScheduled" and cond.get("reason") == "Unschedulable":
                    return str(cond.get("message", ""))
        return None

    message = wait_for(third_unschedulable, timeout=30, what="the third pod unschedulable")
    assert "anti-affinity" in message, message


@contextlib.contextmanager
def zone_lost(kubectl: Any, node_agent: NodeAgentProcess, zone: str) -> Iterator[list[str]]:
    """Takes every node of ``zone`` down; brings them back (and Ready) after."""
    nodes = nodes_of(kubectl, node_agent)
    lost = [name for name, n in nodes.items() if n["metadata"]["labels"][ZONE] == zone]
    for name in lost:
        kubectl("annotate", "node", name, f"{DOWN_ANNOTATION}=true", "--overwrite")
    try:
        yield lost
    finally:
        for name in lost:
            kubectl("annotate", "node", name, f"{DOWN_ANNOTATION}-", check=False)

        def recovered() -> bool:
            now = nodes_of(kubectl, node_agent)
            return all(
                ready_status(now[n]) == "True" and not now[n]["spec"].get("taints") for n in lost
            )

        wait_for(recovered, timeout=60, what="the lost zone's nodes Ready and untainted again")


@pytest.fixture
def zone_down(kubectl: Any, node_agent: NodeAgentProcess) -> Iterator[list[str]]:
    """Takes every node of the first node's zone down; brings them back (and Ready) after."""
    zone = nodes_of(kubectl, node_agent)[node_agent.node_name]["metadata"]["labels"][ZONE]
    with zone_lost(kubectl, node_agent, zone) as lost:
        yield lost


def nodes_not_ready(kubectl: Any, node_agent: NodeAgentProcess, names: list[str]) -> bool:
    now = nodes_of(kubectl, node_agent)
    return all(ready_status(now[n]) != "True" for n in names)


def test_zone_loss_kills_its_pods_and_turns_its_nodes_not_ready(
    cluster: ControlPlane,
    node_agent: NodeAgentProcess,
    kubectl: Any,
    unique_ns: str,
    example_image: str,
    request: pytest.FixtureRequest,
) -> None:
    kubectl("apply", "-n", unique_ns, "-f", "-", input=spread_deployment("zl", example_image, 2))
    pods = wait_for(
        lambda: (p := running_pods(kubectl, unique_ns, "zl")) and len(p) == 2 and p,
        timeout=60,
        what="2 running pods, one per zone",
    )
    started = time.monotonic()
    lost: list[str] = request.getfixturevalue("zone_down")
    victim = next(p for p in pods if p["spec"]["nodeName"] in lost)
    survivor = next(p for p in pods if p["spec"]["nodeName"] not in lost)
    pid = int(victim["status"]["containerStatuses"][0]["containerID"].split("://")[1])
    wait_for(lambda: not pid_alive(pid), timeout=15, what="the lost zone's server process dead")

    wait_for(
        lambda: nodes_not_ready(kubectl, node_agent, lost),
        timeout=120,
        interval=1,
        what="the lost zone's nodes NotReady",
    )
    print(f"zone loss → nodes NotReady in {time.monotonic() - started:.0f}s")
    now = nodes_of(kubectl, node_agent)
    assert all(ready_status(n) == "True" for name, n in now.items() if name not in lost)
    # The node lifecycle controller marks the lost pod not ready; the other zone serves on.
    ns_pods = {p["metadata"]["name"]: p for p in running_pods(kubectl, unique_ns, "zl")}
    wait_for(
        lambda: (
            not any(
                c["type"] == "Ready" and c["status"] == "True"
                for c in get_json(kubectl, "pod", victim["metadata"]["name"], "-n", unique_ns)[
                    "status"
                ].get("conditions", [])
            )
        ),
        timeout=30,
        what="the lost pod marked not ready",
    )
    survivor_now = ns_pods[survivor["metadata"]["name"]]
    assert any(
        c["type"] == "Ready" and c["status"] == "True" for c in survivor_now["status"]["conditions"]
    )


# -- the operator across a zone loss -------------------------------------------------------


@pytest.fixture
def live_operator(operator: OperatorProcess) -> OperatorProcess:
    """The session's operator, alive (a test elsewhere may have killed it)."""
    if not operator.alive:
        operator.start()
    operator.wait_live()
    return operator


def tier_zone(kubectl: Any, agent: NodeAgentProcess, ns: str, tier: str) -> str:
    (pod,) = [
        p
        for p in get_json(kubectl, "pods", "-n", ns, "-l", f"{TIER_LABEL}={tier}")["items"]
        if not p["metadata"].get("deletionTimestamp")
    ]
    return str(nodes_of(kubectl, agent)[pod["spec"]["nodeName"]]["metadata"]["labels"][ZONE])


def tiers_in_different_zones(server: str) -> dict[str, Any]:
    """``spec.primary.pod``/``spec.backup.pod``: each tier must avoid the other's zone."""

    def avoid(other: str) -> dict[str, Any]:
        term = {
            "labelSelector": {"matchLabels": {SERVER_LABEL: server, TIER_LABEL: other}},
            "topologyKey": ZONE,
        }
        return {
            "affinity": {
                "podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}
            }
        }

    return {"primary": {"pod": avoid("backup")}, "backup": {"pod": avoid("primary")}}


def test_zone_loss_fails_the_server_over_to_the_backup_in_the_other_zone(
    cluster: ControlPlane,
    node_agent: NodeAgentProcess,
    live_operator: OperatorProcess,
    kubectl: Any,
    unique_ns: str,
) -> None:
    """All pods of the primary's zone die and its nodes turn NotReady: clients of the Service
    are served by the backup, which tier anti-affinity had put in the other zone."""
    _, backup = start_healthy(kubectl, unique_ns, **tiers_in_different_zones(NAME))
    primary_zone = tier_zone(kubectl, node_agent, unique_ns, "primary")
    backup_zone = tier_zone(kubectl, node_agent, unique_ns, "backup")
    assert primary_zone != backup_zone, "tier anti-affinity across zones"
    url = service_url(cluster, unique_ns)
    with traffic(url) as caller:
        wait_for(lambda: served(caller, 1.0), timeout=15, what="clients served by the primary")
        before = caller.summary()
        with zone_lost(kubectl, node_agent, primary_zone) as lost:
            lost_at = time.monotonic()
            switched = wait_selector(kubectl, unique_ns, "backup", timeout=30) - lost_at
            wait_for(
                lambda: ready_endpoint_ips(kubectl, unique_ns) == backup,
                timeout=30,
                what="only the backup's endpoint ready",
            )
            wait_for(lambda: served(caller, 1.0), timeout=15, what="clients served by the backup")
            wait_for(
                lambda: nodes_not_ready(kubectl, node_agent, lost),
                timeout=120,
                interval=1,
                what="the lost zone's nodes NotReady",
            )
            # Still served by the backup once the nodes are NotReady (no flap back).
            wait_for(lambda: served(caller, 2.0), timeout=15, what="clients served after NotReady")
            assert stable_selector_tier(kubectl, unique_ns, NAME) == "backup"
            during = caller.summary(since=lost_at)
    print(
        f"\nzone {primary_zone} lost (nodes {', '.join(lost)}): Service switched to the backup "
        f"in {backup_zone} {switched:.1f}s later; before: {before.line()}; "
        f"since the loss: {during.line()}"
    )
    assert before.requests > 0 and before.failures == 0, before.details
    # Calls fail only between the loss and the switch (plus a probe round), never after.
    assert during.requests > 0 and during.window < switched + 5, during.line()
    record = failover_status(kubectl, unique_ns)
    assert record.get("count") == 1 and record.get("kind") == "failover", record
