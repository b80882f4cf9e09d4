"""Smoke tests of the local control plane (etcd, kube-apiserver, kcm, kube-scheduler). No node
agent runs here (e2e runs it)."""

from __future__ import annotations

import json
import secrets
import ssl
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import pytest

from mcp_devcluster.controlplane import OPERATOR_USER, ControlPlane
from tests.conftest import wait_established

pytestmark = pytest.mark.cluster

T = TypeVar("T")


def wait_for(what: str, fn: Callable[[], T | None], timeout: float = 30.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.2)


def get_json(kubectl: Any, *args: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(kubectl("get", *args, "-o", "json").stdout)
    return out


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: web
          image: example.invalid/web:1
          ports:
            - containerPort: 8080
              protocol: TCP
"""


def test_cluster_fixture_api(cluster: ControlPlane) -> None:
    assert cluster.server.startswith("https://127.0.0.1:")
    assert cluster.admin_kubeconfig.is_file()
    assert cluster.operator_kubeconfig.is_file()
    assert cluster.dir.is_dir()
    with cluster.client() as client:
        assert client.get("/readyz").status_code == 200
        version = client.get("/version").json()
        assert version["gitVersion"].startswith(f"v1.{cluster.minor}.")
        assert version["gitVersion"] == f"v{cluster.version}"


def test_components_are_running(cluster: ControlPlane) -> None:
    status = cluster.status()
    assert status["healthy"] and status["k8s_version"] == cluster.version
    running = {name for name, pid in status["pids"].items() if pid}
    assert running == set(cluster.components)
    assert ("kube-scheduler" in running) == cluster.has_scheduler


def test_namespace_created(kubectl: Any, unique_ns: str) -> None:
    ns = get_json(kubectl, "namespace", unique_ns)
    assert ns["status"]["phase"] == "Active"


def test_deployment_creates_replicaset_and_pending_pods(
    cluster: ControlPlane, kubectl: Any, unique_ns: str
) -> None:
    kubectl("apply", "-n", unique_ns, "-f", "-", input=DEPLOYMENT)

    def replicasets() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = get_json(kubectl, "rs", "-n", unique_ns)["items"]
        return items or None

    (rs,) = wait_for("ReplicaSet", replicasets)
    owner = rs["metadata"]["ownerReferences"][0]
    assert owner["kind"] == "Deployment" and owner["name"] == "web"

    def pods() -> list[dict[str, Any]] | None:
        items: list[dict[str, Any]] = get_json(kubectl, "pods", "-n", unique_ns)["items"]
        return items if len(items) == 2 else None

    for pod in wait_for("2 pods", pods):
        assert pod["status"]["phase"] == "Pending"
        assert not pod["spec"].get("nodeName"), "no node is registered: nothing can bind pods"
        assert pod["metadata"]["ownerReferences"][0]["name"] == rs["metadata"]["name"]
        # The ServiceAccount admission plugin mounted a token (the node agent may use it).
        assert pod["spec"]["serviceAccountName"] == "default"
    if cluster.has_scheduler:
        # The real scheduler looked at them and found no node.
        def unschedulable() -> bool:
            return all(
                any(
                    c["type"] == "PodScheduled" and c.get("reason") == "Unschedulable"
                    for c in p["status"].get("conditions", [])
                )
                for p in get_json(kubectl, "pods", "-n", unique_ns)["items"]
            )

        wait_for("PodScheduled=False/Unschedulable from kube-scheduler", unschedulable)

    # Server-side apply works too.
    kubectl(
        "apply",
        "--server-side",
        "--field-manager=test",
        "--force-conflicts",
        "-n",
        unique_ns,
        "-f",
        "-",
        input=DEPLOYMENT.replace("replicas: 2", "replicas: 1"),
    )
    wait_for(
        "scale down to 1 pod",
        lambda: len(get_json(kubectl, "pods", "-n", unique_ns)["items"]) == 1,
    )


def test_garbage_collection_deletes_replicaset(kubectl: Any, unique_ns: str) -> None:
    kubectl("apply", "-n", unique_ns, "-f", "-", input=DEPLOYMENT)
    wait_for("pods", lambda: len(get_json(kubectl, "pods", "-n", unique_ns)["items"]) == 2)
    kubectl("delete", "deployment", "web", "-n", unique_ns, "--wait=false")

    def all_gone() -> bool:
        rs = get_json(kubectl, "rs", "-n", unique_ns)["items"]
        pods = get_json(kubectl, "pods", "-n", unique_ns)["items"]
        return not rs and not pods

    wait_for("GC of ReplicaSet and Pods", all_gone)


def test_token_request_for_service_account(
    cluster: ControlPlane, kubectl: Any, unique_ns: str
) -> None:
    kubectl("create", "serviceaccount", "robot", "-n", unique_ns)
    token = kubectl("create", "token", "robot", "-n", unique_ns, "--duration=10m").stdout.strip()
    assert token.count(".") == 2, "expected a JWT"
    # The token authenticates (403, not 401) as the service account, which has no rights yet.
    with httpx.Client(
        base_url=cluster.server,
        verify=ssl.create_default_context(cafile=str(cluster.ca_file)),
        headers={"Authorization": f"Bearer {token}"},
    ) as client:
        resp = client.get(f"/api/v1/namespaces/{unique_ns}/pods")
        assert resp.status_code == 403, resp.text
        assert f"system:serviceaccount:{unique_ns}:robot" in resp.json()["message"]
        garbage = client.get("/api/v1/namespaces", headers={"Authorization": "Bearer not-a-token"})
        assert garbage.status_code == 401


def test_audit_log_records_the_operators_writes_and_nothing_else(
    cluster: ControlPlane, unique_ns: str
) -> None:
    """The audit log (tests/e2e/test_ha.py reads it) holds the operator identity's writes,
    refused ones included, with their User-Agent; neither reads nor the admin's writes."""
    agent = f"audit-test/{secrets.token_hex(4)}"
    configmaps = f"/api/v1/namespaces/{unique_ns}/configmaps"
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audited"}}
    with cluster.client(OPERATOR_USER) as client:
        client.headers["User-Agent"] = agent
        assert client.get(configmaps).status_code == 403  # a read: not audited
        assert client.post(configmaps, json=body).status_code == 403
    with cluster.client() as admin:
        admin.headers["User-Agent"] = agent
        assert admin.post(configmaps, json=body).status_code == 201  # the admin: not audited

    def ours() -> list[dict[str, Any]] | None:
        found = [e for e in cluster.audit_events() if e.get("userAgent") == agent]
        return found or None

    events = wait_for("the audit event", ours, timeout=10)
    time.sleep(0.5)  # a second event (there must be none) would be written by now
    events = ours() or []
    assert [
        (e["verb"], e["user"]["username"], e["objectRef"]["resource"], e["responseStatus"]["code"])
        for e in events
    ] == [("create", OPERATOR_USER, "configmaps", 403)]
    assert events[0]["stage"] == "ResponseComplete" and events[0]["level"] == "Metadata"


def test_operator_user_needs_rbac(cluster: ControlPlane, kubectl: Any, unique_ns: str) -> None:
    as_operator = str(cluster.operator_kubeconfig)
    denied = kubectl("get", "pods", "-n", unique_ns, kubeconfig=as_operator, check=False)
    assert denied.returncode != 0
    assert "forbidden" in denied.stderr.lower(), denied.stderr
    with cluster.client(OPERATOR_USER) as client:
        assert client.get(f"/api/v1/namespaces/{unique_ns}/pods").status_code == 403

    kubectl(
        "create",
        "role",
        "pod-reader",
        "-n",
        unique_ns,
        "--verb=get,list,watch",
        "--resource=pods",
    )
    kubectl(
        "create",
        "rolebinding",
        "operator-reads-pods",
        "-n",
        unique_ns,
        "--role=pod-reader",
        f"--user={OPERATOR_USER}",
    )

    def allowed() -> bool:
        res = kubectl("get", "pods", "-n", unique_ns, kubeconfig=as_operator, check=False)
        return bool(res.returncode == 0)

    wait_for("RoleBinding to take effect", allowed, timeout=15)
    # Still nothing outside the granted namespace.
    other = kubectl("get", "pods", "-n", "default", kubeconfig=as_operator, check=False)
    assert other.returncode != 0


def test_endpointslice_refuses_loopback_and_takes_the_agents_pod_range(
    cluster: ControlPlane, kubectl: Any, unique_ns: str
) -> None:
    """Why the node agent's pods live in 10.244.0.0/16 (made local) and not on 127.x: a
    current API server refuses loopback endpoint addresses, so Services would stay empty."""

    def slice_yaml(name: str, address: str) -> str:
        return f"""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: {name}
  namespace: {unique_ns}
  labels:
    kubernetes.io/service-name: web
addressType: IPv4
ports:
  - name: http
    port: 8080
    protocol: TCP
endpoints:
  - addresses: ["{address}"]
    conditions: {{ready: true}}
"""

    refused = kubectl("apply", "-f", "-", input=slice_yaml("web-lo", "127.10.0.7"), check=False)
    assert refused.returncode != 0
    assert "may not be in the loopback range" in refused.stderr, refused.stderr
    kubectl("apply", "-f", "-", input=slice_yaml("web-pods", "10.244.0.7"))
    got = get_json(kubectl, "endpointslices.discovery.k8s.io", "web-pods", "-n", unique_ns)
    assert got["endpoints"][0]["addresses"] == ["10.244.0.7"]


def test_pod_accepts_agent_pod_ip(cluster: ControlPlane, kubectl: Any, unique_ns: str) -> None:
    """What the node agent does: bind a pod to a node and report its pod IP."""
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": unique_ns},
        # Not for kube-scheduler (on current releases): this test binds it by hand.
        "spec": {
            "schedulerName": "by-hand",
            "containers": [{"name": "c", "image": "example.invalid/c:1"}],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    with cluster.client() as client:
        node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "test-node-byhand"}}
        resp = client.post("/api/v1/nodes", json=node)
        assert resp.status_code in (201, 409), resp.text
        binding = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": "p"},
            "target": {"apiVersion": "v1", "kind": "Node", "name": "test-node-byhand"},
        }
        resp = client.post(f"/api/v1/namespaces/{unique_ns}/pods/p/binding", json=binding)
        assert resp.status_code == 201, resp.text
        status_patch = {
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.8",
                "podIPs": [{"ip": "10.244.0.8"}],
            }
        }
        resp = client.patch(
            f"/api/v1/namespaces/{unique_ns}/pods/p/status",
            json=status_patch,
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["status"]["podIP"] == "10.244.0.8"
        client.delete("/api/v1/nodes/test-node-byhand")


def test_gc_of_custom_resource_dependents_after_kcm_restart(
    cluster: ControlPlane, kubectl: Any, unique_ns: str
) -> None:
    """ownerReferences to a CR of a CRD created after kcm start work once kcm is restarted."""
    crd = {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "gadgets.cptest.example.com"},
        "spec": {
            "group": "cptest.example.com",
            "names": {"kind": "Gadget", "plural": "gadgets", "singular": "gadget"},
            "scope": "Namespaced",
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "x-kubernetes-preserve-unknown-fields": True,
                        }
                    },
                }
            ],
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(crd))
    try:
        wait_established(kubectl, "gadgets.cptest.example.com")
        start = time.monotonic()
        cluster.restart_controller_manager()
        restart_s = time.monotonic() - start
        assert restart_s < 15, restart_s
        gadget = {
            "apiVersion": "cptest.example.com/v1",
            "kind": "Gadget",
            "metadata": {"name": "g", "namespace": unique_ns},
        }
        kubectl("apply", "-f", "-", input=json.dumps(gadget))
        uid = kubectl("get", "gadget", "g", "-n", unique_ns, "-o", "jsonpath={.metadata.uid}")
        owned = {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": "owned",
                "namespace": unique_ns,
                "ownerReferences": [
                    {
                        "apiVersion": "cptest.example.com/v1",
                        "kind": "Gadget",
                        "name": "g",
                        "uid": uid.stdout.strip(),
                    }
                ],
            },
        }
        kubectl("apply", "-f", "-", input=json.dumps(owned))
        kubectl("delete", "gadget", "g", "-n", unique_ns, "--wait=false")

        def gone() -> bool:
            res = kubectl("get", "cm", "owned", "-n", unique_ns, check=False)
            return res.returncode != 0 and "NotFound" in res.stderr

        wait_for("GC of the ConfigMap owned by the deleted Gadget", gone, timeout=10)
    finally:
        kubectl("delete", "crd", "gadgets.cptest.example.com", "--wait=false", check=False)
