"""The reconciler on the real control plane, with pods run by the node agent."""

from __future__ import annotations

import time

import yaml

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from tests.e2e.conftest import NodeAgentProcess, get_json, pid_alive, wait_for
from tests.e2e.ops import Kubectl, apply, get_server, wait_condition


def test_apply_to_ready_scale_repair_and_delete(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    started = time.monotonic()
    apply(kubectl, server_manifest("weather", unique_ns))
    wait_condition(kubectl, unique_ns, "weather", "Ready", "True", timeout=30)

    def all_ready() -> dict[str, object] | None:
        obj = get_server(kubectl, unique_ns, "weather")
        tiers = obj["status"]["tiers"]
        full = tiers["primary"]["readyReplicas"] == 2 and tiers["backup"]["readyReplicas"] == 1
        return obj if full else None

    obj = wait_for(all_ready, timeout=30 - (time.monotonic() - started), what="all pods ready")
    took = time.monotonic() - started
    status = obj["status"]
    assert status["observedGeneration"] == obj["metadata"]["generation"]
    assert status["tiers"]["primary"]["readyReplicas"] == 2
    assert status["tiers"]["backup"]["readyReplicas"] == 1
    assert status["endpoint"] == f"http://weather.{unique_ns}.svc:8080/mcp"
    assert took < 30
    printed = kubectl("get", "mcps", "weather", "-n", unique_ns).stdout
    assert "True" in printed and "primary" in printed and "2/2" in printed

    # Steady state writes nothing: no status churn in etcd while nothing changes. Up to four
    # 6 s windows: in the full suite a prober-doubt episode (earlier modules' servers dying in
    # terminating namespaces) may start or end in one and is rightly written; a heartbeat
    # would change every window. tests/e2e/test_quiet.py holds a 40 s window on 6 servers.
    versions = []
    for _ in range(4):
        version = get_server(kubectl, unique_ns, "weather")["metadata"]["resourceVersion"]
        time.sleep(6)
        versions.append((version, get_server(kubectl, unique_ns, "weather")))
        if versions[-1][1]["metadata"]["resourceVersion"] == version:
            break
    else:
        raise AssertionError(f"status written in each of 4 windows of 6 s: {versions[-1][1]}")

    # Metrics: reconciles counted, the Ready condition exported per object.
    text = operator.metrics()
    assert f'mcp_operator_reconcile_total{{namespace="{unique_ns}",server="weather"}}' in text
    ready_line = (
        f'mcp_operator_condition{{namespace="{unique_ns}",server="weather",'
        'status="True",type="Ready"} 1.0'
    )
    assert ready_line in text

    # Scale the primary: status follows.
    kubectl(
        "patch",
        "mcps",
        "weather",
        "-n",
        unique_ns,
        "--type=merge",
        "-p",
        '{"spec":{"primary":{"replicas":3}}}',
    )
    wait_for(
        lambda: (
            get_server(kubectl, unique_ns, "weather")["status"]["tiers"]["primary"].get(
                "readyReplicas"
            )
            == 3
        ),
        timeout=30,
        what="3 ready primary pods",
    )

    # Delete a child Service and a child Deployment: both come back within 10 s.
    for kind, name in (("service", "weather"), ("deployment", "weather-backup")):
        old_uid = get_json(kubectl, kind, name, "-n", unique_ns)["metadata"]["uid"]
        kubectl("delete", kind, name, "-n", unique_ns, "--wait=false")
        t0 = time.monotonic()
        wait_for(
            lambda k=kind, n=name, u=old_uid: (
                get_json(kubectl, k, n, "-n", unique_ns)["metadata"]["uid"] != u
            ),
            timeout=10,
            what=f"{kind}/{name} restored",
        )
        assert time.monotonic() - t0 <= 10

    # A hand edit of an owned field is reverted.
    kubectl(
        "patch",
        "service",
        "weather",
        "-n",
        unique_ns,
        "--type=merge",
        "-p",
        '{"spec":{"selector":{"mcp-operator.dev/tier":"backup"}}}',
    )
    wait_for(
        lambda: (
            get_json(kubectl, "service", "weather", "-n", unique_ns)["spec"]["selector"][
                "mcp-operator.dev/tier"
            ]
            == "primary"
        ),
        timeout=10,
        what="selector restored",
    )

    # Delete the MCPServer: children and their processes go.
    pods = get_json(kubectl, "pods", "-n", unique_ns)["items"]
    pids = [
        int(p["status"]["containerStatuses"][0]["containerID"].removeprefix("nodeagent://"))
        for p in pods
        if (p["status"].get("containerStatuses") or [{}])[0].get("containerID")
    ]
    assert pids and all(pid_alive(pid) for pid in pids)
    kubectl("delete", "mcps", "weather", "-n", unique_ns)
    wait_for(
        lambda: (
            not get_json(
                kubectl,
                "deployments,services,pods",
                "-n",
                unique_ns,
                "-l",
                "mcp-operator.dev/server=weather",
            )["items"]
        ),
        timeout=60,
        what="children garbage-collected",
    )
    for pid in pids:
        wait_for(lambda p=pid: not pid_alive(p), timeout=30, what=f"process {pid} gone")


def test_invalid_spec_is_reported_not_applied(
    operator: OperatorProcess, cluster: ControlPlane, kubectl: Kubectl, unique_ns: str
) -> None:
    # Kubernetes sub-objects are free-form in the CRD: the operator checks them against the
    # Kubernetes schemas and reports every problem, by path, at once.
    free_form = {
        "resources": {"limits": {"memory": "lots"}},
        "pod": {"tolerations": [{"key": "gpu", "operator": "Exists", "effect": "NoSchedul"}]},
    }
    paths = ["spec.resources.limits.memory", "spec.pod.tolerations[0].effect"]
    cross_field = {"health": {"intervalSeconds": 1, "timeoutSeconds": 5}}
    # The server refuses the cross-field rule itself (tests/integration/test_cel.py has every
    # rule), so only what CEL cannot check reaches the operator.
    refused = kubectl(
        "apply",
        "-f",
        "-",
        input=yaml.safe_dump(server_manifest("bad", unique_ns, **cross_field)),
        check=False,
    )
    assert refused.returncode != 0 and "must not exceed intervalSeconds" in refused.stderr
    bad = server_manifest("bad", unique_ns, **free_form)
    apply(kubectl, bad)
    obj = wait_condition(kubectl, unique_ns, "bad", "Reconciled", "False", reason="InvalidSpec")
    cond = condition(obj, "Reconciled")
    assert cond is not None
    for path in paths:
        assert path in cond["message"], cond["message"]
    assert not get_json(kubectl, "deployments", "-n", unique_ns)["items"]
    # A good object beside it is unaffected.
    apply(
        kubectl,
        server_manifest("good", unique_ns, backup={"enabled": False}, failover={"enabled": False}),
    )
    wait_condition(kubectl, unique_ns, "good", "Reconciled", "True")


def test_pause_annotation_stops_changes(
    operator: OperatorProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    apply(kubectl, server_manifest("paused", unique_ns))
    wait_condition(kubectl, unique_ns, "paused", "Reconciled", "True")
    kubectl("annotate", "mcps", "paused", "-n", unique_ns, "mcp-operator.dev/reconcile=disabled")
    wait_condition(kubectl, unique_ns, "paused", "Reconciled", "False", reason="Paused")
    kubectl("delete", "service", "paused", "-n", unique_ns)
    time.sleep(3)
    assert kubectl("get", "service", "paused", "-n", unique_ns, check=False).returncode != 0
    kubectl("annotate", "mcps", "paused", "-n", unique_ns, "mcp-operator.dev/reconcile-")
    wait_condition(kubectl, unique_ns, "paused", "Reconciled", "True")
    wait_for(
        lambda: kubectl("get", "service", "paused", "-n", unique_ns, check=False).returncode == 0,
        timeout=10,
        what="service back",
    )
