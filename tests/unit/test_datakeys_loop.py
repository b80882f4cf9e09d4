"""The data-keys loop's I/O edge with a fault-injecting client (the real API is in
tests/e2e/test_data_keys.py): what a user sees when a write of the keyring is refused."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from mcp_operator.api.models import DataKeysStatus, DataKeyStatus, MCPServerStatus
from mcp_operator.api.validation import parse_server
from mcp_operator.keys.datacontroller import DataKeysLoop
from mcp_operator.kube.client import ApiError

Obj = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class RefusingClient:
    """No Secret exists; the first ``refusals`` creates are refused (RBAC, quota)."""

    def __init__(self, refusals: int) -> None:
        self.refusals = refusals
        self.created: list[Obj] = []

    async def get(self, *_args: Any) -> Obj | None:
        return self.created[-1] if self.created else None

    async def create(self, body: Obj) -> Obj:
        if self.refusals:
            self.refusals -= 1
            raise ApiError(403, "Forbidden", "secrets is forbidden")
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": "1"}}
        self.created.append(body)
        return body

    async def apply(self, body: Obj) -> Obj:
        return body


def a_worker_whose_secret_was_deleted(client: RefusingClient) -> tuple[Any, list[tuple[str, ...]]]:
    body = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "vault", "namespace": "tools"},
        "spec": {"image": "ghcr.io/example/mcp:1", "dataEncryption": {"enabled": True}},
    }
    events: list[tuple[str, ...]] = []
    shared = SimpleNamespace(
        client=client,
        clock=lambda: T0,
        post_event=lambda _body, kind, reason, message: events.append((kind, reason, message)),
    )
    had = DataKeysStatus(keys=[DataKeyStatus(kid="old1", phase="active", created=T0)])

    async def write_status() -> None:
        return None

    worker = SimpleNamespace(
        key=("tools", "vault"),
        body=body,
        server=parse_server(body),
        shared=shared,
        status=MCPServerStatus(data_keys=had),
        lock=asyncio.Lock(),
        data_keys_conditions=[],
        write_status=write_status,
    )
    return worker, events


async def test_regenerated_is_announced_once_and_only_after_the_new_keys_are_written() -> None:
    client = RefusingClient(refusals=3)
    worker, events = a_worker_whose_secret_was_deleted(client)
    loop = DataKeysLoop(worker)
    server = worker.server
    for _ in range(3):  # each refused create is a failed pass (the loop backs off, retries)
        with contextlib.suppress(ApiError):
            await loop.sync(server)
        assert [e for e in events if e[1] == "DataKeysRegenerated"] == []
        assert loop.regenerated is None
    await loop.sync(server)
    assert len(client.created) == 1
    regenerated = [e for e in events if e[1] == "DataKeysRegenerated"]
    assert len(regenerated) == 1 and regenerated[0][0] == "Warning"
    assert "old1" in regenerated[0][2]
    [ready] = worker.data_keys_conditions
    assert ready.reason == "DataKeysRegenerated"
