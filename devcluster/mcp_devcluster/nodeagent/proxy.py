"""A kube-proxy stand-in: each Service gets a local address that forwards to *ready*
EndpointSlice endpoints only.

Why: the operator's promise is measured by what a client of the stable Service notices, and
a pod IP is not what clients use. A real cluster's kube-proxy routes a Service's new
connections to the endpoints the EndpointSlices mark ready; this does the same on local addresses,
so tests, the demo and ``bench/traffic.py`` can call tools "through the Service" and count
what a gate, a selector switch or a rollout costs.

Behaviour copied from kube-proxy (iptables mode):

* the routing table is the union of the Service's EndpointSlices, endpoints whose
  ``conditions.ready`` is true (or unset: "unknown means ready" in discovery/v1); the
  endpoint port is the slice port whose name is the Service port's name;
* a NEW connection picks a backend round-robin at accept time; an existing connection keeps
  its backend whatever the table does later (conntrack);
* no ready endpoint (or the chosen backend refuses) resets the client's connection at once:
  no queueing, no retry on another backend. Each reset for lack of a ready endpoint is
  logged (``NO_ENDPOINT_LOG``), so a measurement can tell what the readiness gates cost
  from what a dying backend costs (the client sees both as a refused connection).

One deliberate difference: when a Service's port number changes, the old port keeps
forwarding (to the same ready endpoints) for ``RETIRED_PORT_GRACE`` seconds. Clients here
learn the new port from the annotation, a moment after the change; kube-proxy drops the old
port at once, but what is measured here is the operator's data path, not that lag.

Each Service gets one address from the agent's *service CIDR* (a local range the pod
allocator never hands out; listening addresses of other agents are skipped) and listens on
its own port numbers there, like a ClusterIP. The address is written on the Service as the
``devcluster.mcp-operator.dev/proxy-address`` annotation (``IP:PORT`` per port, comma
separated, in Service port order) for tests, the demo and the benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import logging
import os
import socket
import struct
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ipam import IpAllocator
from .kubeapi import MERGE, ApiError, Informer, KubeClient

log = logging.getLogger("nodeagent.proxy")

JSON = dict[str, Any]

PROXY_ANNOTATION = "devcluster.mcp-operator.dev/proxy-address"
# A cluster-DNS stand-in in the agent's state directory: {"NAME.NS.svc": proxy IP, ...}.
# Pods learn its path from env NODEAGENT_HOSTS (there is no resolver to plug into).
HOSTS_FILE = "hosts.json"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
CONNECT_TIMEOUT = 3.0
RETIRED_PORT_GRACE = 5.0
NO_ENDPOINT_LOG = "no ready endpoint for {key}: connection reset"
_SLICE_PATHS = (
    "/apis/discovery.k8s.io/v1/endpointslices",
    "/apis/discovery.k8s.io/v1beta1/endpointslices",
)


# -- pure parts ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServicePort:
    """One proxied TCP port of a Service (``name`` may be "" for a single unnamed port)."""

    name: str
    port: int


@dataclass(frozen=True)
class Backend:
    ip: str
    port: int


def service_key(service: Mapping[str, Any]) -> str:
    meta = service.get("metadata") or {}
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


def proxied_ports(service: Mapping[str, Any]) -> list[ServicePort]:
    """The TCP ports a ClusterIP Service gets a proxy for; [] for what kube-proxy skips
    (headless, ExternalName) and for the API server's own ``default/kubernetes``."""
    spec = service.get("spec") or {}
    if service_key(service) == "default/kubernetes":
        return []
    if spec.get("type", "ClusterIP") not in ("ClusterIP", "NodePort", "LoadBalancer"):
        return []
    if spec.get("clusterIP") == "None":
        return []
    return [
        ServicePort(str(p.get("name") or ""), int(p["port"]))
        for p in spec.get("ports") or []
        if p.get("protocol", "TCP") == "TCP" and p.get("port")
    ]


def slice_owner(endpoint_slice: Mapping[str, Any]) -> str | None:
    """``namespace/service`` the slice belongs to, from its service-name label."""
    meta = endpoint_slice.get("metadata") or {}
    name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
    return f"{meta.get('namespace', '')}/{name}" if name else None


def endpoint_ready(endpoint: Mapping[str, Any]) -> bool:
    """discovery/v1: ``ready`` unset means ready (unknown state); False means not."""
    return (endpoint.get("conditions") or {}).get("ready") is not False


def ready_backends(slices: Iterable[Mapping[str, Any]], port_name: str) -> list[Backend]:
    """Ready endpoints of ``slices`` for the Service port called ``port_name``, sorted and
    de-duplicated (an address may appear in two slices during a controller resync)."""
    found: set[Backend] = set()
    for item in slices:
        if (item.get("addressType") or "IPv4") != "IPv4":
            continue
        ports = [
            int(p["port"])
            for p in item.get("ports") or []
            if str(p.get("name") or "") == port_name
            and p.get("port")
            and p.get("protocol", "TCP") == "TCP"
        ]
        if not ports:
            continue
        for endpoint in item.get("endpoints") or []:
            if not endpoint_ready(endpoint):
                continue
            for address in endpoint.get("addresses") or []:
                found.add(Backend(str(address), ports[0]))
    return sorted(found, key=lambda b: (ipaddress.IPv4Address(b.ip), b.port))


def annotation_value(ip: str, ports: Sequence[ServicePort]) -> str:
    return ",".join(f"{ip}:{p.port}" for p in ports)


def parse_proxy_address(value: str) -> list[tuple[str, int]]:
    """``"10.244.255.1:8080,10.244.255.1:9090"`` -> ``[(ip, port), ...]`` (for clients)."""
    out = []
    for part in value.split(","):
        host, _, port = part.strip().rpartition(":")
        if host and port.isdigit():
            out.append((host, int(port)))
    return out


def default_service_cidr(pod_cidr: str) -> str:
    """The last /24 of the pod CIDR (e.g. 10.244.255.0/24 for 10.244.0.0/16): the pod
    allocator excludes it, so proxy addresses and pod IPs never meet."""
    net = ipaddress.IPv4Network(pod_cidr, strict=False)
    if net.prefixlen > 24:
        raise ValueError(f"pod CIDR {pod_cidr} too small to carve a service range from")
    last = int(net.broadcast_address) & ~0xFF
    return f"{ipaddress.IPv4Address(last)}/24"


class RoundRobin:
    """Backend choice per new connection: rotate over the current table."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(self, backends: Sequence[Backend]) -> Backend | None:
        if not backends:
            return None
        return backends[next(self._counter) % len(backends)]


# -- forwarding ---------------------------------------------------------------------------


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with RST (SO_LINGER 0): the client fails at once, as with a REJECT rule."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Copy until EOF; True on a clean EOF (half-close forwarded), False on a reset."""
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        return False
    with contextlib.suppress(OSError, RuntimeError):
        if writer.can_write_eof():
            writer.write_eof()
    return True


@dataclass
class _Listener:
    server: asyncio.Server
    port: ServicePort


@dataclass
class _ServiceState:
    ip: str
    listeners: dict[str, _Listener] = field(default_factory=dict)


class Forwarder:
    """The data path: listeners per Service port and the ready-backend table. Runs its own
    asyncio loop in a thread; every public method is thread-safe."""

    def __init__(self, allocator: IpAllocator) -> None:
        self._allocator = allocator
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="proxy", daemon=True)
        self._services: dict[str, _ServiceState] = {}
        self._table: dict[tuple[str, str], list[Backend]] = {}
        self._rr = RoundRobin()
        self._tasks: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps weak ones
        self.connections = 0
        self.resets = 0

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def ensure(self, key: str, ports: Sequence[ServicePort]) -> str | None:
        """Listen for Service ``key`` on ``ports``; return its address (None if no ports)."""
        return asyncio.run_coroutine_threadsafe(self._ensure(key, ports), self._loop).result(30)

    def remove(self, key: str) -> None:
        asyncio.run_coroutine_threadsafe(self._remove(key), self._loop).result(timeout=30)

    def set_backends(self, key: str, port_name: str, backends: list[Backend]) -> None:
        self._loop.call_soon_threadsafe(self._table.__setitem__, (key, port_name), backends)

    def backends(self, key: str, port_name: str) -> list[Backend]:
        return list(self._table.get((key, port_name), []))

    def address(self, key: str) -> str | None:
        state = self._services.get(key)
        return None if state is None else state.ip

    async def _ensure(self, key: str, ports: Sequence[ServicePort]) -> str | None:
        state = self._services.get(key)
        wanted = {p.name: p for p in ports}
        if state is not None:
            for name, listener in list(state.listeners.items()):
                if wanted.get(name) != listener.port:
                    del state.listeners[name]
                    grace = RETIRED_PORT_GRACE if name in wanted else 0.0
                    self._loop.call_later(grace, listener.server.close)
        if not wanted:
            await self._remove(key)
            return None
        for _ in range(16):
            if state is None:
                state = _ServiceState(self._allocator.allocate())
                self._services[key] = state
            try:
                for name, port in wanted.items():
                    if name not in state.listeners:
                        state.listeners[name] = await self._listen(key, state.ip, port)
                return state.ip
            except OSError as exc:  # the address:port is taken (another agent, a leftover)
                log.info("proxy for %s cannot use %s (%s); trying another", key, state.ip, exc)
                await self._remove(key)
                state = None
        raise RuntimeError(f"no free proxy address for {key}")

    async def _listen(self, key: str, ip: str, port: ServicePort) -> _Listener:
        def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            task = asyncio.ensure_future(self._forward(key, port.name, reader, writer))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        server = await asyncio.start_server(handle, ip, port.port, reuse_address=True)
        log.info("proxy %s port %s on %s:%d", key, port.name or "-", ip, port.port)
        return _Listener(server, port)

    async def _remove(self, key: str) -> None:
        state = self._services.pop(key, None)
        if state is None:
            return
        for listener in state.listeners.values():
            listener.server.close()
        self._allocator.release(state.ip)
        for table_key in [k for k in self._table if k[0] == key]:
            del self._table[table_key]

    async def _close_all(self) -> None:
        for key in list(self._services):
            await self._remove(key)

    async def _forward(
        self, key: str, port_name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        backend = self._rr.pick(self._table.get((key, port_name), []))
        if backend is None:
            self.resets += 1
            log.info(NO_ENDPOINT_LOG.format(key=key))
            _reset(writer)
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(
                asyncio.open_connection(backend.ip, backend.port), CONNECT_TIMEOUT
            )
        except (OSError, TimeoutError):
            self.resets += 1
            _reset(writer)
            return
        to_backend = asyncio.ensure_future(_pump(reader, up_writer))
        if not await _pump(up_reader, writer):  # the backend reset: so does the client
            _reset(writer)
            up_writer.transport.abort()
        with contextlib.suppress(Exception):
            await to_backend
        writer.close()
        up_writer.close()


# -- wiring to the API --------------------------------------------------------------------


def slice_path(client: KubeClient) -> str:
    """discovery/v1 when served (1.21+), else v1beta1 (the 1.20 dev cluster); same fields."""
    for path in _SLICE_PATHS:
        group_version = path.rsplit("/", 1)[0]
        try:
            client.get(group_version)
            return path
        except ApiError as exc:
            if exc.status != 404:
                raise
    raise RuntimeError("the API server serves no EndpointSlice API")


class ServiceProxy:
    """Services and EndpointSlices informers driving a ``Forwarder``, plus the annotation."""

    def __init__(
        self, client: KubeClient, service_cidr: str, hosts_file: Path | None = None
    ) -> None:
        self._client = client
        self._hosts_file = hosts_file
        self._hosts: dict[str, str] = {}
        self.forwarder = Forwarder(IpAllocator(service_cidr))
        self._lock = threading.Lock()
        self._services = Informer(client, "/api/v1/services", self._on_service, "services")
        self._slices = Informer(client, slice_path(client), self._on_slice, "endpointslices")

    @property
    def informers(self) -> tuple[Informer, Informer]:
        return self._services, self._slices

    def start(self, timeout: float = 30.0) -> None:
        self.forwarder.start()
        for informer in self.informers:
            informer.start()
        for informer in self.informers:
            if not informer.synced.wait(timeout):
                raise TimeoutError(f"informer {informer.name} did not sync in {timeout}s")

    def stop(self) -> None:
        for informer in self.informers:
            informer.stop()
        self.forwarder.stop()

    def _on_service(self, kind: str, service: JSON) -> None:
        key = service_key(service)
        with self._lock:
            if kind == "DELETED":
                self.forwarder.remove(key)
                self._set_host(key, None)
                return
            ports = proxied_ports(service)
            try:
                ip = self.forwarder.ensure(key, ports)
            except Exception as exc:
                log.warning("proxy for %s: %s", key, exc)
                return
            self._sync_backends(key, ports)
            self._set_host(key, ip)
        if ip is not None:
            self._annotate(service, annotation_value(ip, ports))

    def _set_host(self, key: str, ip: str | None) -> None:
        """Record ``NAME.NS.svc`` (and its longer forms) → ``ip`` in the hosts file."""
        if self._hosts_file is None:
            return
        namespace, name = key.split("/", 1)
        names = [f"{name}.{namespace}", f"{name}.{namespace}.svc"]
        names.append(f"{name}.{namespace}.svc.cluster.local")
        before = dict(self._hosts)
        for host in names:
            if ip is None:
                self._hosts.pop(host, None)
            else:
                self._hosts[host] = ip
        if self._hosts != before:
            tmp = self._hosts_file.with_suffix(".tmp")
            tmp.write_text(json.dumps(self._hosts, sort_keys=True))
            os.replace(tmp, self._hosts_file)

    def _on_slice(self, _kind: str, endpoint_slice: JSON) -> None:
        key = slice_owner(endpoint_slice)
        if key is None:
            return
        service = self._services.get(key)
        if service is None:
            return
        with self._lock:
            self._sync_backends(key, proxied_ports(service))

    def _sync_backends(self, key: str, ports: Sequence[ServicePort]) -> None:
        slices = [s for s in self._slices.items() if slice_owner(s) == key]
        for port in ports:
            self.forwarder.set_backends(key, port.name, ready_backends(slices, port.name))

    def _annotate(self, service: JSON, value: str) -> None:
        meta = service["metadata"]
        if (meta.get("annotations") or {}).get(PROXY_ANNOTATION) == value:
            return
        body = {"metadata": {"annotations": {PROXY_ANNOTATION: value}}}
        path = f"/api/v1/namespaces/{meta['namespace']}/services/{meta['name']}"
        try:
            self._client.patch(path, body, content_type=MERGE)
        except ApiError as exc:
            if exc.status != 404:
                log.warning("annotating %s: %s", path, exc)
