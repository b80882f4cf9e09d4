"""Pod options end to end (issue 11): what real servers need from their pods.

* a server reads a config file mounted from a ConfigMap and writes under its ``HOME``;
* a server with its own ServiceAccount and ``automountServiceAccountToken: true`` reads the
  Kubernetes API as that identity (and only with its rights);
* with ``primary.autoscaling.enabled`` a writer of the Deployment's scale subresource (what
  an HPA does, under its own field manager) is not fought by the operator.

Single-tier servers with one pod keep these fast.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any
from urllib.parse import urlsplit

import yaml

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import OperatorProcess, server_manifest
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply, wait_condition

SINGLE = {"backup": {"enabled": False}, "failover": {"enabled": False}}


def pod_urls(kubectl: Kubectl, ns: str, name: str) -> list[str]:
    pods = get_json(kubectl, "pods", "-n", ns, "-l", f"mcp-operator.dev/server={name}")["items"]
    return [
        f"http://{p['status']['podIP']}:8080/mcp"
        for p in pods
        if p["status"].get("podIP") and p["status"].get("phase") == "Running"
    ]


def call(url: str, tool: str, args: dict[str, Any]) -> str:
    async def go() -> str:
        from mcp import Client

        async with Client(url) as client:
            result = await client.call_tool(tool, args)
            return str(result.content[0].text)  # type: ignore[union-attr]

    return asyncio.run(go())


def test_config_file_from_a_config_map_and_a_writable_home(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    kubectl(
        "create", "configmap", "notes-config", "-n", unique_ns,
        "--from-literal=app.toml=greeting = 'hello from a ConfigMap'\n",
    )  # fmt: skip
    apply(
        kubectl,
        server_manifest(
            "notes",
            unique_ns,
            primary={"replicas": 1},
            health={"minHealthyPods": 1},
            pod={"volumes": [{"name": "config", "configMap": {"name": "notes-config"}}]},
            volumeMounts=[{"name": "config", "mountPath": "/etc/notes", "readOnly": True}],
            **SINGLE,
        ),
    )
    wait_condition(kubectl, unique_ns, "notes", "Ready", "True", timeout=60)
    [url] = wait_for(lambda: pod_urls(kubectl, unique_ns, "notes"), timeout=30, what="pod")
    assert call(url, "read_file", {"path": "/etc/notes/app.toml"}) == (
        "greeting = 'hello from a ConfigMap'\n"
    )
    assert call(url, "write_home", {"name": "cache.json", "content": "{}"}) == (
        "/home/mcp/cache.json"
    )


def _api_address(cluster: ControlPlane) -> tuple[str, str]:
    config = yaml.safe_load(cluster.admin_kubeconfig.read_text())
    server = urlsplit(config["clusters"][0]["cluster"]["server"])
    return str(server.hostname), str(server.port)


def test_own_service_account_with_automount_reads_the_api(
    operator: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    unique_ns: str,
    cluster: ControlPlane,
) -> None:
    kubectl("create", "serviceaccount", "reader", "-n", unique_ns)
    kubectl(
        "create", "role", "read-configmaps", "-n", unique_ns,
        "--verb=get,list", "--resource=configmaps",
    )  # fmt: skip
    kubectl(
        "create", "rolebinding", "reader", "-n", unique_ns,
        "--role=read-configmaps", f"--serviceaccount={unique_ns}:reader",
    )  # fmt: skip
    host, port = _api_address(cluster)
    apply(
        kubectl,
        server_manifest(
            "reader",
            unique_ns,
            primary={"replicas": 1},
            pod={"serviceAccountName": "reader", "automountServiceAccountToken": True},
            # What the kubelet injects in a real cluster (the node agent does not).
            env=[
                {"name": "KUBERNETES_SERVICE_HOST", "value": host},
                {"name": "KUBERNETES_SERVICE_PORT", "value": port},
            ],
            **SINGLE,
        ),
    )
    wait_condition(kubectl, unique_ns, "reader", "Ready", "True", timeout=90)
    # The operator made no ServiceAccount of its own.
    assert kubectl("get", "sa", "reader", "-n", unique_ns).returncode == 0
    names = [s["metadata"]["name"] for s in get_json(kubectl, "sa", "-n", unique_ns)["items"]]
    assert sorted(names) == ["default", "reader"]
    [url] = wait_for(lambda: pod_urls(kubectl, unique_ns, "reader"), timeout=30, what="pod")
    listed = call(url, "kube_get", {"path": f"/api/v1/namespaces/{unique_ns}/configmaps"})
    assert listed == "status=200 kind=ConfigMapList"
    # It is the ServiceAccount's identity, with only its rights.
    secrets = call(url, "kube_get", {"path": f"/api/v1/namespaces/{unique_ns}/secrets"})
    assert secrets.startswith("status=403")


def test_autoscaler_owns_primary_replicas_and_is_not_fought(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    manifest = server_manifest(
        "search",
        unique_ns,
        primary={"replicas": 1, "autoscaling": {"enabled": True}},
        **SINGLE,
    )
    apply(kubectl, manifest)
    wait_condition(kubectl, unique_ns, "search", "Ready", "True", timeout=60)

    def deployment() -> dict[str, Any]:
        return dict(
            get_json(
                kubectl, "deployment", "search-primary", "-n", unique_ns, "--show-managed-fields"
            )
        )

    # As an HPA does: write the scale subresource under another field manager.
    kubectl("scale", "deployment", "search-primary", "-n", unique_ns, "--replicas=3")
    wait_for(
        lambda: deployment()["status"].get("readyReplicas") == 3, timeout=60, what="3 ready pods"
    )
    # Make the operator apply the Deployment again (a spec change of the template).
    manifest["spec"]["env"] = [{"name": "GENERATION", "value": "2"}]
    apply(kubectl, manifest)

    def template_updated() -> dict[str, Any] | None:
        dep = deployment()
        env = dep["spec"]["template"]["spec"]["containers"][0].get("env") or []
        return dep if {"name": "GENERATION", "value": "2"} in env else None

    wait_for(template_updated, timeout=30, what="operator applied the new template")
    # Give the operator time to (wrongly) act, then check it did not touch replicas.
    time.sleep(3)
    dep = deployment()
    assert dep["spec"]["replicas"] == 3
    owners = {
        m["manager"]
        for m in dep["metadata"]["managedFields"]
        if "f:replicas" in (m.get("fieldsV1", {}).get("f:spec") or {})
    }
    # The operator's field manager never owns replicas. (Who does is version-dependent: old
    # servers recorded no owner for writes through the scale subresource.)
    assert "mcp-operator" not in owners, owners
    wait_for(
        lambda: deployment()["status"].get("updatedReplicas") == 3,
        timeout=60,
        what="rolled out at 3 replicas",
    )
    assert deployment()["spec"]["replicas"] == 3
