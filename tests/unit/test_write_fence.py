"""The leader-election fence sits in the client's write path: once this replica may not act,
no write leaves the process (reads still do), whoever the caller is."""

from __future__ import annotations

import httpx
import pytest

from mcp_operator.kube.auth import Credentials
from mcp_operator.kube.client import KubeClient, NotLeading


async def test_writes_are_refused_before_sending_once_the_fence_closes() -> None:
    sent: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append(request.method)
        return httpx.Response(200, json={"metadata": {}})

    allowed = [True]
    client = KubeClient(Credentials(server="https://api"), may_write=lambda: allowed[0])
    client._http = httpx.AsyncClient(base_url="https://api", transport=httpx.MockTransport(handler))
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"}}
    await client.apply(obj)
    allowed[0] = False
    with pytest.raises(NotLeading):
        await client.apply(obj)
    with pytest.raises(NotLeading):
        await client.patch("v1", "Pod", "n", "p", {"status": {}}, subresource="status")
    with pytest.raises(NotLeading):
        await client.delete("v1", "Service", "n", "s")
    await client.get("v1", "Service", "n", "s")  # reads are fine
    # the lease itself is written unfenced (the election decides about it)
    await client.request("PUT", "/apis/coordination.k8s.io/v1/x", body={}, fenced=False)
    await client.close()
    assert sent == ["PATCH", "GET", "PUT"]
