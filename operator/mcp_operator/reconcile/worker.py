"""One worker per ``MCPServer``: a level-based reconcile loop.

Every trigger — the object's create/update/resume, a child's change, the safety-net
timer — only *wakes* the worker; the worker then reconciles the whole object from the
latest state. Edge handlers per field would miss events during restarts; a level loop
cannot. The status held here is rebuilt from the API server when the worker starts, so
an operator restart resumes from the cluster, not from memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from mcp_operator import metrics
from mcp_operator.api.models import (
    API_VERSION,
    GROUP,
    CacheCredentialStatus,
    CacheStatus,
    MCPServer,
    MCPServerStatus,
)
from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.kube.client import ApiError, KubeClient
from mcp_operator.kube.informer import CHILD_KINDS
from mcp_operator.reconcile import cache as cache_state
from mcp_operator.reconcile import conditions, status
from mcp_operator.reconcile.children import (
    ChildIndex,
    Key,
    compact,
    comparable,
    is_applied,
    without_managed_fields,
)
from mcp_operator.reconcile.slots import ApiSlots
from mcp_operator.reconcile.status import Outcome
from mcp_operator.render import RenderContext, alerts, render
from mcp_operator.render import cache as cache_render
from mcp_operator.render.context import Capabilities
from mcp_operator.render.meta import child_name, endpoint

log = logging.getLogger(__name__)
Obj = dict[str, Any]
PAUSE_ANNOTATION = f"{GROUP}/reconcile"
SAFETY_NET_SECONDS = 60.0
# The cache NetworkPolicy admits the operator's pods from this namespace (the Downward API's
# POD_NAMESPACE in install.yaml and the chart; outside a cluster the default install's).
OPERATOR_NAMESPACE = os.environ.get("POD_NAMESPACE") or "mcp-operator-system"
# In-flight API calls of all workers together. The client's pool has 20 connections; more
# requests than that queue inside httpcore, whose queue scan is quadratic (at 200 objects
# x 7 children it cost most of the operator's CPU). A semaphore queues them in O(1).
API_CONCURRENCY = 20
EventFn = Callable[[Obj, str, str, str], None]
# Kinds the informers watch (PrometheusRules: while their API is served, else none is
# rendered). Only these enter the child index, where the watches keep them current. Others
# (the cache's config Secret) are never indexed: an entry fed only by our own applies would
# call a deleted or hand-edited copy current forever, and would exist before a restart but
# not after. Absent from the index, they never look current, so every pass applies them
# (an unchanged server-side apply writes nothing) and only an explicit delete removes them.
WATCHED_KINDS = frozenset(kind for _, kind in CHILD_KINDS) | {alerts.PROMETHEUS_RULE_KIND}


@dataclass
class Shared:
    """What all workers share: the client, the child index, cluster capabilities."""

    client: KubeClient
    index: ChildIndex
    capabilities: Capabilities
    post_event: EventFn
    clock: Callable[[], datetime] = field(default=lambda: datetime.now(UTC))
    # Long-running loops started beside each worker (the health prober) and stopped with it.
    companions: list[Callable[[ServerWorker], Coroutine[Any, Any, None]]] = field(
        default_factory=list
    )
    # Routine API calls queue here; failover and gate writes go ahead (see reconcile.slots).
    api_slots: ApiSlots = field(default_factory=lambda: ApiSlots(API_CONCURRENCY))


class ServerWorker:
    """Owns one MCPServer's reconcile loop and its status."""

    def __init__(self, key: Key, body: Obj, shared: Shared) -> None:
        self.key = key
        self.body = _held(body)
        self.shared = shared
        self.lock = asyncio.Lock()
        self.status = _status_of(body)
        self._written = self.status.model_dump(mode="json", by_alias=True)
        self._wake = asyncio.Event()
        self._wake.set()
        self._fingerprint: tuple[Any, ...] = ()
        self._failures = 0
        self.server: MCPServer | None = None
        self.outcome = Outcome("Applied")
        # The generation the last reconcile acted on. ``self.body`` may already be newer
        # (a watch event or a status-patch response) while the health loop writes status
        # before the next reconcile: observedGeneration must not claim the newer spec.
        self.reconciled_generation: int | None = self.status.observed_generation
        # Set by the health extension: its verdict feeds Ready and its own conditions.
        self.no_healthy_tier = False
        self.extra_conditions: list[conditions.Want] = []
        # Set by the signing-keys loop (mcp_operator.keys.controller): KeysReady, and the
        # probe's short-lived token when spec.auth is on (None: probe without a token).
        self.keys_conditions: list[conditions.Want] = []
        # MonitoringReady: the PrometheusRule's state, set by each reconcile.
        self.monitoring_conditions: list[conditions.Want] = []
        self.probe_token: Callable[[], str | None] = lambda: None
        # The cache credential's hash (never the password), read or created each reconcile.
        self.cache_credential: cache_state.Credential | None = None
        # Set by the data-encryption keyring loop (mcp_operator.keys.datacontroller).
        self.data_keys_conditions: list[conditions.Want] = []
        # Set by the cache password rotation loop (mcp_operator.keys.cachecontroller).
        self.cache_credential_conditions: list[conditions.Want] = []
        self.cache_credential_status: CacheCredentialStatus = self.status.cache.credential

    # -- triggers ---------------------------------------------------------------------------

    def observe(self, body: Obj) -> None:
        """A new version of the object; wake only if something we act on changed."""
        self.body = _held(body)
        meta = body.get("metadata", {})
        fingerprint = (
            meta.get("generation"),
            tuple(sorted((meta.get("annotations") or {}).items())),
            meta.get("uid"),
        )
        if fingerprint != self._fingerprint:
            self._fingerprint = fingerprint
            self.wake()

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self._next_delay())
            self._wake.clear()
            await asyncio.sleep(0.05)  # coalesce bursts of child events into one pass
            try:
                async with self.lock:
                    with self.shared.api_slots.reconciling(self.key):
                        await self.reconcile()
            except Exception:  # e.g. a status write refused: retry later, never die
                log.exception("reconcile pass of %s/%s failed", *self.key)
                self._failures += 1

    def _next_delay(self) -> float:
        """Safety-net period; failures back off exponentially instead of hot-looping."""
        if self._failures:
            return float(min(300, 2 ** min(self._failures, 8)))
        return SAFETY_NET_SECONDS

    # -- the reconcile ----------------------------------------------------------------------

    async def reconcile(self) -> None:
        started = time.perf_counter()
        namespace, name = self.key
        metrics.RECONCILE_TOTAL.labels(namespace, name).inc()
        generation = self.generation
        try:
            self.outcome = await self._reconcile()
        except ApiError as exc:
            self.outcome = Outcome("ApplyFailed", f"API server said: {exc.message or exc.reason}")
        except Exception as exc:
            log.exception("reconcile of %s/%s failed", namespace, name)
            self.outcome = Outcome("ApplyFailed", f"internal error: {type(exc).__name__}")
        self.reconciled_generation = generation
        if self.outcome.ok or self.outcome.reason == "Paused":
            self._failures = 0
        else:
            self._failures += 1
            metrics.RECONCILE_ERRORS.labels(namespace, name, self.outcome.reason).inc()
        try:
            await self.write_status()
        except Exception as exc:
            # A failed status write (timeout, 5xx, connection reset) must not end this
            # worker's loop: the object would never be reconciled again until a restart.
            # The unwritten status stays pending and is retried with backoff.
            log.warning("status write of %s/%s failed: %r", namespace, name, exc)
            self._failures += 1
        metrics.RECONCILE_DURATION.observe(time.perf_counter() - started)

    async def _reconcile(self) -> Outcome:
        try:
            server = parse_server(self.body)
        except InvalidSpec as exc:
            self.server = None
            # Every problem with its path; conditions allow 32 KiB, keep well under it.
            return Outcome("InvalidSpec", "; ".join(str(p) for p in exc.problems)[:4000])
        self.server = server
        annotations = self.body["metadata"].get("annotations") or {}
        if annotations.get(PAUSE_ANNOTATION) == "disabled":
            return Outcome("Paused", f"annotation {PAUSE_ANNOTATION}=disabled")
        missing = await self._missing_references(server)
        if missing:
            return Outcome("MissingReference", missing)
        kept: set[tuple[str, str]] = set()
        if server.spec.cache.enabled:
            self.cache_credential = await self._ensure_cache_credential(server)
        else:
            self.cache_credential = None
            if self.status.cache.endpoint:  # just turned off: Secrets are not watched, so
                await self._delete_cache_config(server)  # prune never knows this one
        ctx = self.render_context()
        desired = render(server, ctx)
        if self.cache_credential is not None and self.cache_credential.password_hash is None:
            # No usable password: keep the cache as it runs (CacheReady says why) rather
            # than apply an ACL nobody can log in with, or prune the cache.
            kept = {_child_key(o) for o in cache_render.objects(server, ctx)}
            desired = [d for d in desired if _child_key(d) not in kept]
            _keep_credential_stamps(desired, self.shared.index.children(self.key))
        await self._apply(desired)
        desired += await self._apply_rule(server, ctx)
        await self._prune(desired, kept)
        return Outcome("Applied")

    async def _ensure_cache_credential(self, server: MCPServer) -> cache_state.Credential:
        """The credential, or why it is unavailable: a refused read or create (403, quota)
        is ``CacheReady=False CredentialUnavailable``, not a failed reconcile -- the tiers
        must still be applied (serving does not need the cache)."""
        try:
            async with self.shared.api_slots.slot(self.key):
                return await cache_state.ensure_credential(
                    self.shared.client, server, self.body["metadata"].get("uid")
                )
        except ApiError as exc:
            name = cache_render.auth_secret_name(server)
            said = exc.message or exc.reason
            return cache_state.Credential(
                None,
                problem=f"Secret {name} could not be read or created: API server said: {said}"[
                    :1000
                ],
                reason="CredentialUnavailable",
            )

    async def _apply_rule(self, server: MCPServer, ctx: RenderContext) -> list[Obj]:
        """The PrometheusRule, after what serves traffic and apart from it: a missing CRD or
        a refused apply is reported as ``MonitoringReady`` and never fails the reconcile.
        Returns the rule when it must not be pruned."""
        name = self.key[1]
        if not server.spec.monitoring.prometheus_rule.enabled:
            self.monitoring_conditions = [
                conditions.Want(
                    "MonitoringReady",
                    "True",
                    "PrometheusRuleDisabled",
                    "spec.monitoring.prometheusRule.enabled is false: no alert rules",
                )
            ]
            return []
        rule = alerts.prometheus_rule(server, ctx)
        if rule is None:
            self.monitoring_conditions = [
                conditions.Want(
                    "MonitoringReady",
                    "False",
                    "PrometheusRuleCRDNotInstalled",
                    f"the API server does not serve {alerts.MONITORING_API} PrometheusRule "
                    "(the Prometheus Operator's CRD); the rule is created once it is installed",
                )
            ]
            return []
        try:
            await self._apply([rule])
        except ApiError as exc:
            self.monitoring_conditions = [
                conditions.Want(
                    "MonitoringReady",
                    "False",
                    "PrometheusRuleApplyFailed",
                    f"PrometheusRule {name}: API server said: {exc.message or exc.reason}"[:1000],
                )
            ]
            return [rule]  # an existing rule is kept, not pruned
        count = len(rule["spec"]["groups"][0]["rules"])
        self.monitoring_conditions = [
            conditions.Want(
                "MonitoringReady",
                "True",
                "PrometheusRuleApplied",
                f"PrometheusRule {name} holds {count} alerts",
            )
        ]
        return [rule]

    def render_context(self) -> RenderContext:
        """During an intent the stable Service is rendered from the intent's target, so a
        reconcile (or a restart) between the Service apply and the ``activeTier`` write
        can never flip the selector back; a single-tier server always selects the primary."""
        failover = self.status.failover
        warming = failover.phase in ("Intent", "ScalingBackup") and failover.target_tier == "backup"
        active = self.status.active_tier or "primary"
        if failover.phase == "Intent" and failover.target_tier:
            active = failover.target_tier
        if self.server is not None and not self.server.spec.backup.enabled:
            active = "primary"
        credential = self.cache_credential
        return RenderContext(
            active_tier=active,
            backup_warm=warming,
            capabilities=self.shared.capabilities,
            owner_uid=self.body["metadata"].get("uid"),
            cache_password_hash=credential.password_hash if credential else None,
            cache_monitor_hash=credential.monitor_hash if credential else None,
            cache_operator_hash=credential.operator_hash if credential else None,
            cache_extra_hashes=credential.extra_hashes if credential else (),
            cache_tier_hashes=credential.tier_hashes if credential else (),
            operator_namespace=OPERATOR_NAMESPACE,
        )

    async def apply_data_path(self, server: MCPServer) -> None:
        """Apply only what moves traffic -- the stable Service, and the backup Deployment's
        scale when it already exists -- from the current render context.

        Why not a full reconcile: a failover must not depend on the rest of the spec being
        applicable (a missing ConfigMap, a refused apply of another child). Raises
        ``ApiError`` when the API server refuses; the caller keeps its intent and retries.
        """
        desired = render(server, self.render_context())
        live = self.shared.index.children(self.key)
        backup = ("Deployment", f"{self.key[1]}-backup")
        # The backup Deployment only when the last reconcile applied: rendered from a spec
        # that cannot be applied (a missing ConfigMap) it would start a broken rollout.
        scale = backup in live and self.outcome.ok
        wanted = {("Service", self.key[1])} | ({backup} if scale else set())
        for obj in desired:
            if _child_key(obj) == backup:
                pin_credential_stamp(obj, live.get(backup))
            if _child_key(obj) in wanted and not _is_current(obj, live.get(_child_key(obj))):
                self._applied(obj["kind"], await self.shared.client.apply(obj))

    async def _missing_references(self, server: MCPServer) -> str:
        """Secrets and ConfigMaps the pods need; a pod would crash-loop without them."""
        refs = _references(server)
        for kind, name in sorted(refs):
            async with self.shared.api_slots.slot(self.key):
                found = await self.shared.client.get("v1", kind, self.key[0], name)
            if found is None:
                return f"{kind} {name!r} referenced by spec does not exist"
        return ""

    async def _apply(self, desired: list[Obj]) -> None:
        live = self.shared.index.children(self.key)
        # Unwatched kinds are never in the index (WATCHED_KINDS), so they are always stale.
        stale = [d for d in desired if not _is_current(d, live.get(_child_key(d)))]
        results = await asyncio.gather(*(self._apply_one(obj) for obj in stale))
        for obj, result in zip(stale, results, strict=True):
            self._applied(obj["kind"], result)

    def _applied(self, kind: str, result: Obj) -> None:
        """Count an apply; index its result (newer than the watch event to come) only for a
        watched kind, which the informers keep current from then on."""
        metrics.APPLIES.labels(kind).inc()
        held = self.shared.index.children(self.key).get((kind, result["metadata"]["name"]))
        if kind in WATCHED_KINDS and not _older(result, held):
            self.shared.index.observe(kind, result, deleted=False)

    async def _apply_one(self, obj: Obj) -> Obj:
        async with self.shared.api_slots.slot(self.key):
            return await self.shared.client.apply(obj)

    async def _delete_cache_config(self, server: MCPServer) -> None:
        """Delete ``NAME-cache-config`` (gone already is fine): Secrets are not watched,
        so the index never holds it and prune cannot know it."""
        name = cache_render.config_secret_name(server)
        async with self.shared.api_slots.slot(self.key):
            await self.shared.client.delete("v1", "Secret", self.key[0], name)

    async def _prune(self, desired: list[Obj], kept: set[tuple[str, str]] | None = None) -> None:
        """Delete children we own that are no longer desired (e.g. a PDB after scale-down);
        ``kept`` ones are left alone although not applied this time."""
        wanted = {_child_key(d) for d in desired} | (kept or set())
        uid = self.body["metadata"].get("uid")
        for (kind, name), obj in self.shared.index.children(self.key).items():
            owners = obj["metadata"].get("ownerReferences") or []
            if (kind, name) in wanted or not any(o.get("uid") == uid for o in owners):
                continue
            async with self.shared.api_slots.slot(self.key):
                await self.shared.client.delete(
                    obj["apiVersion"], kind, self.key[0], name, uid=obj["metadata"].get("uid")
                )
            self.shared.index.observe(kind, obj, deleted=True)

    # -- status -----------------------------------------------------------------------------

    def refresh_status(self) -> None:
        """Fold the latest observations into the status model (no I/O)."""
        now = self.shared.clock()
        children = self.shared.index.children(self.key)
        tiers = self.status.tiers.model_copy(
            update={
                tier: status.tier_status(
                    getattr(self.status.tiers, tier),
                    children.get(("Deployment", f"{self.key[1]}-{tier}")),
                )
                for tier in ("primary", "backup")
            }
        )
        active = self.status.active_tier or "primary"
        generation = self.reconciled_generation
        wanted = [status.reconciled_condition(self.outcome, generation)]
        if self.server is not None:
            active_tier = getattr(tiers, active)
            wanted.append(
                status.ready_condition(self.server, self.outcome, active_tier, self.no_healthy_tier)
            )
        else:
            wanted.append(
                conditions.Want("Ready", "False", self.outcome.reason, self.outcome.message)
            )
        wanted += self.extra_conditions + self.keys_conditions + self.data_keys_conditions
        wanted += self.monitoring_conditions + self.cache_credential_conditions
        cache_status, cache_ready = self._cache_status(children)
        if cache_ready is not None:
            wanted.append(cache_ready)
        merged = conditions.merge(self.status.conditions, wanted, generation, now)
        if self.server is not None and not self.server.spec.cache.enabled:  # no stale one
            merged = [c for c in merged if c.type not in ("CacheReady", "CacheCredentialReady")]
        self.status = self.status.model_copy(
            update={
                "cache": cache_status,
                "observed_generation": generation,
                "active_tier": active,
                "endpoint": endpoint(self.server) if self.server else self.status.endpoint,
                "tiers": tiers,
                "conditions": merged,
            }
        )

    def _cache_status(
        self, children: dict[tuple[str, str], Obj]
    ) -> tuple[CacheStatus, conditions.Want | None]:
        """status.cache and CacheReady (None: no cache), and the cache_ready gauge."""
        namespace, name = self.key
        if self.server is None:
            return self.status.cache, None
        deployment = children.get(("Deployment", f"{name}-cache"))
        cache_status, want = cache_state.cache_status(
            self.server, deployment, self.cache_credential
        )
        if want is not None:
            cache_status = cache_status.model_copy(
                update={"credential": self.cache_credential_status}
            )
        if want is None:
            with contextlib.suppress(KeyError):
                metrics.CACHE_READY.remove(namespace, name)
        else:
            metrics.CACHE_READY.labels(namespace, name).set(1 if cache_status.ready else 0)
        return cache_status, want

    @property
    def generation(self) -> int | None:
        gen = self.body["metadata"].get("generation")
        return int(gen) if gen is not None else None

    async def write_status(self, urgent: bool = False) -> None:
        """Patch status only when it changed; announce condition flips as Events.

        ``urgent`` writes (a failover intent or completion) skip the queue of routine
        writes: they carry a traffic decision, which must not wait behind 200 reconciles
        (:mod:`mcp_operator.reconcile.slots`; the health loop also boosts this worker while
        it waits for the lock a reconcile may hold).
        """
        self.refresh_status()
        new = self.status.model_dump(mode="json", by_alias=True)
        if new == self._written:
            return
        old_conditions = {c["type"]: c for c in self._written.get("conditions") or []}
        namespace, name = self.key
        try:
            async with self.shared.api_slots.slot(self.key, urgent=urgent):
                result = await self.shared.client.patch(
                    API_VERSION,
                    "MCPServer",
                    namespace,
                    name,
                    {"status": new},
                    subresource="status",
                )
        except ApiError as exc:
            if exc.status == 404:
                return
            raise
        self._written = new
        metadata = result.get("metadata", self.body["metadata"])
        self.body = compact(without_managed_fields({**self.body, "metadata": metadata}))
        self._announce(old_conditions, new.get("conditions") or [])
        metrics.set_conditions(namespace, name, {c["type"]: c["status"] for c in new["conditions"]})

    def _announce(self, old: dict[str, Obj], new: list[Obj]) -> None:
        for cond in new:
            before = old.get(cond["type"])
            if cond["type"] not in ("Ready", "Reconciled", "Misconfigured", "Verified"):
                continue
            if before is not None and before["status"] == cond["status"]:
                continue
            # Misconfigured is the one condition whose True is the bad news.
            bad = (cond["status"] == "True") == (cond["type"] == "Misconfigured")
            if before is None and not bad:
                continue
            kind = "Warning" if bad else "Normal"
            message = f"{cond['type']}={cond['status']}: {cond['message']}"[:1000]
            self.shared.post_event(self.body, kind, cond["reason"], message)


def _held(body: Obj) -> Obj:
    """What a worker keeps of its object: all but the status. The status is read once, when
    the worker starts (:func:`_status_of`); from then on ``self.status`` is the truth, and
    the API's copy -- again inside every parsed ``self.server`` -- was memory per server
    that nothing read."""
    return {k: v for k, v in body.items() if k != "status"}


def _status_of(body: Obj) -> MCPServerStatus:
    """Rebuild status from the API object; a corrupt status starts over rather than crash."""
    try:
        return MCPServerStatus.model_validate(body.get("status") or {})
    except ValueError:
        log.warning("ignoring unreadable status of %s", body["metadata"].get("name"))
        return MCPServerStatus()


def _is_current(desired: Obj, live: Obj | None) -> bool:
    """Applied, and controlled by the owner we render for. ``comparable`` ignores
    ownerReferences, so a same-named child left by a deleted predecessor of this object
    (same name, old uid) would otherwise count as applied and never be adopted: it would
    wait for the garbage collector to delete it before being re-created."""
    if live is None or not is_applied(comparable(desired), live):
        return False
    wanted = [r.get("uid") for r in desired["metadata"].get("ownerReferences") or []]
    have = [
        r.get("uid") for r in live["metadata"].get("ownerReferences") or [] if r.get("controller")
    ]
    return not wanted or have == wanted


def _older(result: Obj, held: Obj | None) -> bool:
    """An apply's response older than what the informers already delivered: the applies
    of one pass are gathered, so a watch event (a cache pod ready within milliseconds) can
    be indexed before a slower sibling apply returns; indexing the response then would
    hold a stale status (``readyReplicas`` 0) until the next event, which may never come.
    resourceVersions are compared as numbers only when both are (etcd revisions)."""
    if held is None:
        return False
    mine = str(result.get("metadata", {}).get("resourceVersion", ""))
    theirs = str(held.get("metadata", {}).get("resourceVersion", ""))
    return mine.isdigit() and theirs.isdigit() and int(mine) < int(theirs)


def pin_credential_stamp(desired: Obj, live: Obj | None) -> None:
    """The data path scales the backup tier; it must not roll it: keep the live cache
    credential stamp (a failover between the password loop's write and the next reconcile
    would otherwise re-stamp the tier being promoted with a stale credential)."""
    key = cache_render.CREDENTIAL_ANNOTATION
    template = ((live or {}).get("spec") or {}).get("template") or {}
    stamp = ((template.get("metadata") or {}).get("annotations") or {}).get(key)
    wanted = desired["spec"]["template"]["metadata"].setdefault("annotations", {})
    if stamp:
        wanted[key] = stamp
    else:
        wanted.pop(key, None)


def _keep_credential_stamps(desired: list[Obj], live: dict[tuple[str, str], Obj]) -> None:
    """Without a usable credential the tiers are rendered without the cache credential
    annotation; keep the live one instead, so an unreadable Secret (or a passing 403) does
    not roll both tiers -- and roll them back once it is readable again."""
    key = cache_render.CREDENTIAL_ANNOTATION
    for obj in desired:
        if obj["kind"] != "Deployment":
            continue
        current = live.get(_child_key(obj)) or {}
        template = (current.get("spec") or {}).get("template") or {}
        stamp = ((template.get("metadata") or {}).get("annotations") or {}).get(key)
        wanted = obj["spec"]["template"]["metadata"].setdefault("annotations", {})
        if stamp and key not in wanted:
            wanted[key] = stamp


def _child_key(obj: Obj) -> tuple[str, str]:
    return obj["kind"], obj["metadata"]["name"]


def _references(server: MCPServer) -> set[tuple[str, str]]:
    refs: set[tuple[str, str]] = set()
    for env in server.spec.env:
        source = env.get("valueFrom") or {}
        for key, kind in (("secretKeyRef", "Secret"), ("configMapKeyRef", "ConfigMap")):
            ref = source.get(key)
            if ref and not ref.get("optional") and ref.get("name"):
                refs.add((kind, ref["name"]))
    for env_from in server.spec.env_from:
        for key, kind in (("secretRef", "Secret"), ("configMapRef", "ConfigMap")):
            ref = env_from.get(key)
            if ref and not ref.get("optional") and ref.get("name"):
                refs.add((kind, ref["name"]))
    for volume in server.spec.pod.volumes:
        for key, kind, name_key in (
            ("configMap", "ConfigMap", "name"),
            ("secret", "Secret", "secretName"),
        ):
            source = volume.get(key)
            if source and not source.get("optional") and source.get(name_key):
                refs.add((kind, source[name_key]))
    # Not the probe's token or CA Secret: the pods do not need them, so their absence must
    # not stop the reconcile; the health loop reports it (Misconfigured, ProbeSettings).
    return refs


__all__ = ["ServerWorker", "Shared", "child_name"]
