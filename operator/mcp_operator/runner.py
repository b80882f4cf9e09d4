"""``mcp-operator run``: wire the client, the workers and kopf together, and run.

Order matters for availability:

1. ``/healthz`` and ``/readyz`` are served from process start, by every replica — a standby
   that answered nothing would be restarted by its liveness probe into CrashLoopBackOff and
   take over late.
2. Credentials are loaded (one-line error if there are none) and the API server is waited
   for with back-off (one line per attempt, never a traceback).
3. With ``--leader-lease``, the replica campaigns; only the leader starts kopf and the
   workers, and every write they make passes the election's fence. A leader that cannot
   renew stops acting before its renew deadline and exits (restarting as a candidate); a
   graceful stop releases the lease so a standby takes over within a retry period.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import resource
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import kopf
from aiohttp import web
from prometheus_client import start_http_server

from mcp_operator import gcpause, metrics
from mcp_operator.api.models import GROUP
from mcp_operator.handlers import EventsOnlyDiffBase, register
from mcp_operator.health.extension import install as install_health
from mcp_operator.keys.cachecontroller import install as install_cache_password
from mcp_operator.keys.controller import install as install_keys
from mcp_operator.keys.datacontroller import install as install_data_keys
from mcp_operator.kube.client import (
    ApiError,
    Credentials,
    CredentialsError,
    KubeClient,
    NotLeading,
    instance_name,
    load_credentials,
    user_agent,
)
from mcp_operator.kube.informer import (
    has_patterns,
    start_child_informers,
    stop_informers,
    wait_synced,
)
from mcp_operator.leader import ElectionConfig, LeaderElection
from mcp_operator.reconcile.children import ChildIndex
from mcp_operator.reconcile.supervisor import Supervisor
from mcp_operator.reconcile.worker import Shared
from mcp_operator.render.alerts import MONITORING_API, PROMETHEUS_RULE_KIND
from mcp_operator.render.context import Capabilities

log = logging.getLogger("mcp_operator")
BACKOFF_MAX_S = 30.0
SYNC_TIMEOUT_S = 30.0
# API group/versions whose appearance or removal changes what workers render.
RENDER_APIS = frozenset({"policy/v1", "policy/v1beta1", MONITORING_API})


@dataclass
class RunOptions:
    namespaces: list[str] = field(default_factory=list)
    all_namespaces: bool = False
    metrics_port: int = 9090
    liveness_port: int = 8081
    discovery_interval: float = 60.0
    leader_lease: str | None = None
    election: ElectionConfig = field(default_factory=ElectionConfig)
    kubeconfig: str | None = None
    verbose: bool = False

    @property
    def clusterwide(self) -> bool:
        return self.all_namespaces or not self.namespaces


@dataclass
class Role:
    """What ``/readyz`` and the ``mcp_operator_leader`` metric say about this replica."""

    state: str = "starting"  # starting | standby | leader | stopping

    def set(self, state: str) -> None:
        self.state = state
        metrics.LEADER.set(1 if state == "leader" else 0)


def configure_kopf(settings: kopf.OperatorSettings, scan_namespaces: bool = False) -> None:
    """Operator settings: our own names, bounded watches, and no state in ``status``.

    kopf's scanning (a cluster-wide namespace list/watch, a CRD watch) is on only for
    ``--namespace`` patterns, which need it. With exact names a namespaced install has no
    cluster-wide rights: kopf would retry the refused namespace list for ~50 s before falling
    back to the names, and nothing would be watched meanwhile. (The CRD watch is refused
    everywhere: the operator has no CRD rights.)
    """
    settings.scanning.disabled = not scan_namespaces
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = EventsOnlyDiffBase(
        kopf.AnnotationsDiffBaseStorage(prefix=GROUP, key="last-handled-configuration")
    )
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 10
    settings.watching.inactivity_timeout = 600
    # Events go through EventPoster (the fenced client); kopf posts none of its own.
    settings.posting.enabled = False
    settings.networking.request_timeout = 30


class EventPoster:
    """Kubernetes Events posted through the operator's own, fenced client.

    Why not ``kopf.event``: kopf queues events and posts them later with its own API
    client, which the leader election's write fence does not guard -- an event queued by a
    worker just before the renew deadline would be written by a replica that may no longer
    act. Here the fence is checked when the event is posted (and kopf's own posting is off,
    see :func:`configure_kopf`). Posting never blocks or fails the caller.
    """

    def __init__(self, client: KubeClient) -> None:
        self.client = client
        self.instance = instance_name()
        self._tasks: set[asyncio.Task[None]] = set()

    def __call__(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        task = asyncio.get_running_loop().create_task(self._post(body, kind, reason, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, body: dict[str, Any], kind: str, reason: str, message: str) -> None:
        meta = body.get("metadata") or {}
        namespace = meta.get("namespace") or "default"
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta.get('name', 'mcp')}.", "namespace": namespace},
            "involvedObject": {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "name": meta.get("name"),
                "namespace": namespace,
                "uid": meta.get("uid"),
            },
            "type": kind,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": "mcp-operator"},
            "reportingComponent": "mcp-operator",
            "reportingInstance": self.instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        try:
            await self.client.create(event)
        except NotLeading:
            log.debug("event %s not posted: this replica may not act", reason)
        except Exception:
            log.debug("event %s not posted", reason, exc_info=True)


class Operation:
    """The operator's machinery: clients, the child informers and index, the supervisor,
    and kopf (MCPServer watch, events). :meth:`prepare` needs no leadership (it only reads),
    so a standby keeps its child index warm and a take-over starts only kopf."""

    def __init__(
        self,
        opts: RunOptions,
        creds: Credentials,
        may_write: Callable[[], bool] | None = None,
        write_window: Callable[[], float | None] | None = None,
    ) -> None:
        self.opts = opts
        self.creds = creds
        self.client = KubeClient(creds, may_write=may_write, write_window=write_window)
        # Watches hold their connections for minutes: their own pool, never the workers'.
        self.watch_client = KubeClient(creds)
        self.informers: list[asyncio.Task[None]] = []
        self.rule_informers: list[asyncio.Task[None]] = []
        self.discovery: asyncio.Task[None] | None = None
        self.supervisor: Supervisor | None = None

    @property
    def scopes(self) -> list[str] | None:
        return None if self.opts.clusterwide else self.opts.namespaces

    async def prepare(self) -> None:
        caps = Capabilities(await self.client.api_versions(), await self.client.server_minor())
        shared = Shared(
            client=self.client,
            index=ChildIndex(),
            capabilities=caps,
            post_event=EventPoster(self.client),
        )
        install_health(shared)
        install_keys(shared)
        install_data_keys(shared)
        install_cache_password(shared)
        self.supervisor = Supervisor(shared)
        synced: list[asyncio.Event] = []
        self.informers = start_child_informers(
            self.watch_client,
            self.supervisor,
            self.scopes,
            api_versions=lambda version, kind: (
                caps.pdb_api_version() if kind == "PodDisruptionBudget" else version
            ),
            synced=synced,
        )
        if MONITORING_API in caps.api_versions:
            self.rule_informers = self._start_rule_informers(synced)
        if not await wait_synced(synced, timeout=SYNC_TIMEOUT_S):
            log.warning("child lists not complete after %.0fs; starting anyway", SYNC_TIMEOUT_S)
        self.discovery = asyncio.create_task(self.rediscover(), name="discovery")

    def _start_rule_informers(self, synced: list[asyncio.Event]) -> list[asyncio.Task[None]]:
        assert self.supervisor is not None
        return start_child_informers(
            self.watch_client,
            self.supervisor,
            self.scopes,
            kinds=((MONITORING_API, PROMETHEUS_RULE_KIND),),
            synced=synced,
        )

    async def rediscover(self) -> None:
        """Re-read discovery every ``discovery_interval``: the Prometheus Operator's CRD
        installed (or removed) after the operator started changes what is rendered, without
        a restart. A failed read keeps the last capabilities (one warning, no loop)."""
        while True:
            await asyncio.sleep(self.opts.discovery_interval)
            try:
                versions = await self.client.api_versions()
            except (ApiError, OSError) as exc:
                log.warning("API discovery failed (%s); keeping the last result", exc)
                continue
            await self.use_api_versions(versions)

    async def use_api_versions(self, versions: frozenset[str]) -> None:
        """New capabilities for every worker; the PrometheusRule informers follow the API;
        workers are woken only when an API they render for came or went."""
        assert self.supervisor is not None
        shared = self.supervisor.shared
        before = shared.capabilities.api_versions
        # Only the served APIs are re-read; the server's version stays (an upgrade restarts
        # the operator's watches anyway, and the minor gates only pod fields).
        shared.capabilities = dataclasses.replace(shared.capabilities, api_versions=versions)
        if (before & RENDER_APIS) == (versions & RENDER_APIS):
            return
        log.info(
            "served APIs changed: %s",
            ", ".join(
                [f"+{v}" for v in sorted((versions - before) & RENDER_APIS)]
                + [f"-{v}" for v in sorted((before - versions) & RENDER_APIS)]
            ),
        )
        if MONITORING_API in versions and not self.rule_informers:
            self.rule_informers = self._start_rule_informers([])
        elif MONITORING_API not in versions and self.rule_informers:
            await stop_informers(self.rule_informers)
            self.rule_informers = []
            self.supervisor.sync_children(PROMETHEUS_RULE_KIND, None, [])
        for worker in list(self.supervisor.workers.values()):
            worker.wake()

    async def run(self, stop_flag: asyncio.Event) -> None:
        """kopf until ``stop_flag``; the workers are stopped in kopf's cleanup (else kopf
        would wait 5 s for them as "hung tasks" before cancelling them)."""
        assert self.supervisor is not None
        registry = kopf.OperatorRegistry()
        scan = not self.opts.clusterwide and has_patterns(self.opts.namespaces)
        register(
            registry, self.supervisor, self.creds, partial(configure_kopf, scan_namespaces=scan)
        )

        @kopf.on.cleanup(registry=registry)
        def settle_stop_flag(**_: Any) -> None:
            # kopf stopped by its own SIGTERM handler keeps a waiter on our flag alive and
            # waits 5 s for it as a "hung task": set the flag, shutdown ends at once.
            stop_flag.set()

        await kopf.operator(
            registry=registry,
            standalone=True,
            clusterwide=self.opts.clusterwide,
            namespaces=self.opts.namespaces,
            stop_flag=stop_flag,
        )
        await self.supervisor.stop_all()

    async def close(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop_all()
        if self.discovery is not None:
            await stop_informers([self.discovery])
        await stop_informers(self.informers + self.rule_informers)
        await self.watch_client.close()
        await self.client.close()


async def operate(
    opts: RunOptions,
    creds: Credentials,
    stop_flag: asyncio.Event,
    may_write: Callable[[], bool] | None = None,
) -> None:
    """Prepare and run until ``stop_flag`` (no leader election)."""
    operation = Operation(opts, creds, may_write)
    try:
        await operation.prepare()
        await operation.run(stop_flag)
    finally:
        await operation.close()


async def serve_health(port: int, role: Role) -> web.AppRunner:
    """``/healthz``: the process's event loop answers (liveness, every replica).
    ``/readyz``: 200 with ``leader`` or ``standby`` once connected, 503 otherwise."""

    async def healthz(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_: web.Request) -> web.Response:
        ok = role.state in ("leader", "standby")
        return web.Response(text=role.state, status=200 if ok else 503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "0.0.0.0", port).start()
    return runner


async def wait_for_api(creds: Credentials, stop: asyncio.Event) -> bool:
    """Until the API server answers discovery: one line per failed attempt, back-off up to
    30 s. False when stopped while waiting."""
    delay = 1.0
    while not stop.is_set():
        client = KubeClient(creds, timeout=10.0)
        try:
            await client.request("GET", "/version")
            return True
        except (ApiError, OSError) as exc:
            detail = " ".join(str(exc).split()) or type(exc).__name__
            log.error(
                "API server %s unreachable (%s); retrying in %.0fs", creds.server, detail, delay
            )
        finally:
            await client.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(BACKOFF_MAX_S, delay * 2)
    return False


async def run(opts: RunOptions, stop: asyncio.Event | None = None) -> int:
    """The whole process after logging is set up. Returns the exit code."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    role = Role()
    health = await serve_health(opts.liveness_port, role)
    try:
        try:
            creds = load_credentials(opts.kubeconfig)
        except CredentialsError as exc:
            log.error("%s", exc)
            return 2
        if not await wait_for_api(creds, stop):
            return 0
        if not opts.leader_lease:
            role.set("leader")
            await operate(opts, creds, stop)
            return 0
        return await lead(opts, creds, role, stop)
    finally:
        role.set("stopping")
        await health.cleanup()


async def lead(opts: RunOptions, creds: Credentials, role: Role, stop: asyncio.Event) -> int:
    """Campaign; lead while the lease is ours; release it on a graceful stop."""
    assert opts.leader_lease
    namespace = os.environ.get("POD_NAMESPACE", "default")
    me = instance_name()
    # Its own connection pool: renewals must never queue behind the workers' writes.
    lease_client = KubeClient(
        creds, timeout=opts.election.renew_deadline, agent=user_agent("leader-election")
    )
    election = LeaderElection(lease_client, namespace, opts.leader_lease, me, opts.election)
    campaign = asyncio.create_task(election.run(), name="leader-election")
    role.set("standby")
    log.info("standby: campaigning for lease %s/%s as %s", namespace, opts.leader_lease, me)
    operation = Operation(
        opts, creds, may_write=election.may_act, write_window=election.write_window
    )
    try:
        await operation.prepare()  # while standing by: the index is warm at take-over
        if not await _first(election.leading, stop):
            return 0
        role.set("leader")
        # kopf handles SIGTERM itself from here on; losing the lease stops it too.
        op_stop = asyncio.Event()
        election.on_lost.append(op_stop.set)
        # /readyz stops saying "leader" at once, not when kopf has finished shutting down.
        election.on_lost.append(partial(role.set, "stopping"))
        await operation.run(op_stop)
        if election.lost.is_set():
            return 1  # restart as a candidate, like client-go's OnStoppedLeading
        campaign.cancel()
        role.set("stopping")
        await election.release()
        return 0
    finally:
        await operation.close()
        campaign.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await campaign
        await lease_client.close()


async def _first(leading: asyncio.Event, stop: asyncio.Event) -> bool:
    """True when leadership came first, False when asked to stop."""
    waits = [asyncio.create_task(leading.wait()), asyncio.create_task(stop.wait())]
    await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    for task in waits:
        task.cancel()
    return leading.is_set() and not stop.is_set()


def run_operator(opts: RunOptions) -> int:
    logging.basicConfig(
        level=logging.DEBUG if opts.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("httpx", "httpcore", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # kopf logs every handler call per object at INFO; our own workers log what matters.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    raise_open_files_limit()
    gcpause.measure()
    gcpause.tune()
    if opts.metrics_port:
        start_http_server(opts.metrics_port)
    opts.kubeconfig = opts.kubeconfig or os.environ.get("KUBECONFIG") or None
    return asyncio.run(run(opts))


def raise_open_files_limit() -> int:
    """Lift the soft limit on open files to the hard one (as Go's runtime does for every
    Go program since 1.19). Probes keep a connection per pod alive: 4,000 sockets at 1,000
    servers of 4 pods, past the 1,024 soft limit some runtimes still set. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            return soft
        return hard
    return soft
