"""A quiet steady state (issue 9, deliverable 3): once every server is stable, the operator
writes nothing -- no MCPServer status patch, no Event, no readiness-gate patch.

Why a user notices: every write in steady state is API-server and etcd load that scales
with the fleet (a heartbeat of tens of writes/s at 1,000 servers), history churn for anyone
watching MCPServers, and Event spam that hides the one Event that matters. A 20-server run
before the fix wrote 2.8 writes/s with nothing changing.

Real control plane, real pods (the node agent), the session's operator, the default health
settings (a probe round every 2 s, 1 s timeout): 6 servers x (1 primary + 1 hot backup pod)
are created, wait until Ready with both tiers healthy, then nothing is touched for 40 s
(20 probe rounds per server, 480 probes) while the operator's writes are compared:
resourceVersion of every MCPServer, every Event the operator reported (new or updated),
and the operator's gate condition of every pod (each gate patch stamps its time).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from mcp_operator.render.meta import HEALTH_GATE
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply

pytestmark = pytest.mark.e2e

SERVERS = 6
WINDOW_S = 40.0
GATE = HEALTH_GATE
OPERATOR_COMPONENT = "mcp-operator"


def _unstable(kubectl: Kubectl, ns: str) -> str:
    """Why not every server is Ready with both tiers healthy and every pod gated in ("")."""
    servers = get_json(kubectl, "mcpservers", "-n", ns)["items"]
    if len(servers) < SERVERS:
        return f"{len(servers)} servers"
    for obj in servers:
        for type_ in ("Ready", "PrimaryHealthy", "BackupHealthy"):
            cond = condition(obj, type_)
            if not cond or cond["status"] != "True":
                return f"{obj['metadata']['name']}: {cond}"
    pods = get_json(kubectl, "pods", "-n", ns)["items"]
    gates = {p["metadata"]["name"]: _gate(p) for p in pods}
    if len(pods) != SERVERS * 2 or not all(g and g["status"] == "True" for g in gates.values()):
        return f"{len(pods)} pods, gates {gates}"
    return ""


def _gate(pod: dict[str, Any]) -> dict[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == GATE:
            return dict(cond)
    return None


def _snapshot(kubectl: Kubectl, ns: str) -> dict[str, dict[str, Any]]:
    servers = get_json(kubectl, "mcpservers", "-n", ns)["items"]
    events = get_json(kubectl, "events", "-n", ns)["items"]
    pods = get_json(kubectl, "pods", "-n", ns)["items"]
    return {
        "servers": {o["metadata"]["name"]: o for o in servers},
        "events": {
            e["metadata"]["name"]: e
            for e in events
            if (e.get("reportingComponent") or (e.get("source") or {}).get("component"))
            == OPERATOR_COMPONENT
        },
        "gates": {p["metadata"]["name"]: _gate(p) for p in pods},
    }


def _changes(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for name, obj in after["servers"].items():
        old = before["servers"].get(name)
        if old is None or old["metadata"]["resourceVersion"] != obj["metadata"]["resourceVersion"]:
            out.append(f"MCPServer {name} written: {_diff(old, obj)}")
    for name, event in after["events"].items():
        old = before["events"].get(name)
        if (
            old is None
            or old["metadata"]["resourceVersion"] != event["metadata"]["resourceVersion"]
        ):
            out.append(f"Event {event.get('reason')} x{event.get('count')}: {event.get('message')}")
    for name, gate in after["gates"].items():
        if gate != before["gates"].get(name):
            out.append(f"pod {name} gate patched: {before['gates'].get(name)} -> {gate}")
    return out


def _diff(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    if old is None:
        return "created"
    a, b = old.get("status") or {}, new.get("status") or {}
    return ", ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in b if a.get(k) != b.get(k))


def test_stable_servers_cost_no_writes(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    for i in range(SERVERS):
        apply(
            kubectl,
            server_manifest(
                f"quiet{i}",
                unique_ns,
                primary={"replicas": 1},
                backup={"replicas": 1, "standby": "hot"},
            ),
        )
    why: list[str] = []

    def stable() -> bool:
        why[:] = [_unstable(kubectl, unique_ns)]
        return not why[0]

    try:
        wait_for(stable, timeout=120, interval=1, what="all stable")
    except TimeoutError:
        pytest.fail(f"not stable after 120 s: {why}\n{node_agent.log_tail()}")
    # The Ready flips just written settle (their Events, the last status patch in flight).
    time.sleep(4)
    before = _snapshot(kubectl, unique_ns)
    started = time.monotonic()
    time.sleep(WINDOW_S)
    after = _snapshot(kubectl, unique_ns)
    took = time.monotonic() - started
    changes = _changes(before, after)
    assert not changes, f"{len(changes)} operator writes in {took:.0f}s:\n" + "\n".join(
        changes[:20]
    )
    assert not _unstable(kubectl, unique_ns)  # and still serving: quiet, not stuck
    print(f"\n{SERVERS} stable servers: no operator writes in {took:.0f}s")
