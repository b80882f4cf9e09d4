"""Starts, feeds and stops the per-object workers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from mcp_operator import metrics
from mcp_operator.api.models import API_VERSION, PLURAL
from mcp_operator.reconcile.children import Key, compact, without_managed_fields
from mcp_operator.reconcile.worker import ServerWorker, Shared

log = logging.getLogger(__name__)
Obj = dict[str, Any]


class Supervisor:
    """Maps each live MCPServer to one worker task; a deleted object's worker is cancelled."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.workers: dict[Key, ServerWorker] = {}
        self._tasks: dict[Key, list[asyncio.Task[None]]] = {}
        self._verifying: set[Key] = set()
        self._background: set[asyncio.Task[None]] = set()

    def observe_server(self, body: Obj, deleted: bool) -> None:
        body = compact(without_managed_fields(body))  # held per server: no managedFields
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
        metrics.INDEXED.labels(kind).set(self.shared.index.counts[kind])
        if owner is None or kind == "Pod" or owner not in self.workers:
            return
        if deleted:
            # Drift, or the garbage collector removing the children of a server deleted
            # while its DELETED event was missed (a watch gap): re-creating them would
            # fight the collector forever. Check the server still exists first.
            self._verify_then_wake(owner)
        else:
            self.workers[owner].wake()

    def sync_children(self, kind: str, namespace: str | None, bodies: list[Obj]) -> None:
        """A complete (re)list of one child kind: the index drops what vanished."""
        touched = self.shared.index.replace(kind, namespace, bodies)
        metrics.INDEXED.labels(kind).set(self.shared.index.counts[kind])
        if kind == "Pod":
            return
        for owner in touched:
            if owner in self.workers:
                self._verify_then_wake(owner)

    def _verify_then_wake(self, key: Key) -> None:
        if key in self._verifying:
            return
        self._verifying.add(key)
        task = asyncio.create_task(self._verify(key), name=f"verify:{key}")
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _verify(self, key: Key) -> None:
        checked = self.workers.get(key)
        try:
            exists = await self._server_exists(key)
        except Exception as exc:  # unknown: act as before (wake), the next event re-checks
            log.debug("could not check %s/%s: %r", *key, exc)
            exists = True
        finally:
            self._verifying.discard(key)
        worker = self.workers.get(key)
        if worker is not checked:
            # Replaced meanwhile (deleted and re-created under the same name): the check was
            # about the old object; the new worker reconciles on its own.
            if worker is not None:
                worker.wake()
            return
        if not exists:
            log.info("%s/%s no longer exists; stopping its worker", *key)
            self._stop(key)
        elif worker is not None:
            worker.wake()

    async def _server_exists(self, key: Key) -> bool:
        """Listed by name (the operator has list, not get, on MCPServers); same uid."""
        worker = self.workers.get(key)
        if worker is None:
            return False
        uid = worker.body["metadata"].get("uid")
        namespace, name = key
        path = f"/apis/{API_VERSION}/namespaces/{namespace}/{PLURAL}"
        params = {"fieldSelector": f"metadata.name={name}"}
        async with self.shared.api_slots:
            found = await self.shared.client.request("GET", path, params=params)
        uids = [(i.get("metadata") or {}).get("uid") for i in found.get("items") or []]
        return uid in uids

    def _stop(self, key: Key, *, forget_metrics: bool = True) -> None:
        tasks = self._tasks.pop(key, [])
        self.workers.pop(key, None)
        self.shared.index.forget(key)
        if forget_metrics:
            metrics.forget(*key)
        for task in tasks:
            task.cancel()

    async def stop_all(self) -> None:
        """Stop every worker (shutdown, or the lease lost): linear in the servers, since
        it stands between a graceful exit and the lease's release."""
        tasks = [task for group in self._tasks.values() for task in group]
        tasks += list(self._background)
        for key in list(self._tasks):
            self._stop(key, forget_metrics=False)
        metrics.forget_all()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
