"""``mcp-operator run``: wire the client, the workers and kopf together, and run."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any, cast

import kopf
from prometheus_client import start_http_server

from mcp_operator.api.models import GROUP
from mcp_operator.handlers import EventsOnlyDiffBase, register
from mcp_operator.health.extension import install as install_health
from mcp_operator.keys.controller import install as install_keys
from mcp_operator.kube.client import KubeClient, load_credentials
from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.reconcile.supervisor import Supervisor
from mcp_operator.reconcile.worker import Shared
from mcp_operator.render.context import Capabilities

log = logging.getLogger("mcp_operator")


def configure_kopf(settings: kopf.OperatorSettings) -> None:
    """Operator settings: our own names, bounded watches, and no state in ``status``."""
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = EventsOnlyDiffBase(
        kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 600
    settings.posting.level = logging.WARNING
    settings.networking.request_timeout = 30


def post_event(body: dict[str, Any], kind: str, reason: str, message: str) -> None:
    try:
        kopf.event(cast(kopf.Body, body), type=kind, reason=reason, message=message)
    except Exception:
        log.debug("event not posted", exc_info=True)


async def operate(
    namespaces: list[str],
    all_namespaces: bool,
    liveness_port: int,
    kubeconfig: str | None = None,
    stop_flag: asyncio.Event | None = None,
) -> None:
    creds = load_credentials(kubeconfig)
    client = KubeClient(creds)
    try:
        caps = Capabilities(await client.api_versions())
        shared = Shared(client=client, index=ChildIndex(), capabilities=caps, post_event=post_event)
        install_health(shared)
        install_keys(shared)
        supervisor = Supervisor(shared)
        registry = kopf.OperatorRegistry()
        register(registry, supervisor, creds, configure_kopf)
        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=all_namespaces or not namespaces,
            namespaces=namespaces,
            liveness_endpoint=f"http://0.0.0.0:{liveness_port}/healthz",
            stop_flag=stop_flag,
        )
        await supervisor.stop_all()
    finally:
        await client.close()


def run_operator(
    namespaces: list[str],
    all_namespaces: bool,
    metrics_port: int,
    liveness_port: int,
    leader_lease: str | None,
    verbose: bool,
) -> int:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf logs every handler call per object at INFO; our own workers log what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    if metrics_port:
        start_http_server(metrics_port)
    kubeconfig = os.environ.get("KUBECONFIG") or None
    if leader_lease:
        from mcp_operator.leader import hold_leadership

        return asyncio.run(
            hold_leadership(
                leader_lease,
                lambda stop: operate(namespaces, all_namespaces, liveness_port, kubeconfig, stop),
                kubeconfig,
            )
        )
    asyncio.run(_run_until_signal(namespaces, all_namespaces, liveness_port, kubeconfig))
    return 0


async def _run_until_signal(
    namespaces: list[str], all_namespaces: bool, liveness_port: int, kubeconfig: str | None
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await operate(namespaces, all_namespaces, liveness_port, kubeconfig, stop)
