"""The leader-election fence sits in the client's write path: once this replica may not act,
no write leaves the process (reads still do), whoever the caller is."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from mcp_operator.kube.client import KubeClient, NotLeading, read_lines, user_agent
from tests.unit.fake_api import Seen, fake_api, js


async def test_writes_are_refused_before_sending_once_the_fence_closes() -> None:
    seen: list[Seen] = []

    def handler(request: Seen) -> tuple[int, bytes]:
        return 200, js({"metadata": {}})

    allowed = [True]
    async with fake_api(handler, seen) as creds:
        client = KubeClient(creds, may_write=lambda: allowed[0])
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
    assert [r.method for r in seen] == ["PATCH", "GET", "PUT"]


async def test_a_401_refreshes_the_token_once_and_long_watch_lines_arrive_whole() -> None:
    class Tokens:
        def __init__(self) -> None:
            self.token = "old"

        def current(self) -> str | None:
            return self.token

        def invalidate(self) -> None:
            self.token = "new"  # a rotated service-account token

    seen: list[Seen] = []
    big = {"type": "ADDED", "object": {"metadata": {"name": "x" * 200_000}}}

    def handler(request: Seen) -> tuple[int, bytes]:
        if request.query.get("watch"):
            return 200, js(big) + b"\n" + js(big)
        return (401, js({"reason": "Unauthorized"})) if len(seen) == 1 else (200, js({"ok": 1}))

    async with fake_api(handler, seen) as creds:
        tokens = Tokens()
        client = KubeClient(replace(creds, tokens=tokens))
        assert await client.request("GET", "/api") == {"ok": 1}
        assert len(seen) == 2 and tokens.token == "new"
        async with client.stream("/w", params={"watch": "true"}, read_timeout=5) as resp:
            lines = [json.loads(line) async for line in read_lines(resp)]
        await client.close()
    assert lines == [big, big]


async def test_every_request_names_the_replica_in_its_user_agent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Replicas share one service account; the User-Agent tells them apart in the API
    server's audit log (tests/e2e/test_ha.py relies on it)."""
    monkeypatch.setenv("POD_NAME", "mcp-operator-7d9f-x2b")
    seen: list[Seen] = []
    async with fake_api(lambda _: (200, js({})), seen) as creds:
        client = KubeClient(creds)
        lease = KubeClient(creds, agent=user_agent("leader-election"))
        await client.request("GET", "/version")
        async with client.stream("/api/v1/pods", params={"watch": "1"}, read_timeout=5):
            pass
        await lease.request("PUT", "/apis/coordination.k8s.io/v1/x", body={})
        await client.close()
        await lease.close()
    agents = [r.user_agent for r in seen]
    assert agents[0] == agents[1] and agents[0].endswith(" (mcp-operator-7d9f-x2b)")
    assert agents[0].startswith("mcp-operator/")
    assert agents[2] == f"{agents[0]} leader-election"


async def test_fenced_writes_carry_the_server_side_timeout_of_the_write_window() -> None:
    """A write that passed the fence just before the renew deadline must not be applied by
    a slow API server after a successor took over: the API server abandons it when the
    window (until a successor could act) has passed. Reads and the lease are not limited."""
    seen: list[Seen] = []
    window: list[float | None] = [4.25]
    async with fake_api(lambda _: (200, js({"metadata": {}})), seen) as creds:
        client = KubeClient(creds, may_write=lambda: True, write_window=lambda: window[0])
        obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"}}
        await client.apply(obj)
        await client.get("v1", "Service", "n", "s")
        await client.request("PUT", "/apis/coordination.k8s.io/v1/x", body={}, fenced=False)
        window[0] = None  # not leading (no election): no limit
        await client.delete("v1", "Service", "n", "s")
        await client.close()
    assert [r.query.get("timeout") for r in seen] == ["4.250s", None, None, None]
    assert seen[0].query["fieldManager"] == "mcp-operator"
