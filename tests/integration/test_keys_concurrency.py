"""Two writers of one key ring on the real API server: optimistic concurrency.

Two keys loops (as two operator replicas during a leader hand-over would be) run their
passes at the same instant. The Secret is created by exactly one; a concurrent rotation
request makes both replace it from the same ``resourceVersion`` and exactly one wins; the
loser publishes nothing of its own and converges on the winner's ring at its next pass.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import yaml

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import server_manifest
from mcp_operator.api.validation import parse_server
from mcp_operator.keys import store
from mcp_operator.keys.controller import ROTATE_ANNOTATION, KeysLoop, live_kids
from mcp_operator.kube.client import KubeClient, credentials_from_kubeconfig
from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.reconcile.worker import ServerWorker, Shared
from mcp_operator.render import Capabilities
from tests.e2e.ops import others_paused

Obj = dict[str, Any]


def _loop(client: KubeClient, body: Obj, events: list[str]) -> KeysLoop:
    shared = Shared(
        client=client,
        index=ChildIndex(),
        capabilities=Capabilities(),
        post_event=lambda _body, _kind, reason, _msg: events.append(reason),
    )
    worker = ServerWorker((body["metadata"]["namespace"], body["metadata"]["name"]), body, shared)
    worker.server = parse_server(body)
    return KeysLoop(worker)


async def _state(client: KubeClient, ns: str) -> tuple[Any, frozenset[str]]:
    secret = await client.get("v1", "Secret", ns, "twin-signing-keys")
    config_map = await client.get("v1", "ConfigMap", ns, "twin-jwks")
    assert secret is not None
    ring, _ = store.decode(secret["data"])
    return ring, live_kids(config_map)


async def test_concurrent_writers_leave_one_ring(
    crd_and_rbac: ControlPlane, kubectl: Any, unique_ns: str
) -> None:
    with others_paused():  # a session operator would be a third writer
        await _two_writers(crd_and_rbac, kubectl, unique_ns)


async def _two_writers(crd_and_rbac: ControlPlane, kubectl: Any, ns: str) -> None:
    manifest = server_manifest("twin", ns, auth={"enabled": True})
    kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest))
    body = json.loads(kubectl("get", "mcps", "twin", "-n", ns, "-o", "json").stdout)
    client = KubeClient(credentials_from_kubeconfig(str(crd_and_rbac.admin_kubeconfig)))
    try:
        events: list[list[str]] = [[], []]
        loops = [_loop(client, body, events[i]) for i in (0, 1)]
        server = parse_server(body)
        await asyncio.gather(*(loop.sync(server) for loop in loops))
        # Exactly one created the Secret; the other wrote nothing and holds no ring.
        assert sorted(loop.ring is None for loop in loops) == [False, True]
        ring, _ = await _state(client, ns)
        assert ring.active is not None and ring.rotations == 1
        for loop in loops:  # the loser converges on the winner's ring
            await loop.sync(server)
        assert loops[0].ring == loops[1].ring
        first_active = ring.active.kid

        # A rotation request seen by both at once: two different next keys, one write wins.
        meta = {**body["metadata"], "annotations": {ROTATE_ANNOTATION: "2026-11-30T00:00:00Z"}}
        for loop in loops:
            loop.worker.body = {**body, "metadata": meta}
        rings_before = [loop.ring for loop in loops]
        await asyncio.gather(*(loop.sync(server) for loop in loops))
        moved = [loop.ring != before for loop, before in zip(loops, rings_before, strict=True)]
        assert sorted(moved) == [False, True], "exactly one writer may win"
        ring, published = await _state(client, ns)
        assert ring.next is not None and ring.active is not None
        assert ring.active.kid == first_active  # still signing: the next key waits
        assert published == frozenset(ring.kids())  # only the winner's kid was published
        for loop in loops:
            await loop.sync(server)
        assert loops[0].ring == loops[1].ring
        assert (
            sum(1 for k in loops[0].ring.keys if k.phase == "active") == 1
            if loops[0].ring
            else False
        )
    finally:
        await client.close()
