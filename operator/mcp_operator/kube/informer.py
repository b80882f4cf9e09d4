"""List+watch of the operator's children, filtered by the API server.

Why not kopf's watches: kopf filters ``labels=`` on the client (every pod of the cluster —
and its plaintext env — would flow through the operator), and after a watch gap (410 Gone)
it relists without telling handlers which objects vanished meanwhile, so an index fed by
its events keeps stale pods forever (probed at old IPs that may now be another tenant's).

Each :class:`Informer` lists one kind with ``labelSelector`` (the renderer's
``app.kubernetes.io/managed-by`` label), hands the complete list to ``on_sync`` (which
replaces that kind in the index: vanished objects are dropped), then watches from the
list's resourceVersion, and relists after any gap. A relabelled object that stops
matching arrives as a DELETED event from the API server.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from mcp_operator import metrics
from mcp_operator.kube.client import ApiError, KubeClient, read_lines, resource_path
from mcp_operator.render.meta import MANAGED_BY

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MANAGED_SELECTOR = f"app.kubernetes.io/managed-by={MANAGED_BY}"
WATCH_TIMEOUT_S = 300
LIST_CHUNK = 500
BACKOFF_MAX_S = 30.0

# (apiVersion, kind) of every child kind the renderer produces, plus pods.
CHILD_KINDS: tuple[tuple[str, str], ...] = (
    ("apps/v1", "Deployment"),
    ("v1", "Service"),
    ("v1", "ServiceAccount"),
    ("policy/v1", "PodDisruptionBudget"),
    ("networking.k8s.io/v1", "NetworkPolicy"),
    ("v1", "Pod"),
)


class Sink(Protocol):
    def observe_child(self, kind: str, body: Obj, deleted: bool) -> None: ...

    def sync_children(self, kind: str, namespace: str | None, bodies: list[Obj]) -> None: ...


class Gone(Exception):
    """The watch's resourceVersion is too old: relist."""


class Informer:
    def __init__(
        self,
        client: KubeClient,
        api_version: str,
        kind: str,
        namespace: str | None,
        sink: Sink,
        selector: str = MANAGED_SELECTOR,
    ) -> None:
        self.client = client
        self.api_version = api_version
        self.kind = kind
        self.namespace = namespace
        self.sink = sink
        self.selector = selector
        self.path = resource_path(api_version, kind, namespace)
        # Set after the first list attempt, complete or failed (e.g. 403): workers start
        # then, and do not wait on a kind they cannot see anyway.
        self.synced = asyncio.Event()

    async def run(self) -> None:
        delay = 1.0
        while True:
            try:
                version = await self.relist()
                delay = 1.0
                while True:
                    version = await self.watch(version)
            except Gone:
                log.debug("%s watch expired; relisting", self.kind)
            except (ApiError, OSError, ValueError) as exc:
                self.synced.set()
                log.warning("%s watch failed (%s); retrying in %.0fs", self.kind, exc, delay)
                await asyncio.sleep(delay)
                delay = min(BACKOFF_MAX_S, delay * 2)

    async def relist(self) -> str:
        items: list[Obj] = []
        params: dict[str, Any] = {"labelSelector": self.selector, "limit": LIST_CHUNK}
        while True:
            page = await self.client.request("GET", self.path, params=params)
            for item in page.get("items") or []:
                item.setdefault("apiVersion", self.api_version)
                item.setdefault("kind", self.kind)
                items.append(item)
            meta = page.get("metadata") or {}
            if not meta.get("continue"):
                break
            params["continue"] = meta["continue"]
        metrics.WATCH_RELISTS.labels(self.kind).inc()
        self.sink.sync_children(self.kind, self.namespace, items)
        self.synced.set()
        return str(meta.get("resourceVersion") or "")

    async def watch(self, version: str) -> str:
        """One watch request, until the server ends it; returns the last resourceVersion."""
        params = {
            "watch": "true",
            "labelSelector": self.selector,
            "resourceVersion": version,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": str(WATCH_TIMEOUT_S),
        }
        read_timeout = WATCH_TIMEOUT_S + 30.0
        async with self.client.stream(self.path, params=params, read_timeout=read_timeout) as resp:
            if resp.status == 410:
                raise Gone()
            if resp.status >= 400:
                text = (await resp.read())[:200].decode(errors="replace")
                raise ApiError(resp.status, resp.reason or "", text)
            async for line in read_lines(resp):
                version = self.handle(json.loads(line), version)
        return version

    def handle(self, event: Obj, version: str) -> str:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiError(
                int(obj.get("code") or 500), obj.get("reason", ""), obj.get("message", "")
            )
        new_version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
        if kind == "BOOKMARK":
            return new_version
        obj.setdefault("apiVersion", self.api_version)
        obj.setdefault("kind", self.kind)
        metrics.WATCH_EVENTS.labels(self.kind).inc()
        self.sink.observe_child(self.kind, obj, deleted=kind == "DELETED")
        return new_version


def has_patterns(namespaces: Sequence[str]) -> bool:
    """Whether any ``--namespace`` is a kopf glob/negation pattern rather than a name."""
    return any(set(ns) & set("*?[!") for ns in namespaces)


def start_child_informers(
    client: KubeClient,
    sink: Sink,
    namespaces: Sequence[str] | None,
    kinds: Sequence[tuple[str, str]] = CHILD_KINDS,
    api_versions: Callable[[str, str], str] | None = None,
    synced: list[asyncio.Event] | None = None,
) -> list[asyncio.Task[None]]:
    """One informer per kind, cluster-wide (``namespaces`` None, or any glob pattern) or
    per listed namespace. ``client`` should be dedicated: watches hold connections.
    Each informer's ``synced`` event is appended to ``synced``."""
    plain = namespaces is not None and not has_patterns(namespaces)
    scopes: list[str | None] = list(namespaces) if plain and namespaces else [None]
    tasks = []
    for api_version, kind in kinds:
        version = api_versions(api_version, kind) if api_versions else api_version
        for namespace in scopes:
            informer = Informer(client, version, kind, namespace, sink)
            if synced is not None:
                synced.append(informer.synced)
            tasks.append(asyncio.create_task(informer.run(), name=f"informer:{kind}:{namespace}"))
    return tasks


async def wait_synced(events: list[asyncio.Event], timeout: float) -> bool:
    """Until every informer has listed once (so workers starting next see what already
    exists and do not re-apply it); False on timeout (the operator proceeds anyway)."""
    try:
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in events)), timeout=timeout)
    except TimeoutError:
        return False
    return True


async def stop_informers(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
