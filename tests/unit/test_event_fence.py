"""Events are posted through the operator's fenced client: a replica that may no longer act
posts none (kopf's own queue and client, unfenced, are not used)."""

from __future__ import annotations

import asyncio

import kopf

from mcp_operator.kube.client import KubeClient
from mcp_operator.runner import EventPoster, configure_kopf
from tests.unit.fake_api import Seen, fake_api, js

BODY = {
    "apiVersion": "mcp-operator.dev/v1alpha1",
    "kind": "MCPServer",
    "metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
}


async def test_events_pass_the_write_fence_and_kopf_posts_none() -> None:
    seen: list[Seen] = []

    def handler(request: Seen) -> tuple[int, bytes]:
        return 201, js({"metadata": {"name": "web.1"}})

    allowed = [True]
    async with fake_api(handler, seen) as creds:
        client = KubeClient(creds, may_write=lambda: allowed[0])
        post = EventPoster(client)
        post(BODY, "Warning", "FailedOver", "switched to backup")
        await asyncio.sleep(0.3)
        allowed[0] = False
        post(BODY, "Normal", "Recovered", "back")
        await asyncio.sleep(0.3)
        await client.close()
    assert [(r.method, r.path) for r in seen] == [("POST", "/api/v1/namespaces/ns/events")]
    settings = kopf.OperatorSettings()
    configure_kopf(settings)
    assert settings.posting.enabled is False
