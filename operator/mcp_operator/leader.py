"""Leader election on a ``coordination.k8s.io/v1`` Lease, for running several replicas.

kopf's own peering is priority-based and only pauses kopf's handlers, not the workers and
probe loops this operator runs beside them. A Lease fences all of it: only the holder
runs the operator; a replica that cannot renew in time stops acting and exits, and its
Deployment restarts it as a candidate (the controller-runtime behaviour).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

from mcp_operator.kube.client import ApiError, KubeClient, load_credentials

log = logging.getLogger(__name__)
LEASE_SECONDS = 15
RENEW_SECONDS = 5


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _expired(lease: dict[str, object], now: datetime) -> bool:
    spec = lease.get("spec") or {}
    assert isinstance(spec, dict)
    renew = spec.get("renewTime")
    if not renew:
        return True
    renewed = datetime.strptime(str(renew), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (now - renewed).total_seconds() > float(spec.get("leaseDurationSeconds") or 15)


async def _try_acquire(client: KubeClient, namespace: str, name: str, me: str) -> bool:
    lease = await client.get("coordination.k8s.io/v1", "Lease", namespace, name)
    spec = {"holderIdentity": me, "leaseDurationSeconds": LEASE_SECONDS, "renewTime": _now()}
    try:
        if lease is None:
            spec["acquireTime"] = _now()
            await client.create(
                {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": name, "namespace": namespace},
                    "spec": spec,
                }
            )
            return True
        held_by = (lease.get("spec") or {}).get("holderIdentity")
        if held_by != me and not _expired(lease, datetime.now(UTC)):
            return False
        lease["spec"] = {**(lease.get("spec") or {}), **spec}
        path = f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases/{name}"
        await client.request("PUT", path, body=lease)  # resourceVersion fences racing writers
        return True
    except ApiError as exc:
        if exc.status in (409, 422):
            return False
        raise


async def _renewed(client: KubeClient, namespace: str, name: str, me: str) -> bool:
    """A renewal that fails for any reason (403, timeout, 5xx) counts as lost: acting on
    after the lease may have expired would let two replicas act at once."""
    try:
        return await _try_acquire(client, namespace, name, me)
    except Exception:  # network or API failure: we can no longer prove we lead
        log.exception("lease renewal failed")
        return False


async def hold_leadership(
    name: str, run: Callable[[asyncio.Event], Coroutine[Any, Any, None]], kubeconfig: str | None
) -> int:
    namespace = os.environ.get("POD_NAMESPACE", "default")
    me = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    client = KubeClient(load_credentials(kubeconfig))
    try:
        while not await _try_acquire(client, namespace, name, me):
            await asyncio.sleep(RENEW_SECONDS)
        log.info("acquired leadership lease %s/%s as %s", namespace, name, me)
        stop = asyncio.Event()
        task = asyncio.create_task(run(stop))
        while not task.done():
            await asyncio.sleep(RENEW_SECONDS)
            if not await _renewed(client, namespace, name, me):
                log.error("lost the leadership lease; stopping so that a new leader can act")
                stop.set()
                try:
                    await asyncio.wait_for(task, timeout=LEASE_SECONDS - RENEW_SECONDS)
                except TimeoutError:
                    log.error("operator did not stop in time; exiting anyway")
                return 1
        await task
        return 0
    finally:
        await client.close()
