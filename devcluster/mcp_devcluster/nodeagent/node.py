"""The Node object and its heartbeat (Lease renewals plus periodic status updates).

The node lifecycle controller in kube-controller-manager marks a node NotReady (and then
evicts its pods) when neither the Lease in ``kube-node-lease`` is renewed nor the Node
status refreshed within its grace period (40 s by default), so both are kept fresh.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import socket
import threading
import uuid
from datetime import UTC, datetime
from typing import Any

from .kubeapi import MERGE, ApiError, KubeClient, micro_time, now_rfc3339

log = logging.getLogger("nodeagent.node")

JSON = dict[str, Any]
LEASE_NS = "kube-node-lease"
ZONE_LABEL = "topology.kubernetes.io/zone"
REGION_LABEL = "topology.kubernetes.io/region"
REGION = "local"


class AgentConflict(RuntimeError):
    """Another live agent already runs this node."""


def node_labels(name: str, zone: str | None = None) -> dict[str, str]:
    """The well-known labels a kubelet (and a cloud provider, for the zone) would set."""
    topology = {REGION_LABEL: REGION, ZONE_LABEL: zone} if zone else {}
    return {
        **topology,
        "kubernetes.io/hostname": name,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": "amd64"
        if platform.machine() in ("x86_64", "AMD64")
        else platform.machine(),
        "node.kubernetes.io/instance-type": "nodeagent",
    }


def node_status(name: str, host_ip: str, max_pods: int, since: str) -> JSON:
    """Ready, capacity/allocatable from this machine, addresses on loopback."""
    now = now_rfc3339()
    mem_kib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 1024
    resources = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{mem_kib}Ki",
        "pods": str(max_pods),
        "ephemeral-storage": "100Gi",
    }

    def cond(ctype: str, status: str, reason: str, message: str) -> JSON:
        return {
            "type": ctype,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": now,
            "lastTransitionTime": since,
        }

    return {
        "capacity": resources,
        "allocatable": resources,
        "conditions": [
            cond(
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "node agent: no pressure tracking",
            ),
            cond(
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "node agent: no pressure tracking",
            ),
            cond(
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "node agent: no pressure tracking",
            ),
            cond(
                "Ready", "True", "KubeletReady", "mcp-operator node agent is posting ready status"
            ),
        ],
        "addresses": [
            {"type": "InternalIP", "address": host_ip},
            {"type": "Hostname", "address": name},
        ],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
        "nodeInfo": {
            "machineID": "nodeagent",
            "systemUUID": "nodeagent",
            "bootID": "nodeagent",
            "kernelVersion": platform.release(),
            "osImage": "mcp-operator node agent",
            "containerRuntimeVersion": "nodeagent://0.1",
            "kubeletVersion": "v0.0.0-nodeagent",
            "kubeProxyVersion": "v0.0.0",
            "operatingSystem": "linux",
            "architecture": node_labels(name)["kubernetes.io/arch"],
        },
    }


def _holder_dead(holder: str) -> bool:
    """True when the holder ran on this host and its process is gone (a crashed agent)."""
    host, _, rest = holder.split("/", 1)[-1].partition(":")
    pid = rest.partition(":")[0]
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


class NodeHeartbeat:
    """Registers the Node and keeps it alive until stopped."""

    def __init__(
        self,
        client: KubeClient,
        name: str,
        host_ip: str,
        max_pods: int = 250,
        lease_seconds: float = 10.0,
        status_seconds: float = 30.0,
        zone: str | None = None,
    ) -> None:
        self._client, self.name, self._host_ip, self._max_pods = client, name, host_ip, max_pods
        self._lease_seconds, self._status_seconds = lease_seconds, status_seconds
        self._stop = threading.Event()
        self._paused = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{name}", daemon=True)
        self.labels = node_labels(name, zone)
        self._since = now_rfc3339()
        self.identity = f"{name}/{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

    def register(self) -> None:
        """Create the Node, or refresh labels and status when it already exists.

        Refuses (AgentConflict) when another live agent holds the node's Lease: two agents
        on one node would each run every pod.
        """
        self._check_exclusive()
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": self.labels},
            "status": node_status(self.name, self._host_ip, self._max_pods, self._since),
        }
        try:
            self._client.create("/api/v1/nodes", body)
            log.info("registered node %s", self.name)
        except ApiError as exc:
            if exc.status != 409:
                raise
            self._client.patch(
                f"/api/v1/nodes/{self.name}", {"metadata": {"labels": self.labels}}, MERGE
            )
            self._patch_status()
        self._renew_lease()

    def start(self) -> None:
        self._thread.start()

    def pause(self) -> None:
        """Stop renewing (without releasing the Lease): the node looks dead (fault injection)."""
        self._paused.set()

    def resume(self) -> None:
        """Renew again now (Ready status at once), after ``pause``."""
        self._paused.clear()
        try:
            self._renew_lease()
            self._patch_status()
        except Exception as exc:  # the next beat retries
            log.warning("heartbeat of %s failed: %s", self.name, exc)

    def stop(self) -> None:
        """Stop beating and release the Lease so a new agent may take the node at once."""
        self._stop.set()
        if not self._thread.is_alive() or self._paused.is_set():
            return  # never started or playing dead: the lease is not ours to release
        self._thread.join(timeout=5)
        with contextlib.suppress(Exception):
            self._client.patch(self._lease_path, {"spec": {"holderIdentity": None}}, MERGE)

    @property
    def _lease_path(self) -> str:
        return f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases/{self.name}"

    def _check_exclusive(self) -> None:
        try:
            spec = self._client.get(self._lease_path).get("spec", {})
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        holder = spec.get("holderIdentity") or ""
        if (
            not holder.startswith(f"{self.name}/")
            or holder == self.identity
            or _holder_dead(holder)
        ):
            return
        renewed = datetime.fromisoformat(str(spec.get("renewTime", "1970-01-01T00:00:00Z")))
        age = (datetime.now(UTC) - renewed).total_seconds()
        if age < float(spec.get("leaseDurationSeconds") or 40):
            raise AgentConflict(
                f"node {self.name} is run by another agent ({holder}, lease renewed "
                f"{age:.0f}s ago): stop it, let its lease expire, or use another --node-name"
            )

    def _run(self) -> None:
        since_status = 0.0
        while not self._stop.wait(self._lease_seconds):
            since_status += self._lease_seconds
            if self._paused.is_set():
                continue
            try:
                self._renew_lease()
                if since_status >= self._status_seconds:
                    self._patch_status()
                    since_status = 0.0
            except Exception as exc:  # keep beating; the next round may succeed
                log.warning("heartbeat failed: %s", exc)

    def _patch_status(self) -> None:
        status = node_status(self.name, self._host_ip, self._max_pods, self._since)
        self._client.patch(f"/api/v1/nodes/{self.name}/status", {"status": status})

    def _renew_lease(self) -> None:
        path = f"/apis/coordination.k8s.io/v1/namespaces/{LEASE_NS}/leases"
        spec = {
            "holderIdentity": self.identity,
            "leaseDurationSeconds": 40,
            "renewTime": micro_time(),
        }
        try:
            self._client.patch(f"{path}/{self.name}", {"spec": spec}, MERGE)
        except ApiError as exc:
            if exc.status != 404:
                raise
            self._client.create(
                path,
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": LEASE_NS},
                    "spec": spec,
                },
            )
