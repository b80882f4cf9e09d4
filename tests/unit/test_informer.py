"""The child informer against a scripted API server: label selector on every request,
relist after 410 Gone, and the relist drops what vanished during the gap."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from mcp_operator.kube.client import KubeClient
from mcp_operator.kube.informer import MANAGED_SELECTOR, Informer
from tests.unit.fake_api import Seen, fake_api, js


def pod(name: str, version: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": version}}


class Sink:
    def __init__(self) -> None:
        self.synced: list[list[str]] = []
        self.events: list[tuple[str, bool]] = []

    def observe_child(self, kind: str, body: dict[str, Any], deleted: bool) -> None:
        self.events.append((body["metadata"]["name"], deleted))

    def sync_children(self, kind: str, namespace: str | None, bodies: list[Any]) -> None:
        self.synced.append(sorted(b["metadata"]["name"] for b in bodies))


async def test_relist_after_gone_and_server_side_selector() -> None:
    lists = [
        {"metadata": {"resourceVersion": "10"}, "items": [pod("a", "5"), pod("b", "6")]},
        {"metadata": {"resourceVersion": "20"}, "items": [pod("a", "5")]},  # b gone in the gap
    ]
    watches = [
        [
            {"type": "ADDED", "object": pod("c", "11")},
            {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "12"}}},
            {"type": "ERROR", "object": {"code": 410, "reason": "Expired"}},
        ],
    ]
    seen: list[Seen] = []

    def handler(request: Seen) -> tuple[int, bytes]:
        if request.query.get("watch"):
            if not watches:
                return 500, js({"message": "done"})
            return 200, ("\n".join(json.dumps(e) for e in watches.pop(0)) + "\n").encode()
        return 200, js(lists.pop(0))

    async with fake_api(handler, seen) as creds:
        client = KubeClient(creds)
        sink = Sink()
        informer = Informer(client, "v1", "Pod", None, sink)
        task = asyncio.create_task(informer.run())
        for _ in range(200):
            if len(sink.synced) >= 2:
                break
            await asyncio.sleep(0.01)
        task.cancel()
        await client.close()
    assert sink.synced == [["a", "b"], ["a"]]
    assert sink.events == [("c", False)]
    assert all(r.query.get("labelSelector") == MANAGED_SELECTOR for r in seen)
    watch = next(r for r in seen if r.query.get("watch"))
    assert watch.query["resourceVersion"] == "10"


def test_every_watched_and_rendered_kind_has_a_resource_path() -> None:
    """A kind missing from the client's table crashes the operator at start (KeyError)."""
    from mcp_operator.api.validation import parse_server
    from mcp_operator.kube.client import RESOURCES, resource_path
    from mcp_operator.kube.informer import CHILD_KINDS
    from mcp_operator.render import render

    server = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "w", "namespace": "n"},
            "spec": {"image": "x", "cache": {"enabled": True}, "auth": {"enabled": True}},
        }
    )
    kinds = {kind for _, kind in CHILD_KINDS} | {o["kind"] for o in render(server)}
    for kind in sorted(kinds):
        assert kind in RESOURCES, kind
        assert resource_path("v1", kind, "n")
