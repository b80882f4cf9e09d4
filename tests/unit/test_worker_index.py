"""What the worker puts into the child index: only the kinds the informers watch.

The index is the worker's view of the cluster. A watched child's apply result is recorded
(the watch keeps it current afterwards); an unwatched one (the cache's config Secret) is
never recorded, so it is judged the same way before and after an operator restart: not
current, applied every pass, and never pruned on the strength of a stale copy.
"""

from __future__ import annotations

import asyncio
from typing import Any

from mcp_operator.api.validation import parse_server
from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.reconcile.worker import WATCHED_KINDS, ServerWorker, Shared
from mcp_operator.render import RenderContext, render
from mcp_operator.render.context import Capabilities
from tests.unit.test_cache import FakeApplier

Obj = dict[str, Any]
BODY: Obj = {
    "apiVersion": "mcp-operator.dev/v1alpha1",
    "kind": "MCPServer",
    "metadata": {"name": "weather", "namespace": "tools", "uid": "uid-1", "generation": 1},
    "spec": {"image": "ghcr.io/example/mcp:1", "cache": {"enabled": True}},
}


def desired() -> list[Obj]:
    ctx = RenderContext(owner_uid="uid-1", cache_password_hash="h", cache_monitor_hash="m")
    return render(parse_server(BODY), ctx)


def worker(client: FakeApplier, index: ChildIndex) -> ServerWorker:
    return ServerWorker(("tools", "weather"), BODY, Shared(client, index, Capabilities(), print))


def test_only_watched_kinds_enter_the_index_and_unwatched_ones_are_applied_every_pass() -> None:
    objs = desired()
    unwatched = {(o["kind"], o["metadata"]["name"]) for o in objs if o["kind"] not in WATCHED_KINDS}
    assert unwatched == {("Secret", "weather-cache-config")}  # the case this is about
    client, index = FakeApplier(), ChildIndex()
    w = worker(client, index)
    for _ in range(3):
        asyncio.run(w._apply(objs))
    indexed = set(index.children(("tools", "weather")))
    assert indexed == {(o["kind"], o["metadata"]["name"]) for o in objs} - unwatched
    assert client.applied.count(("Secret", "weather-cache-config")) == 3
    assert client.applied.count(("Deployment", "weather-primary")) == 1
    assert index.counts["Secret"] == 0


def test_prune_never_acts_on_an_unwatched_kind() -> None:
    """An applied config Secret, then a pass that does not want it: prune has no stale copy
    to delete from (only the explicit delete when the cache is turned off does)."""
    client, index = FakeApplier(), ChildIndex()
    w = worker(client, index)
    objs = desired()
    asyncio.run(w._apply(objs))
    asyncio.run(w._prune([o for o in objs if o["kind"] != "Secret"]))
    assert client.deleted == []


def test_an_apply_response_older_than_the_watch_event_does_not_overwrite_it() -> None:
    """The applies of a pass are gathered: the cache Deployment's watch event (its pod
    ready within milliseconds) can be indexed before the pass records the apply responses.
    The older response must not bring back ``readyReplicas: 0`` (CacheReady stuck False)."""
    [cache_dep] = [
        o
        for o in desired()
        if (o["kind"], o["metadata"]["name"]) == ("Deployment", "weather-cache")
    ]
    client, index = FakeApplier(), ChildIndex()
    w = worker(client, index)

    async def slow_apply(obj: Obj) -> Obj:
        response = {**obj, "metadata": {**obj["metadata"], "resourceVersion": "100"}}
        newer = {
            **obj,
            "metadata": {**obj["metadata"], "resourceVersion": "105"},
            "status": {"readyReplicas": 1},
        }
        index.observe("Deployment", newer, deleted=False)  # the watch event, first
        return response

    client.apply = slow_apply  # type: ignore[method-assign]
    asyncio.run(w._apply([cache_dep]))
    held = index.children(("tools", "weather"))[("Deployment", "weather-cache")]
    assert held["metadata"]["resourceVersion"] == "105"
    assert held["status"] == {"readyReplicas": 1}


def test_the_body_kept_after_a_status_write_has_no_managed_fields() -> None:
    """The status patch's response carries the object's managedFields (every manager's
    record of the spec and the whole status): the worker keeps its metadata, not that."""

    class StatusClient:
        async def patch(self, *_: Any, **__: Any) -> Obj:
            meta = {**BODY["metadata"], "resourceVersion": "9"}
            return {**BODY, "metadata": {**meta, "managedFields": [{"manager": "x"}]}}

    w = ServerWorker(
        ("tools", "weather"),
        BODY,
        Shared(StatusClient(), ChildIndex(), Capabilities(), print),  # type: ignore[arg-type]
    )
    asyncio.run(w.write_status())
    assert w.body["metadata"]["resourceVersion"] == "9"
    assert "managedFields" not in w.body["metadata"]


def test_a_worker_starts_from_the_status_but_keeps_no_copy_of_it() -> None:
    """Resumed from the cluster (the status read when the worker starts), but the API's
    status is not held beside the worker's own, nor parsed into ``server`` each pass."""
    body = {**BODY, "status": {"activeTier": "backup", "observedGeneration": 1}}
    w = worker(FakeApplier(), ChildIndex())
    w = ServerWorker(("tools", "weather"), body, w.shared)
    assert w.status.active_tier == "backup"
    assert "status" not in w.body
    w.observe({**body, "status": {"activeTier": "primary"}})
    assert "status" not in w.body
    assert w.status.active_tier == "backup"
    asyncio.run(w._reconcile())
    assert w.server is not None and w.server.status is None
