"""A server deleted while its DELETED event was missed (watch gap, operator down) must not
be resurrected: when its children vanish, the supervisor checks the server still exists
before letting its worker re-create them."""

from __future__ import annotations

import asyncio
from typing import Any

from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.reconcile.supervisor import Supervisor
from mcp_operator.reconcile.worker import Shared
from mcp_operator.render.context import Capabilities
from mcp_operator.render.meta import SERVER_LABEL

KEY = ("ns", "web")


class FakeClient:
    """Answers the supervisor's list-by-name of MCPServers."""

    def __init__(self, uids: list[str]) -> None:
        self.uids = uids
        self.calls = 0

    async def request(self, method: str, path: str, **_: Any) -> dict[str, Any]:
        self.calls += 1
        return {"items": [{"metadata": {"name": "web", "uid": uid}} for uid in self.uids]}


class FakeWorker:
    def __init__(self, uid: str) -> None:
        self.body = {"metadata": {"uid": uid}}
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def child(kind: str = "Service") -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"name": "web", "namespace": "ns", "labels": {SERVER_LABEL: "web"}},
    }


def supervisor(uids: list[str]) -> tuple[Supervisor, FakeWorker, FakeClient]:
    client = FakeClient(uids)
    shared = Shared(
        client=client,  # type: ignore[arg-type]
        index=ChildIndex(),
        capabilities=Capabilities(),
        post_event=lambda *_: None,
    )
    sup = Supervisor(shared)
    worker = FakeWorker("u1")
    sup.workers[KEY] = worker  # type: ignore[assignment]
    return sup, worker, client


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_child_deleted_for_a_vanished_server_stops_its_worker() -> None:
    sup, worker, _ = supervisor(uids=[])
    sup.observe_child("Service", child(), deleted=False)
    assert worker.wakes == 1
    sup.observe_child("Service", child(), deleted=True)  # the garbage collector at work
    await settle()
    assert KEY not in sup.workers
    assert worker.wakes == 1, "a worker of a deleted server must not re-apply"


async def test_a_same_named_successor_does_not_keep_the_old_worker() -> None:
    sup, _worker, _ = supervisor(uids=["u2"])
    sup.observe_child("Service", child(), deleted=True)
    await settle()
    assert KEY not in sup.workers


async def test_drift_on_a_live_server_is_repaired() -> None:
    sup, worker, client = supervisor(uids=["u1"])
    sup.observe_child("Deployment", child("Deployment"), deleted=True)
    await settle()
    assert KEY in sup.workers and worker.wakes == 1 and client.calls == 1


async def test_relist_without_the_children_checks_the_server() -> None:
    sup, _worker, _ = supervisor(uids=[])
    sup.observe_child("Service", child(), deleted=False)
    sup.sync_children("Service", None, [])  # relist after a watch gap: the child is gone
    await settle()
    assert KEY not in sup.workers
    assert sup.shared.index.children(KEY) == {}


async def test_pod_events_never_cost_an_api_call() -> None:
    sup, worker, client = supervisor(uids=[])
    sup.observe_child("Pod", child("Pod"), deleted=False)
    sup.observe_child("Pod", child("Pod"), deleted=True)
    await settle()
    assert client.calls == 0 and worker.wakes == 0


async def test_a_worker_replaced_during_the_check_is_not_stopped() -> None:
    """Deleted and re-created under the same name while the check ran: the new worker
    must survive the old object's verdict."""
    sup, _old, client = supervisor(uids=[])
    successor = FakeWorker("u2")
    real_request = client.request

    async def slow_request(method: str, path: str, **kw: Any) -> dict[str, Any]:
        sup.workers[KEY] = successor  # type: ignore[assignment]
        return await real_request(method, path, **kw)

    client.request = slow_request  # type: ignore[method-assign]
    sup.observe_child("Service", child(), deleted=True)
    await settle()
    assert sup.workers.get(KEY) is successor  # type: ignore[comparison-overlap]
    assert successor.wakes == 1


async def test_a_server_body_is_held_without_managed_fields() -> None:
    sup, worker, _ = supervisor(["u1"])
    seen: list[dict[str, Any]] = []
    worker.observe = seen.append  # type: ignore[attr-defined]
    managed = [{"manager": "kubectl", "operation": "Apply", "fieldsV1": {"f:spec": {}}}]
    body = {
        "metadata": {"name": "web", "namespace": "ns", "uid": "u1", "managedFields": managed},
        "spec": {"image": "x"},
    }
    sup.observe_server(body, deleted=False)
    assert seen == [
        {"metadata": {"name": "web", "namespace": "ns", "uid": "u1"}, "spec": {"image": "x"}}
    ]
    assert body["metadata"]["managedFields"] == managed  # kopf's object is not changed


async def test_stopping_all_servers_is_linear_and_leaves_nothing_behind() -> None:
    """Stopping every worker stands between a graceful exit and the lease's release. It
    scanned the whole index and every metric series once per server: ~10 s of CPU at
    1,000 servers, during which the standby could not take over."""
    from mcp_operator import metrics

    sup, _, _ = supervisor(["u1"])
    servers = [("ns", f"s{i}") for i in range(2000)]
    kinds = ("Deployment", "Service", "ServiceAccount", "PodDisruptionBudget", "Pod")
    for namespace, name in servers:
        sup._tasks[(namespace, name)] = []
        metrics.set_conditions(namespace, name, dict.fromkeys(metrics.CONDITION_TYPES, "True"))
        for kind in kinds:
            for n in range(2 if kind == "Pod" else 1):
                meta = {"name": f"{name}-{n}", "namespace": namespace}
                body = {"kind": kind, "metadata": {**meta, "labels": {SERVER_LABEL: name}}}
                sup.shared.index.observe(kind, body, deleted=False)
    assert sup.shared.index.counts["Pod"] == 4000
    started = asyncio.get_running_loop().time()
    await sup.stop_all()
    assert asyncio.get_running_loop().time() - started < 1.5
    assert all(sup.shared.index.children(s) == {} for s in servers[:10])
    assert sum(sup.shared.index.counts.values()) == 0
    assert not any(m._metrics for m in metrics.PER_SERVER)
