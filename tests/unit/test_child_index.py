"""The watch-fed child index: relists drop what vanished, relabelled objects move."""

from __future__ import annotations

import copy
import json
from typing import Any

from mcp_operator.api.models import API_VERSION, MCPServer
from mcp_operator.api.validation import parse_server
from mcp_operator.health.extension import _uid, _view, gate_of, pod_url, probeable
from mcp_operator.reconcile.children import ChildIndex, comparable, is_applied
from mcp_operator.render import RenderContext, render
from mcp_operator.render.meta import HEALTH_GATE, SERVER_LABEL


def pod(name: str, server: str | None, version: str = "1", ns: str = "ns") -> dict[str, Any]:
    labels = {SERVER_LABEL: server} if server else {}
    return {
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": labels, "resourceVersion": version},
    }


def svc(name: str, server: str, version: str = "1") -> dict[str, Any]:
    obj = pod(name, server, version)
    obj["kind"] = "Service"
    return obj


def test_relist_drops_objects_deleted_during_a_watch_gap() -> None:
    index = ChildIndex()
    for name in ("a", "b", "c"):
        index.observe("Pod", pod(name, "web"), deleted=False)
    touched = index.replace("Pod", None, [pod("a", "web"), pod("d", "web")])
    assert sorted(p["metadata"]["name"] for p in index.pods(("ns", "web"))) == ["a", "d"]
    assert touched == {("ns", "web")}
    assert index.counts["Pod"] == 2


def test_relist_of_one_namespace_keeps_other_namespaces() -> None:
    index = ChildIndex()
    index.observe("Pod", pod("a", "web", ns="one"), deleted=False)
    index.observe("Pod", pod("a", "web", ns="two"), deleted=False)
    index.replace("Pod", "one", [])
    assert index.pods(("one", "web")) == []
    assert len(index.pods(("two", "web"))) == 1


def test_unchanged_relist_touches_nobody() -> None:
    index = ChildIndex()
    index.observe("Service", svc("web", "web"), deleted=False)
    assert index.replace("Service", None, [svc("web", "web")]) == set()
    assert index.replace("Service", None, [svc("web", "web", "2")]) == {("ns", "web")}


def test_relabelled_pod_moves_or_leaves() -> None:
    index = ChildIndex()
    index.observe("Pod", pod("p", "web"), deleted=False)
    index.observe("Pod", pod("p", "api", "2"), deleted=False)
    assert index.pods(("ns", "web")) == []
    assert len(index.pods(("ns", "api"))) == 1
    assert index.observe("Pod", pod("p", None, "3"), deleted=False) == ("ns", "api")
    assert index.pods(("ns", "api")) == []
    assert index.counts["Pod"] == 0


def test_children_and_pods_share_names_without_clashing() -> None:
    index = ChildIndex()
    index.observe("Service", svc("web", "web"), deleted=False)
    index.observe("Pod", pod("web", "web"), deleted=False)
    index.observe("Pod", pod("web", "web"), deleted=True)
    assert ("Service", "web") in index.children(("ns", "web"))
    index.forget(("ns", "web"))
    assert index.children(("ns", "web")) == {}
    assert index.counts["Service"] == 0


# -- what the index keeps (memory per server) ------------------------------------------

MANAGED = [
    {
        "manager": "kube-controller-manager",
        "operation": "Update",
        "fieldsType": "FieldsV1",
        "fieldsV1": {"f:spec": {"f:containers": {'k:{"name":"mcp"}': {".": {}}}}},
    }
]


def web_server() -> MCPServer:
    return parse_server(
        {
            "apiVersion": API_VERSION,
            "kind": "MCPServer",
            "metadata": {"name": "web", "namespace": "ns"},
            "spec": {
                "image": "example/mcp:1",
                "port": 9000,
                "env": [{"name": "API_KEY", "value": "plaintext-secret"}],
            },
        }
    )


def live_pod(tier: str, gate: str) -> dict[str, Any]:
    """A pod as the watch delivers it: made from the rendered template (as the
    ReplicaSet controller does), with managed fields, defaults and a kubelet status."""
    deployment = next(
        o
        for o in render(web_server(), RenderContext(owner_uid="u"))
        if o["kind"] == "Deployment" and o["metadata"]["name"] == f"web-{tier}"
    )
    template = copy.deepcopy(deployment["spec"]["template"])
    template["spec"]["volumes"] = [{"name": "kube-api-access", "projected": {"sources": []}}]
    template["spec"]["dnsPolicy"] = "ClusterFirst"
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            **template["metadata"],
            "name": f"web-{tier}-abc",
            "namespace": "ns",
            "uid": f"uid-{tier}",
            "resourceVersion": "7",
            "managedFields": MANAGED,
        },
        "spec": template["spec"],
        "status": {
            "phase": "Running",
            "podIP": "10.244.1.7",
            "podIPs": [{"ip": "10.244.1.7"}],
            "hostIP": "10.0.0.1",
            "conditions": [
                {"type": HEALTH_GATE, "status": gate},
                {"type": "Ready", "status": gate},
            ],
            "containerStatuses": [{"name": "mcp", "restartCount": 3, "ready": True}],
        },
    }


def test_indexed_children_carry_no_managed_fields_but_everything_else() -> None:
    index = ChildIndex()
    deployment = next(
        o for o in render(web_server(), RenderContext(owner_uid="u")) if o["kind"] == "Deployment"
    )
    live = {
        **copy.deepcopy(deployment),
        "status": {"replicas": 2, "readyReplicas": 2},
    }
    live["metadata"].update(resourceVersion="3", managedFields=MANAGED)
    original = copy.deepcopy(live)
    index.observe("Deployment", live, deleted=False)
    held = index.children(("ns", "web"))[("Deployment", live["metadata"]["name"])]
    assert "managedFields" not in held["metadata"]
    meta = {k: v for k, v in original["metadata"].items() if k != "managedFields"}
    assert held == {**original, "metadata": meta}
    assert live == original  # the caller's object is not changed
    # Drift detection still sees the applied object as applied.
    assert is_applied(comparable(deployment), held)


def test_indexed_pod_keeps_what_the_prober_reads_and_no_env() -> None:
    server = web_server()
    index = ChildIndex()
    for tier, gate in (("primary", "True"), ("backup", "False")):
        full = live_pod(tier, gate)
        index.observe("Pod", full, deleted=False)
        held = next(p for p in index.pods(("ns", "web")) if p["metadata"]["uid"] == f"uid-{tier}")
        # Everything the health loop derives from a pod is the same from what is kept.
        assert probeable(held) and probeable(full)
        assert pod_url(held, server) == pod_url(full, server) == "http://10.244.1.7:9000/mcp"
        assert gate_of(held) is gate_of(full) is (gate == "True")
        assert _view(held, None) == _view(full, None)
        assert _uid(held) == _uid(full)
        assert held["metadata"] == {
            k: v for k, v in full["metadata"].items() if k != "managedFields"
        }
        # Not kept: managed fields, the env (plaintext values), volumes, container statuses.
        assert "plaintext-secret" not in repr(held)
        assert "managedFields" not in held["metadata"]
        assert held["spec"] == {"containers": [{"name": "mcp", "ports": ANY_PORTS}]}
        assert set(held["status"]) == {"phase", "podIP", "podIPs", "conditions"}


class _AnyPorts:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, list) and any(p.get("name") == "mcp" for p in other)


ANY_PORTS = _AnyPorts()


def test_a_pod_being_deleted_is_still_seen_as_such() -> None:
    full = live_pod("primary", "True")
    full["metadata"]["deletionTimestamp"] = "2026-12-01T00:00:00Z"
    index = ChildIndex()
    index.observe("Pod", full, deleted=False)
    assert not probeable(index.pods(("ns", "web"))[0])


def test_indexed_objects_share_their_keys_and_short_strings() -> None:
    """Two separately parsed pods: the index holds one copy of each key and label value."""
    index = ChildIndex()
    for tier in ("primary", "backup"):
        index.observe("Pod", json.loads(json.dumps(live_pod(tier, "True"))), deleted=False)
    one, two = index.pods(("ns", "web"))
    key_one = next(k for k in one["metadata"] if k == "labels")
    key_two = next(k for k in two["metadata"] if k == "labels")
    assert key_one is key_two
    assert one["metadata"]["labels"][SERVER_LABEL] is two["metadata"]["labels"][SERVER_LABEL]
    assert one["status"]["phase"] is two["status"]["phase"]
