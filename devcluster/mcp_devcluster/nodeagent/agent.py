"""The node agent: a kubelet stand-in (for several Nodes) on a one-host dev cluster.

It registers one or more Nodes (``AgentConfig.nodes``, spread round-robin over
``AgentConfig.zones`` zones through the ``topology.kubernetes.io/zone`` label), keeps each
one's Lease and status fresh, and runs the containers of every pod bound to any of them as
local processes via a pod worker. Pods are bound by the real kube-scheduler; on a control
plane without one (``binder`` ``agent``, e.g. the oldest-release smoke, or ``auto`` against a
server older than 1.24) the agent binds each unscheduled pod to the first of its nodes whose
labels match its ``nodeSelector`` (affinity, taints and resources ignored). It also proxies
every Service to its ready endpoints (``proxy``: a kube-proxy stand-in). Watches (pods,
Secrets, ConfigMaps, Nodes, Services, EndpointSlices) drive everything; nothing polls the API.

Fault injection (a zone or node loss): annotate a Node with ``DOWN_ANNOTATION: "true"`` and the
agent stops renewing its Lease and status and kills its pods' processes, as if the machine
had died; the node lifecycle controller then marks it NotReady. Removing the annotation brings
the node back (heartbeats resume; pods still bound to it run again).
"""

from __future__ import annotations

import base64
import logging
import queue
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .container import BackoffPolicy
from .envvars import config_map_values, decode_secret
from .images import ImageMap
from .ipam import DEFAULT_POD_CIDR, IpAllocator, ensure_local_range
from .kubeapi import ApiError, Informer, KubeClient, key_of
from .metrics import ContainerSample, MetricsServer
from .node import NodeHeartbeat
from .podworker import NodeContext, PodWorker
from .process import Spawner, kill_leftovers
from .proxy import HOSTS_FILE, ServiceProxy, default_service_cidr

log = logging.getLogger("nodeagent")

JSON = dict[str, Any]
#: Node annotation that makes the agent play dead for that node (see the module docstring).
DOWN_ANNOTATION = "nodeagent.mcp-operator.dev/down"
#: Servers older than this minor have no scheduler in the harness: the agent binds.
_SCHEDULER_MINOR = 24


@dataclass(frozen=True)
class NodeSpec:
    """One Node the agent runs: its name and zone."""

    name: str
    zone: str


def node_specs(first: str, count: int, zones: int) -> list[NodeSpec]:
    """``first``, ``first-2``, ... spread round-robin over ``zone-a``, ``zone-b``, ...

    3 nodes in 2 zones: ``first`` and ``first-3`` in zone-a, ``first-2`` in zone-b, so losing
    zone-a loses two nodes and zone-b keeps serving.
    """
    if count < 1 or not 1 <= zones <= min(count, 26):
        raise ValueError(f"need 1 <= zones <= nodes (got {count} nodes, {zones} zones)")
    names = [first] + [f"{first}-{i}" for i in range(2, count + 1)]
    zone_names = [f"zone-{chr(ord('a') + i)}" for i in range(zones)]
    return [NodeSpec(name, zone_names[i % zones]) for i, name in enumerate(names)]


def default_state_dir(node_name: str) -> Path:
    return Path.home() / ".cache" / "mcp-operator" / f"nodeagent-{node_name}"


@dataclass
class AgentConfig:
    """Settings of one agent (the CLI flags)."""

    kubeconfig: str
    node_name: str = "mcp-local"
    pod_cidr: str = DEFAULT_POD_CIDR
    service_cidr: str | None = None  # default: the pod CIDR's last /24
    proxy: bool = True
    host_ip: str = "127.0.0.1"
    image_map: ImageMap = field(default_factory=ImageMap)
    state_dir: Path | None = None
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    stop_grace: float = 2.0
    #: How many Nodes to register (``node_name`` first) and over how many zones.
    nodes: int = 1
    zones: int = 1
    #: Who binds pods: "scheduler" (kube-scheduler runs), "agent", or "auto" (agent when the
    #: API server is older than 1.24).
    binder: str = "auto"
    #: Per-container memory series on 127.0.0.1:PORT/metrics (nodeagent/metrics); 0: off.
    metrics_port: int = 0

    def node_specs(self) -> list[NodeSpec]:
        return node_specs(self.node_name, self.nodes, self.zones)


class ObjectCache:
    """Secrets and ConfigMaps from the informers, with a direct GET on a cache miss.

    The GET closes the race where a pod is created right after the Secret it reads and
    the Secret's watch event has not arrived yet.
    """

    def __init__(self, client: KubeClient, secrets: Informer, config_maps: Informer) -> None:
        self._client, self._secrets, self._config_maps = client, secrets, config_maps
        self._tokens: dict[tuple[str, str, str, str], tuple[bytes, float]] = {}
        self._token_lock = threading.Lock()

    def _object(self, informer: Informer, plural: str, ns: str, name: str) -> JSON | None:
        obj = informer.get(f"{ns}/{name}")
        if obj is not None:
            return obj
        try:
            return self._client.get(f"/api/v1/namespaces/{ns}/{plural}/{name}")
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        obj = self._object(self._secrets, "secrets", namespace, name)
        return None if obj is None else decode_secret(obj)

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        obj = self._object(self._config_maps, "configmaps", namespace, name)
        return None if obj is None else config_map_values(obj)

    def secret_bytes(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        obj = self._object(self._secrets, "secrets", namespace, name)
        if obj is None:
            return None
        out = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        out.update({k: v.encode() for k, v in (obj.get("stringData") or {}).items()})
        return out

    def service_account_token(
        self, pod: Mapping[str, Any], audience: str | None, seconds: int
    ) -> bytes:
        """A TokenRequest token of the pod's ServiceAccount bound to the pod; the same one
        until 80 % of its life (the kubelet's refresh point), so volume syncs do not churn."""
        meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
        ns, sa = meta.get("namespace", "default"), spec.get("serviceAccountName") or "default"
        key = (ns, sa, str(meta.get("uid", "")), audience or "")
        now = time.monotonic()
        with self._token_lock:
            cached = self._tokens.get(key)
            if cached is not None and now < cached[1]:
                return cached[0]
        body: JSON = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "expirationSeconds": seconds,
                "boundObjectRef": {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": meta.get("name", ""),
                    "uid": meta.get("uid", ""),
                },
                **({"audiences": [audience]} if audience else {}),
            },
        }
        made = self._client.create(f"/api/v1/namespaces/{ns}/serviceaccounts/{sa}/token", body)
        token = str((made.get("status") or {}).get("token", "")).encode()
        with self._token_lock:
            self._tokens[key] = (token, now + 0.8 * seconds)
        return token

    def config_map_bytes(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        obj = self._object(self._config_maps, "configmaps", namespace, name)
        if obj is None:
            return None
        out = {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
        out.update({k: v.encode() for k, v in (obj.get("data") or {}).items()})
        return out


class NodeAgent:
    """Library entry point: ``NodeAgent(AgentConfig(kubeconfig=...)).start()`` / ``.stop()``."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir or default_state_dir(config.node_name)
        self.client = KubeClient(config.kubeconfig)
        self.service_cidr = config.service_cidr or default_service_cidr(config.pod_cidr)
        self.ipam = IpAllocator(config.pod_cidr, exclude=self.service_cidr)
        self.proxy: ServiceProxy | None = None
        self.metrics: MetricsServer | None = None
        self._workers: dict[str, PodWorker] = {}
        self._lock = threading.Lock()
        self._binds: queue.Queue[JSON | None] = queue.Queue()
        self._unschedulable: set[str] = set()
        self.nodes = config.node_specs()
        #: Heartbeat of each node by name, in registration order (``node_name`` first).
        self.heartbeats = {
            n.name: NodeHeartbeat(self.client, n.name, config.host_ip, zone=n.zone)
            for n in self.nodes
        }
        self.heartbeat = self.heartbeats[config.node_name]
        self._down: set[str] = set()
        self.binds_pods = False
        self._secrets = Informer(
            self.client, "/api/v1/secrets", self._on_source("secret"), "secrets"
        )
        self._config_maps = Informer(
            self.client, "/api/v1/configmaps", self._on_source("configmap"), "configmaps"
        )
        self._pods = Informer(self.client, "/api/v1/pods", self._on_pod, "pods")
        self._nodes = Informer(self.client, "/api/v1/nodes", self._on_node, "nodes")
        self._binder = threading.Thread(target=self._bind_loop, name="binder", daemon=True)
        self._spawner: Spawner | None = None
        self._ctxs: dict[str, NodeContext] = {}

    # -- lifecycle -----------------------------------------------------------------------
    def start(self, timeout: float = 30.0) -> None:
        """Register the node and start watching; returns once the caches are synced."""
        ensure_local_range(self.config.pod_cidr)
        ensure_local_range(self.service_cidr)
        kill_leftovers(self.state_dir)
        shutil.rmtree(self.state_dir / "pods", ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._spawner = Spawner()
        sources = ObjectCache(self.client, self._secrets, self._config_maps)
        self._ctxs = {
            n.name: NodeContext(
                client=self.client,
                sources=sources,
                images=self.config.image_map,
                spawner=self._spawner,
                node_name=n.name,
                host_ip=self.config.host_ip,
                state_dir=self.state_dir,
                backoff=self.config.backoff,
                stop_grace=self.config.stop_grace,
            )
            for n in self.nodes
        }
        self.binds_pods = self._agent_binds()
        for heartbeat in self.heartbeats.values():
            heartbeat.register()
        for heartbeat in self.heartbeats.values():
            heartbeat.start()
        if self.binds_pods:
            self._binder.start()
        informers = (self._nodes, self._secrets, self._config_maps, self._pods)
        for informer in informers:
            informer.start()
        for informer in informers:
            if not informer.synced.wait(timeout):
                raise TimeoutError(f"informer {informer.name} did not sync in {timeout}s")
        if self.config.metrics_port:
            self.metrics = MetricsServer(self.config.metrics_port, self._samples)
            self.metrics.start()
        if self.config.proxy:
            self.proxy = ServiceProxy(
                self.client, self.service_cidr, hosts_file=self.state_dir / HOSTS_FILE
            )
            self.proxy.start(timeout)
        log.info(
            "node agent ready: nodes %s, pods bound by %s (pod CIDR %s, proxy %s, state %s)",
            ", ".join(f"{n.name}@{n.zone}" for n in self.nodes),
            "this agent" if self.binds_pods else "kube-scheduler",
            self.config.pod_cidr,
            self.service_cidr if self.config.proxy else "off",
            self.state_dir,
        )

    def _agent_binds(self) -> bool:
        """Whether this agent binds pods itself (see ``AgentConfig.binder``)."""
        if self.config.binder in ("agent", "scheduler"):
            return self.config.binder == "agent"
        if self.config.binder != "auto":
            raise ValueError(f"binder must be auto, agent or scheduler: {self.config.binder!r}")
        minor = "".join(
            ch for ch in str(self.client.get("/version").get("minor", "")) if ch.isdigit()
        )
        return bool(minor) and int(minor) < _SCHEDULER_MINOR

    def stop(self) -> None:
        """Stop watching and kill every process this agent started; pods stay in the API."""
        if self.proxy is not None:
            self.proxy.stop()
        if self.metrics is not None:
            self.metrics.stop()
        for informer in (self._pods, self._secrets, self._config_maps, self._nodes):
            informer.stop(join=False)
        if self._binder.is_alive():
            self._binds.put(None)
        with self._lock:
            workers = list(self._workers.values())
            self._workers.clear()
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(timeout=self.config.stop_grace + 10)
        for informer in (self._pods, self._secrets, self._config_maps, self._nodes):
            informer.stop()
        for heartbeat in self.heartbeats.values():
            heartbeat.stop()
        if self._spawner is not None:
            self._spawner.stop()
        self.client.close()
        log.info("node agent %s stopped", ", ".join(self.heartbeats))

    def _samples(self) -> list[ContainerSample]:
        return [s for worker in self.workers().values() for s in worker.samples()]

    def workers(self) -> dict[str, PodWorker]:
        """Running pod workers by pod UID (for tests and diagnostics)."""
        with self._lock:
            return dict(self._workers)

    # -- events ------------------------------------------------------------------------
    def _on_pod(self, kind: str, pod: JSON) -> None:
        spec, uid = pod.get("spec", {}), pod["metadata"]["uid"]
        node = spec.get("nodeName") or ""
        if kind == "DELETED":
            self._forget(uid)
        elif not node and not pod["metadata"].get("deletionTimestamp"):
            if self.binds_pods:
                self._binds.put(pod)
        elif node in self._ctxs and node not in self._down:
            self._ensure_worker(pod)

    def _on_node(self, kind: str, node: JSON) -> None:
        """Play dead for a node annotated ``DOWN_ANNOTATION`` (fault injection), or revive it."""
        name = node["metadata"]["name"]
        if name not in self.heartbeats or kind == "DELETED":
            return
        down = (node["metadata"].get("annotations") or {}).get(DOWN_ANNOTATION) == "true"
        with self._lock:
            changed = down != (name in self._down)
            if not changed:
                return
            if down:
                self._down.add(name)
            else:
                self._down.discard(name)
            victims = [uid for uid, w in self._workers.items() if down and w.node_name == name]
        if down:
            log.warning("node %s is down (fault injected): killing %d pods", name, len(victims))
            self.heartbeats[name].pause()
            for uid in victims:
                self._forget(uid)  # kill at once, report nothing: the machine is gone
            return
        log.warning("node %s is back", name)
        self.heartbeats[name].resume()
        for pod in self._pods.items():
            if (pod.get("spec") or {}).get("nodeName") == name:
                self._on_pod("MODIFIED", pod)

    def _ensure_worker(self, pod: JSON) -> None:
        uid = pod["metadata"]["uid"]
        with self._lock:
            worker = self._workers.get(uid)
            if worker is not None:
                worker.update(pod)
                return
            if pod.get("status", {}).get("phase") in ("Succeeded", "Failed") and not pod[
                "metadata"
            ].get("deletionTimestamp"):
                return  # finished before this agent started: nothing to run
            ip = pod.get("status", {}).get("podIP") or ""
            if not (ip and self.ipam.reserve(ip)):
                ip = self.ipam.allocate()
            worker = PodWorker(pod, self._ctxs[pod["spec"]["nodeName"]], ip)
            self._workers[uid] = worker
        worker.start()

    def _forget(self, uid: str) -> None:
        with self._lock:
            worker = self._workers.pop(uid, None)
        if worker is not None:
            worker.removed()
            threading.Thread(target=self._release_after, args=(worker,), daemon=True).start()

    def _release_after(self, worker: PodWorker) -> None:
        worker.finished.wait(timeout=60)
        self.ipam.release(worker.ip)

    def _on_source(self, kind: str) -> Any:
        def handler(_event: str, obj: JSON) -> None:
            ns, name = obj["metadata"].get("namespace", ""), obj["metadata"]["name"]
            with self._lock:
                workers = [
                    w
                    for w in self._workers.values()
                    if w.namespace == ns and (kind, name) in w.references
                ]
            for worker in workers:
                worker.sources_changed()

        return handler

    # -- binding -----------------------------------------------------------------------
    def _bind_loop(self) -> None:
        while (pod := self._binds.get()) is not None:
            try:
                self._bind(pod)
            except Exception as exc:
                log.warning("binding %s failed: %s", key_of(pod), exc)

    def _bind(self, pod: JSON) -> None:
        meta = pod["metadata"]
        selector = pod.get("spec", {}).get("nodeSelector") or {}
        fits = [
            name
            for name, hb in self.heartbeats.items()
            if name not in self._down and all(hb.labels.get(k) == v for k, v in selector.items())
        ]
        if not fits:
            self._mark_unschedulable(pod, selector)
            return
        body = {
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": meta["name"], "namespace": meta["namespace"], "uid": meta["uid"]},
            "target": {"apiVersion": "v1", "kind": "Node", "name": fits[0]},
        }
        try:
            self.client.create(
                f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/binding", body
            )
        except ApiError as exc:
            if exc.status not in (404, 409):
                raise

    def _mark_unschedulable(self, pod: JSON, selector: Mapping[str, str]) -> None:
        uid = pod["metadata"]["uid"]
        if uid in self._unschedulable:
            return
        self._unschedulable.add(uid)
        cond = {
            "type": "PodScheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": f"0/{len(self.heartbeats)} nodes are available: none is up and "
            f"matches nodeSelector {dict(selector)}.",
        }
        meta = pod["metadata"]
        self.client.patch(
            f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status",
            {"status": {"conditions": [cond]}},
        )
