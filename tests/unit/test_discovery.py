"""Re-discovery without a restart: the Prometheus Operator's API appearing (or going) swaps
the workers' capabilities, starts (stops) the PrometheusRule informers and wakes every
worker; an unrelated API coming or going wakes nobody. The API server is scripted."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from mcp_operator.kube.auth import Credentials
from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.reconcile.supervisor import Supervisor
from mcp_operator.reconcile.worker import Shared
from mcp_operator.render.alerts import MONITORING_API
from mcp_operator.render.context import Capabilities
from mcp_operator.runner import Operation, RunOptions
from tests.unit.fake_api import Seen, fake_api, js

BASE = frozenset({"v1", "apps/v1", "policy/v1"})
RULE = {
    "apiVersion": MONITORING_API,
    "kind": "PrometheusRule",
    "metadata": {
        "name": "weather",
        "namespace": "shop",
        "resourceVersion": "3",
        "labels": {"mcp-operator.dev/server": "weather"},
    },
}


class Worker:
    def __init__(self) -> None:
        self.wakes = 0

    def wake(self) -> None:
        self.wakes += 1


def handler(paths: list[str]) -> Callable[[Seen], tuple[int, bytes]]:
    def answer(request: Seen) -> tuple[int, bytes]:
        paths.append(request.path)
        if request.query.get("watch"):
            return 500, js({"message": "no watch here"})  # backs off
        return 200, js({"metadata": {"resourceVersion": "5"}, "items": [RULE]})

    return answer


def operation(creds: Credentials) -> tuple[Operation, Worker]:
    op = Operation(RunOptions(), creds)
    shared = Shared(
        client=op.client,
        index=ChildIndex(),
        capabilities=Capabilities(BASE, minor=37),
        post_event=lambda *_: None,
    )
    op.supervisor = Supervisor(shared)
    worker = Worker()
    op.supervisor.workers[("shop", "weather")] = worker  # type: ignore[assignment]
    return op, worker


async def settle(check: Any) -> None:
    for _ in range(200):
        if check():
            return
        await asyncio.sleep(0.01)


async def test_the_monitoring_api_appearing_and_going_without_a_restart() -> None:
    paths: list[str] = []
    seen: list[Seen] = []
    async with fake_api(handler(paths), seen) as creds:
        op, worker = operation(creds)
        await scenario(op, worker, paths)


async def scenario(op: Operation, worker: Worker, paths: list[str]) -> None:
    assert op.supervisor is not None
    index = op.supervisor.shared.index
    try:
        await op.use_api_versions(BASE | {"example.com/v1"})  # unrelated: nobody woken
        assert worker.wakes == 0 and not op.rule_informers

        await op.use_api_versions(BASE | {MONITORING_API})
        caps = op.supervisor.shared.capabilities
        assert MONITORING_API in caps.api_versions and caps.minor == 37
        assert op.rule_informers and worker.wakes == 1
        await settle(lambda: index.children(("shop", "weather")))
        assert ("PrometheusRule", "weather") in index.children(("shop", "weather"))
        assert any(p.endswith("/monitoring.coreos.com/v1/prometheusrules") for p in paths)
        wakes = worker.wakes  # the listed rule woke its owner too

        await op.use_api_versions(BASE | {MONITORING_API})  # unchanged: nothing happens
        assert worker.wakes == wakes

        await op.use_api_versions(BASE)  # the CRD removed
        assert not op.rule_informers and worker.wakes > wakes
        assert index.children(("shop", "weather")) == {}
    finally:
        await op.close()
