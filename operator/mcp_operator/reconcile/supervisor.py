"""Starts, feeds and stops the per-object workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mcp_operator import metrics
from mcp_operator.reconcile.children import Key
from mcp_operator.reconcile.worker import ServerWorker, Shared

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Supervisor:
    """Maps each live MCPServer to one worker task; a deleted object's worker is cancelled."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.workers: dict[Key, ServerWorker] = {}
        self._tasks: dict[Key, list[asyncio.Task[None]]] = {}

    def observe_server(self, body: Obj, deleted: bool) -> None:
        meta = body["metadata"]
        key: Key = (meta["namespace"], meta["name"])
        worker = self.workers.get(key)
        if worker is not None and worker.body["metadata"].get("uid") != meta.get("uid"):
            self._stop(key)  # same name, new object: start over
            worker = None
        if deleted or meta.get("deletionTimestamp"):
            self._stop(key)
            return
        if worker is None:
            worker = ServerWorker(key, body, self.shared)
            self.workers[key] = worker
            loops = [worker.run()] + [companion(worker) for companion in self.shared.companions]
            self._tasks[key] = [
                asyncio.create_task(loop, name=f"mcpserver:{key}") for loop in loops
            ]
        worker.observe(body)

    def observe_child(self, kind: str, body: Obj, deleted: bool) -> None:
        owner = self.shared.index.observe(kind, body, deleted)
        worker = self.workers.get(owner) if owner else None
        if worker is not None and kind != "Pod":
            worker.wake()

    def _stop(self, key: Key) -> None:
        tasks = self._tasks.pop(key, [])
        self.workers.pop(key, None)
        self.shared.index.forget(key)
        metrics.forget(*key)
        for task in tasks:
            task.cancel()

    async def stop_all(self) -> None:
        tasks = [task for group in self._tasks.values() for task in group]
        for key in list(self._tasks):
            self._stop(key)
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
