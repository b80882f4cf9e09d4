"""The cache password rotation loop beside each worker: I/O around the pure state machine
:mod:`mcp_operator.keys.cacherotation`.

One pass: read the Secret ``NAME-cache-auth`` (the state and the passwords), make every
running Redis pod accept exactly the hashes the state says (``ACL SETUSER`` as the
operator's own Redis user: add first, then remove — idempotent, so a pass killed half-way is
simply repeated), observe the tiers' Deployments, decide, and write the Secret in one merge
patch carrying the ``resourceVersion`` read (409: someone else wrote, re-read). A write
wakes the worker, whose reconcile renders the ACL file and the tiers' credential stamps
from the new state. A crash between any two steps is harmless: the next pass (of this or of
a restarted operator) reads the state back and converges the same levels.

Passwords stay in the Secret, on the socket to Redis and in this process' memory: logs,
Events, status and metrics name phases and times only.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import time
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

from mcp_operator import metrics
from mcp_operator.api.durations import parse_duration
from mcp_operator.api.models import GROUP, CacheCredentialStatus, MCPServer
from mcp_operator.keys import cacherotation as rotation
from mcp_operator.keys import cachestore
from mcp_operator.keys.cacherotation import Observed, Settings, State
from mcp_operator.keys.redisacl import Connection, RedisError
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile.cache import new_password
from mcp_operator.reconcile.conditions import Want
from mcp_operator.reconcile.worker import PAUSE_ANNOTATION, ServerWorker, Shared
from mcp_operator.render import cache, meta

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ROTATE_ANNOTATION = f"{GROUP}/rotate-cache-password"
CONDITION = "CacheCredentialReady"
# Stable: the Secret and Redis's live ACL re-checked this often (a safety net: a restarted
# Redis reads the current ACL file; a due rotation or a request is noticed from memory).
POLL_SECONDS = 30.0
TICK_SECONDS = 1.0
IDLE_SECONDS = 2.0


def install(shared: Shared) -> None:
    shared.companions.append(lambda worker: CachePasswordLoop(worker).run())


JITTER_FRACTION = 0.1  # of ``every``


def settings_of(server: MCPServer) -> Settings:
    spec = server.spec.cache.credential_rotation
    every = parse_duration(spec.every) if spec.enabled else None
    return Settings(
        every=every,
        propagation=parse_duration(spec.propagation),
        jitter=every * JITTER_FRACTION * _fraction(server.metadata.uid or server.metadata.name)
        if every
        else timedelta(0),
    )


def _fraction(seed: str) -> float:
    """A stable number in [0, 1) from the server's uid (deterministic jitter)."""
    return int(hashlib.sha256(seed.encode()).hexdigest()[:12], 16) / float(16**12)


def request_of(body: Obj) -> str | None:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return annotations.get(ROTATE_ANNOTATION) or None


def tier_rolled(deployment: Obj | None, pods: list[Obj], wanted_hash: str, exists: bool) -> bool:
    """The tier's Deployment carries the wanted credential stamp and runs only pods of that
    template, all ready; and no pod of the tier -- terminating ones included, which may
    still serve while they drain -- was made from another template (pure). A tier that
    should not exist (backup off) has nothing to roll; one that should but is not there yet
    has not rolled."""
    if deployment is None:
        return not exists
    stamp = cache.credential_stamp(wanted_hash)
    if _stamp_of((deployment.get("spec") or {}).get("template") or {}) != stamp:
        return False
    want = int((deployment.get("spec") or {}).get("replicas", 1) or 0)
    status = deployment.get("status") or {}
    generation = int(deployment.get("metadata", {}).get("generation") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    running = [
        p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]
    return (
        int(status.get("observedGeneration") or 0) >= generation
        and updated >= want
        and int(status.get("replicas") or 0) == updated
        and int(status.get("readyReplicas") or 0) >= want
        and all(_stamp_of(p) == stamp for p in running)
    )


def file_hashes(config_secret: Obj | None) -> frozenset[str] | None:
    """The MCP user's password hashes in a stored ``NAME-cache-config`` Secret's ACL file
    -- what a Redis restarting now (once the kubelet synced the volume) would accept (pure;
    None: no such Secret or no readable file)."""
    raw = ((config_secret or {}).get("data") or {}).get("users.acl")
    if not isinstance(raw, str):
        return None
    try:
        text = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    for line in text.splitlines():
        words = line.split()
        if words[:2] == ["user", cache.USERNAME]:
            return frozenset(w[1:] for w in words[2:] if w.startswith("#"))
    return frozenset()


def _stamp_of(obj: Obj) -> str | None:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    stamp = annotations.get(cache.CREDENTIAL_ANNOTATION)
    return str(stamp) if stamp is not None else None


class CachePasswordLoop:
    """Runs the cache password rotation of one MCPServer while ``spec.cache.enabled``."""

    def __init__(self, worker: ServerWorker) -> None:
        self.worker = worker
        self.shared = worker.shared
        self.state: State | None = None
        self.next_poll = 0.0
        self.failures = 0
        self.unreachable = ""
        self.cache_seen: object = None
        self.stall_warned: tuple[str, datetime | None] | None = None

    async def run(self) -> None:
        while True:
            server: MCPServer | None = None
            try:
                server = self._server()
                if server is not None and self._due(server):
                    await self.sync(server)
                    self.failures = 0
                elif self._turned_off() and self.worker.cache_credential_conditions:
                    await self._forget()
            except Exception as exc:  # never die; the message names no password
                await self._report_failure(exc)
            await asyncio.sleep(TICK_SECONDS if server is not None else IDLE_SECONDS)

    def _server(self) -> MCPServer | None:
        server = self.worker.server
        annotations = self.worker.body["metadata"].get("annotations") or {}
        if server is None or not server.spec.cache.enabled:
            return None
        return None if annotations.get(PAUSE_ANNOTATION) == "disabled" else server

    def _turned_off(self) -> bool:
        """``spec.cache`` was switched off (not paused): drop the condition and mirror."""
        server = self.worker.server
        return server is not None and not server.spec.cache.enabled

    def _due(self, server: MCPServer) -> bool:
        if time.monotonic() >= self.next_poll or self._cache_signature(server) != self.cache_seen:
            return True  # a cache pod (re)started: it loaded the ACL file; converge at once
        if self.failures or self.state is None:
            return False
        if self.state.rotating:
            return True
        if request_of(self.worker.body) not in (None, self.state.last_request):
            return True
        deadline = rotation.deadline(self.state, settings_of(server))
        return deadline is not None and self.shared.clock() >= deadline

    def _cache_signature(self, server: MCPServer) -> object:
        """The cache Deployment's status (watched): it changes when a Redis pod (re)starts
        or turns ready, which is when the live ACL may have been reloaded from the file."""
        children = self.shared.index.children(self.worker.key)
        status = (children.get(("Deployment", cache.name(server))) or {}).get("status") or {}
        keys = ("replicas", "readyReplicas", "updatedReplicas", "unavailableReplicas",
                "observedGeneration")  # fmt: skip
        return tuple(status.get(k) for k in keys)

    async def _forget(self) -> None:
        self.state, self.next_poll = None, 0.0
        async with self.worker.lock:
            self.worker.cache_credential_conditions = []
            self.worker.cache_credential_status = CacheCredentialStatus()
            status = self.worker.status
            kept = [c for c in status.conditions if c.type != CONDITION]
            self.worker.status = status.model_copy(update={"conditions": kept})
            await self.worker.write_status()
        gauges = (metrics.CACHE_PASSWORD_AGE, metrics.CACHE_PASSWORD_ROTATING)
        for gauge in gauges:
            with contextlib.suppress(KeyError):
                gauge.remove(*self.worker.key)

    async def _report_failure(self, exc: Exception) -> None:
        self.failures += 1
        delay = min(60.0, 2.0**self.failures)
        self.next_poll = time.monotonic() + delay
        # the exception's type only: a KeyError or a Redis reply may quote a password hash
        detail = exc.message if isinstance(exc, ApiError) else type(exc).__name__
        log.warning("cache password of %s/%s: pass failed: %s", *self.worker.key, detail)
        message = f"could not sync the cache password (retry in {delay:.0f}s): {detail}"[:1000]
        with contextlib.suppress(Exception):
            await self._set_status(
                None, Want(CONDITION, "False", "CachePasswordSyncFailed", message)
            )

    # -- one pass ---------------------------------------------------------------------------

    async def sync(self, server: MCPServer) -> None:
        self.next_poll = time.monotonic() + POLL_SECONDS
        self.cache_seen = self._cache_signature(server)
        namespace, name = self.worker.key
        secret_name = cache.auth_secret_name(server)
        async with self.shared.api_slots.slot(self.worker.key):
            secret = await self.shared.client.get("v1", "Secret", namespace, secret_name)
        self.state = None  # until read back: a broken Secret is re-read at the poll period
        if secret is None:
            return  # the reconcile creates it (CacheReady says why it cannot)
        try:
            stored = cachestore.decode(secret)
        except cachestore.UnreadableState as exc:
            message = f"Secret {secret_name}: {exc}; the password does not rotate"
            await self._set_status(
                None, Want(CONDITION, "False", "CachePasswordStateUnreadable", message)
            )
            return
        if stored is None:
            return  # no usable password: CacheReady is CredentialInvalid
        version = secret["metadata"].get("resourceVersion")
        if stored.operator_password is None or not stored.recorded:
            # A Secret from before rotation existed: record "rotated now" (the schedule
            # starts here, plus the jitter, not at the Secret's creation: an upgrade must
            # not rotate every old Secret at once). The reconcile normally added the
            # operator's Redis user already (one Redis restart); this is the fallback.
            recorded = replace(stored.state, last_rotation=self.shared.clock())
            operator = new_password() if stored.operator_password is None else None
            await self._write(
                secret_name, cachestore.patch(stored, recorded, version, {}, operator)
            )
            log.info("cache password of %s/%s: rotation state recorded", namespace, name)
            return
        state = stored.state
        live = await self._converge(server, stored.operator_password, rotation.accepted(state))
        await self._decide(server, stored, state, live, version, secret_name)

    async def _decide(
        self,
        server: MCPServer,
        stored: cachestore.Stored,
        state: State,
        live: frozenset[str] | None,
        version: str | None,
        secret_name: str,
    ) -> None:
        fresh: dict[str, str] = {}

        def new_hash() -> str:
            password = new_password()
            digest = cache.password_hash(password)
            fresh[digest] = password
            return digest

        settings, now = settings_of(server), self.shared.clock()
        seen = Observed(
            live=live,
            backup_rolled=await self._rolled(server, state, "backup"),
            primary_rolled=await self._rolled(server, state, "primary"),
            request=request_of(self.worker.body),
            active=self.worker.status.active_tier,
            file=await self._stored_file(server) if state.phase == "Adding" else None,
        )
        plan = rotation.decide(state, settings, now, seen, new_hash)
        if plan.state != state:
            if not await self._write(
                secret_name, cachestore.patch(stored, plan.state, version, fresh)
            ):
                return
            for event in plan.events:
                self.shared.post_event(self.worker.body, "Normal", event.reason, event.message)
                log.info("cache password of %s/%s: %s", *self.worker.key, event.message)
            if plan.state.rotations > state.rotations:
                metrics.CACHE_PASSWORD_ROTATIONS.labels(*self.worker.key).inc()
            if rotation.accepted(plan.state) != rotation.accepted(state):
                self.next_poll = 0.0  # tell Redis at once
        self.state = plan.state
        await self._report(plan.state, settings, now, live)

    async def _rolled(self, server: MCPServer, state: State, tier: rotation.Tier) -> bool:
        """Observed only while the phase waits for it (a pod list per tier and pass)."""
        waits = {"backup": ("RollingBackup",), "primary": ("RollingPrimary",)}[tier]
        if state.phase not in waits:
            return False
        namespace, name = self.worker.key
        deployment = self.shared.index.children(self.worker.key).get(
            ("Deployment", f"{name}-{tier}")
        )
        selector = f"{meta.SERVER_LABEL}={name},{meta.TIER_LABEL}={tier}"
        async with self.shared.api_slots.slot(self.worker.key):  # the shared API budget
            pods = await self.shared.client.list("v1", "Pod", namespace, label_selector=selector)
        exists = tier == "primary" or server.spec.backup.enabled
        return tier_rolled(deployment, pods, rotation.tier_hash(state, tier), exists)

    async def _stored_file(self, server: MCPServer) -> frozenset[str]:
        """The hashes the applied ACL file lists (read back: what the kubelet syncs)."""
        namespace = self.worker.key[0]
        name = cache.config_secret_name(server)
        async with self.shared.api_slots.slot(self.worker.key):
            stored = await self.shared.client.get("v1", "Secret", namespace, name)
        return file_hashes(stored) or frozenset()

    async def _write(self, secret_name: str, patch: Obj) -> bool:
        """False when someone else wrote the Secret first (the next pass re-reads)."""
        try:
            await self.shared.client.patch("v1", "Secret", self.worker.key[0], secret_name, patch)
        except ApiError as exc:
            if exc.status != 409:
                raise
            log.info("cache password of %s/%s changed concurrently; re-reading", *self.worker.key)
            self.next_poll = 0.0
            return False
        self.worker.wake()  # the reconcile renders the ACL file and the tiers' stamps
        return True

    async def _converge(
        self, server: MCPServer, operator_password: str, wanted: frozenset[str]
    ) -> frozenset[str] | None:
        """Make every running Redis pod accept exactly ``wanted``; what they all accept, or
        None when one cannot be reached (the reasons kept for the condition)."""
        namespace = self.worker.key[0]
        selector = f"{cache.CACHE_LABEL}={server.metadata.name}"
        async with self.shared.api_slots.slot(self.worker.key):  # the shared API budget
            pods = await self.shared.client.list("v1", "Pod", namespace, label_selector=selector)
        addresses = [
            p["status"]["podIP"]
            for p in pods
            if (p.get("status") or {}).get("podIP")
            and p["status"].get("phase") == "Running"
            and not p["metadata"].get("deletionTimestamp")
        ]
        if not addresses:
            self.unreachable = "no running cache pod"
            return None
        seen: set[frozenset[str]] = set()
        failed: list[str] = []
        for address in addresses:  # every reachable pod, even when one is not
            try:
                async with Connection(
                    address, cache.PORT, cache.OPERATOR_USERNAME, operator_password
                ) as redis:
                    seen.add(await redis.converge(cache.USERNAME, wanted, self._may_change))
            except RedisError as exc:
                failed.append(f"Redis at {address}: {exc}")
        self.unreachable = "; ".join(failed)
        return seen.pop() if len(seen) == 1 and not failed else None

    def _may_change(self) -> bool:
        """The API client's leadership fence, also for changes of the live Redis ACL."""
        fence = getattr(self.shared.client, "may_write", None)
        return fence is None or bool(fence())

    # -- reporting --------------------------------------------------------------------------

    async def _report(
        self, state: State, settings: Settings, now: datetime, live: frozenset[str] | None
    ) -> None:
        upcoming = rotation.next_due(state, settings)
        key = self.worker.key
        metrics.CACHE_PASSWORD_ROTATING.labels(*key).set(1 if state.rotating else 0)
        if state.last_rotation is not None:
            age = (now - state.last_rotation).total_seconds()
            metrics.CACHE_PASSWORD_AGE.labels(*key).set(max(0.0, age))
        status = CacheCredentialStatus(
            phase=state.phase,
            phase_since=state.since,
            rotations=state.rotations,
            last_rotation_time=state.last_rotation,
            next_rotation_time=upcoming,
            last_rotate_request=state.last_request,
        )
        waiting_on_redis = state.phase in ("Adding", "Removing") and live is None
        if rotation.stalled(state, settings, now):
            want = self._stalled(state, settings, live)
        elif waiting_on_redis:
            message = (
                f"rotation in phase {state.phase}: {rotation.describe(state)}, but the operator "
                f"cannot reach it ({self.unreachable}); both passwords stay valid"
            )
            want = Want(CONDITION, "False", "CachePasswordRedisUnreachable", message)
        elif state.rotating:
            message = f"rotation in phase {state.phase}: {rotation.describe(state)}"
            want = Want(CONDITION, "True", "CachePasswordRotating", message)
        else:
            when = upcoming.isoformat() if upcoming else "not scheduled"
            message = f"{state.rotations} rotation(s) done; next: {when}"
            want = Want(CONDITION, "True", "CachePasswordStable", message)
        await self._set_status(status, want)

    def _stalled(self, state: State, settings: Settings, live: frozenset[str] | None) -> Want:
        """Condition False and one Warning Event per stalled phase (names what it waits
        for; no hash, no Redis reply)."""
        bound = rotation.stall_bound(settings).total_seconds()
        waits = rotation.describe(state)
        name = self.worker.key[1]
        blocking = {
            "RollingBackup": f" (Deployment {name}-backup: `kubectl rollout status`)",
            "RollingPrimary": f" (Deployment {name}-primary: `kubectl rollout status`)",
        }.get(state.phase, "")
        if state.phase in ("Adding", "Removing") and live is None:
            blocking = f" (Redis out of reach: {self.unreachable})"
        message = (
            f"rotation stalled in phase {state.phase} for more than {bound:g}s: {waits}"
            f"{blocking}; both passwords stay valid until it moves"
        )
        if self.stall_warned != (state.phase, state.since):
            self.stall_warned = (state.phase, state.since)
            self.shared.post_event(
                self.worker.body, "Warning", "CachePasswordRotationStalled", message
            )
            log.warning("cache password of %s/%s: %s", *self.worker.key, message)
        return Want(CONDITION, "False", "CachePasswordRotationStalled", message)

    async def _set_status(self, status: CacheCredentialStatus | None, condition: Want) -> None:
        async with self.worker.lock:
            if status is not None:
                self.worker.cache_credential_status = status
            self.worker.cache_credential_conditions = [condition]
            await self.worker.write_status()


__all__ = ["ROTATE_ANNOTATION", "CachePasswordLoop", "file_hashes", "install", "tier_rolled"]
