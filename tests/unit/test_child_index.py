"""The watch-fed child index: relists drop what vanished, relabelled objects move."""

from __future__ import annotations

from typing import Any

from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.render.meta import SERVER_LABEL


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
