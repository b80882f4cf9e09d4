"""The signing-keys loop beside each worker: the I/O around the pure schedule.

One pass: read the Secret (the truth) and the JWKS ConfigMap (the observation), let
:func:`mcp_operator.keys.schedule.decide` choose, then write in a crash-safe order:

1. the Secret, with its ``resourceVersion`` (optimistic concurrency: a concurrent writer,
   e.g. a second operator during a leader hand-over, makes this write fail with 409 and
   the pass starts over from a fresh read — never two rings);
2. the ConfigMap, server-side applied from the ring just written;
3. status, Events and metrics.

A crash between any two steps is harmless: a key generated but not written was never
published; a key written but not applied is not yet *published* (publication is observed
in the ConfigMap by a later pass, never assumed). Private keys stay in the Secret and in
this process' memory; logs, Events, status and metrics name keys by ``kid`` only.

Tampering: a deleted Secret is regenerated (Warning Event, ``KeysReady`` reason
``KeysRegenerated``); a Secret that does not parse is *not* replaced — that would destroy
keys an admin may still restore and invalidate every outstanding token — but reported as
``KeysReady=False`` reason ``KeysUnreadable`` while the published JWKS is left serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from mcp_operator import metrics
from mcp_operator.api.durations import parse_duration
from mcp_operator.api.models import GROUP, KeysStatus, MCPServer
from mcp_operator.keys import keygen, schedule, store, tokens
from mcp_operator.keys.keygen import KeyMaterial
from mcp_operator.keys.schedule import KeyRing, Requests, Settings
from mcp_operator.kube.client import ApiError, resource_path
from mcp_operator.reconcile.conditions import Want
from mcp_operator.reconcile.worker import PAUSE_ANNOTATION, ServerWorker, Shared
from mcp_operator.render import auth as render_auth
from mcp_operator.render import meta

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ROTATE_ANNOTATION = f"{GROUP}/rotate-keys"
REVOKE_ANNOTATION = f"{GROUP}/revoke-kid"
POLL_SECONDS = 10.0  # tampering with the Secret/ConfigMap is noticed within this
TICK_SECONDS = 0.5  # cheap in-memory checks (annotations, deadlines) run this often
IDLE_SECONDS = 2.0  # auth off: turning it on is noticed within this (1,000 idle loops wake less)
PENDING_RECHECK_SECONDS = 1.0


def install(shared: Shared) -> None:
    shared.companions.append(lambda worker: KeysLoop(worker).run())


def settings_of(server: MCPServer) -> Settings:
    auth = server.spec.auth
    return Settings(
        algorithm=auth.algorithm,
        every=parse_duration(auth.rotation.every),
        publish_ahead=parse_duration(auth.rotation.publish_ahead),
        token_ttl=parse_duration(auth.token_ttl),
        leeway=parse_duration(auth.leeway),
    )


def requests_of(body: Obj) -> Requests:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return Requests(
        rotate=annotations.get(ROTATE_ANNOTATION) or None,
        revoke_kid=(annotations.get(REVOKE_ANNOTATION) or "").strip() or None,
    )


def live_kids(config_map: Obj | None) -> frozenset[str]:
    """The kids the published JWKS really contains (garbage reads as none)."""
    raw = ((config_map or {}).get("data") or {}).get(render_auth.JWKS_FILE)
    try:
        doc = json.loads(raw) if raw else {}
        return frozenset(str(k["kid"]) for k in doc.get("keys") or [] if "kid" in k)
    except (ValueError, TypeError, AttributeError):
        return frozenset()


def _expiry(value: str) -> float:
    """An entry's expiry (Unix seconds); unreadable entries count as expired."""
    try:
        return float(value)
    except ValueError:
        return float("-inf")


@dataclass
class _ProbeToken:
    kid: str
    value: str
    renew_at: float


class KeysLoop:
    """Runs the schedule for one MCPServer while ``spec.auth.enabled``."""

    def __init__(self, worker: ServerWorker) -> None:
        self.worker = worker
        self.shared = worker.shared
        self.ring: KeyRing | None = None
        self.materials: dict[str, KeyMaterial] = {}
        self.next_poll = 0.0
        self.problem: str | None = None  # the unreadable-Secret reason last announced
        self.regenerated: str | None = None
        self.probe: _ProbeToken | None = None
        self.failures = 0
        worker.probe_token = self.probe_token

    # -- loop -------------------------------------------------------------------------------

    async def run(self) -> None:
        while True:
            server = None
            try:
                server = self._server()
                if server is not None and self._due(server):
                    await self.sync(server)
                    self.failures = 0
            except Exception as exc:  # never die; the message names no key material
                await self._report_failure(exc)
            await asyncio.sleep(TICK_SECONDS if server is not None else IDLE_SECONDS)

    async def _report_failure(self, exc: Exception) -> None:
        """Back off exponentially and say why in KeysReady (e.g. RBAC refused a write)."""
        self.failures += 1
        delay = min(60.0, 2.0**self.failures)
        self.next_poll = time.monotonic() + delay
        log.warning("signing keys of %s/%s: pass failed: %r", *self.worker.key, exc)
        detail = exc.message if isinstance(exc, ApiError) else type(exc).__name__
        message = f"could not sync signing keys (retry in {delay:.0f}s): {detail}"[:1000]
        metrics.SIGNING_KEYS_READY.labels(*self.worker.key).set(0)
        with contextlib.suppress(Exception):
            await self._set_status(None, Want("KeysReady", "False", "KeysSyncFailed", message))

    def _server(self) -> MCPServer | None:
        server = self.worker.server
        annotations = self.worker.body["metadata"].get("annotations") or {}
        if server is None or not server.spec.auth.enabled:
            return None
        return None if annotations.get(PAUSE_ANNOTATION) == "disabled" else server

    def _due(self, server: MCPServer) -> bool:
        """A pass is needed: poll period, a schedule deadline, a new annotation value, or a
        key waiting to be seen in the ConfigMap (never while backing off after a failure)."""
        if time.monotonic() >= self.next_poll:
            return True
        if self.failures or self.ring is None:
            return False
        ring, settings = self.ring, settings_of(server)
        requests = requests_of(self.worker.body)
        if requests.rotate not in (None, ring.last_rotate_request):
            return True
        if requests.revoke_kid not in (None, ring.last_revoke_request):
            return True
        deadline = schedule.next_deadline(ring, settings)
        return deadline is not None and self.shared.clock() >= deadline

    # -- one pass ---------------------------------------------------------------------------

    async def sync(self, server: MCPServer) -> None:
        self.next_poll = time.monotonic() + POLL_SECONDS
        namespace = self.worker.key[0]
        client = self.shared.client
        secret = await client.get(
            "v1", "Secret", namespace, render_auth.signing_secret_name(server)
        )
        materials: dict[str, KeyMaterial] = {}
        if secret is None:
            # Counting on from status makes a regeneration an "emergency", not a first key.
            ring, version = KeyRing(rotations=self.worker.status.keys.rotations), None
            self._note_lost_secret()
        else:
            try:
                ring, materials = store.decode(secret.get("data"))
            except store.UnreadableKeys as exc:
                await self._report_unreadable(str(exc))
                return
            version = secret["metadata"].get("resourceVersion")
        self.problem = None
        config_map = await client.get(
            "v1", "ConfigMap", namespace, render_auth.jwks_config_map_name(server)
        )
        await self._decide_and_write(server, ring, materials, version, config_map)

    async def _decide_and_write(
        self,
        server: MCPServer,
        ring: KeyRing,
        materials: dict[str, KeyMaterial],
        version: str | None,
        config_map: Obj | None,
    ) -> None:
        fresh: dict[str, KeyMaterial] = {}

        def new_kid(alg: str) -> str:
            # always settings.algorithm, i.e. spec.auth.algorithm (validated)
            material = keygen.generate(cast(keygen.Algorithm, alg))
            fresh[material.kid] = material
            return material.kid

        settings, now = settings_of(server), self.shared.clock()
        requests = requests_of(self.worker.body)
        plan = schedule.decide(ring, settings, now, live_kids(config_map), requests, new_kid)
        kept = {k: v for k, v in {**materials, **fresh}.items() if k in plan.ring.kids()}
        changed = plan.ring != ring or version is None
        if changed and not await self._write_secret(server, plan.ring, kept, version):
            return
        self.ring, self.materials = plan.ring, kept
        await self._apply_jwks(server, config_map)
        await self._prune_revoked(server, settings, now)
        if any(k.published is None for k in plan.ring.keys):
            self.next_poll = time.monotonic() + PENDING_RECHECK_SECONDS
        self._announce(plan.events)
        await self._report(server, settings, now)

    async def _write_secret(
        self,
        server: MCPServer,
        ring: KeyRing,
        materials: dict[str, KeyMaterial],
        version: str | None,
    ) -> bool:
        """Create or replace the Secret; False when someone else wrote it first."""
        body = self._secret_body(server, ring, materials, version)
        client = self.shared.client
        try:
            if version is None:
                await client.create(body)
            else:
                path = resource_path("v1", "Secret", self.worker.key[0], body["metadata"]["name"])
                await client.request("PUT", path, body=body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            log.info("signing keys of %s/%s changed concurrently; re-reading", *self.worker.key)
            self.next_poll = 0.0
            return False
        return True

    def _secret_body(
        self,
        server: MCPServer,
        ring: KeyRing,
        materials: dict[str, KeyMaterial],
        version: str | None,
    ) -> Obj:
        name = render_auth.signing_secret_name(server)
        metadata = meta.metadata(
            server, name, "signing-keys", self.worker.body["metadata"].get("uid")
        )
        metadata["annotations"] = {
            f"{GROUP}/description": "JWT signing keys and their rotation schedule; "
            "written only by mcp-operator (see status.keys)"
        }
        if version is not None:
            metadata["resourceVersion"] = version
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "data": store.encode(ring, materials),
        }

    async def _apply_jwks(self, server: MCPServer, live: Obj | None) -> None:
        assert self.ring is not None
        document = keygen.jwks_document([self.materials[k] for k in self.ring.kids()])
        if ((live or {}).get("data") or {}).get(render_auth.JWKS_FILE) == document:
            return
        name = render_auth.jwks_config_map_name(server)
        uid = self.worker.body["metadata"].get("uid")
        await self.shared.client.apply(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta.metadata(server, name, "jwks", uid),
                "data": {render_auth.JWKS_FILE: document},
            }
        )
        self.next_poll = time.monotonic() + PENDING_RECHECK_SECONDS

    async def _prune_revoked(self, server: MCPServer, settings: Settings, now: datetime) -> None:
        """The token revocation list (``mcp-operator token --revoke`` adds ``jti: exp``):
        created empty if missing; entries whose token has expired (plus leeway) are dropped,
        so the list stays bounded. A JSON merge patch removes only those keys, so a
        revocation added concurrently is never lost."""
        namespace, client = self.worker.key[0], self.shared.client
        name = render_auth.revoked_config_map_name(server)
        live = await client.get("v1", "ConfigMap", namespace, name)
        if live is None:
            uid = self.worker.body["metadata"].get("uid")
            body = {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": meta.metadata(server, name, "revoked", uid),
            }
            with contextlib.suppress(ApiError):  # 409: created meanwhile — fine
                await client.create(body)
            return
        cutoff = (now - settings.leeway).timestamp()
        expired = [k for k, v in (live.get("data") or {}).items() if _expiry(v) < cutoff]
        if expired:
            patch = {"data": dict.fromkeys(expired)}
            await client.patch("v1", "ConfigMap", namespace, name, patch)

    # -- reporting --------------------------------------------------------------------------

    def _note_lost_secret(self) -> None:
        if self.worker.status.keys.published_kids:
            lost = ", ".join(self.worker.status.keys.published_kids)
            self.regenerated = (
                f"the Secret of signing keys was deleted; new keys generated, tokens of "
                f"kid(s) {lost} no longer verify"
            )
            self._event("Warning", "SigningKeysRegenerated", self.regenerated)

    async def _report_unreadable(self, reason: str) -> None:
        message = (
            f"Secret {self.worker.key[1]}-signing-keys is unreadable: {reason}; not replaced "
            "(restore it, or delete it to generate new keys); the published JWKS keeps serving"
        )
        if self.problem != reason:
            self._event("Warning", "KeysUnreadable", message)
        self.problem = reason
        metrics.SIGNING_KEYS_READY.labels(*self.worker.key).set(0)
        await self._set_status(None, Want("KeysReady", "False", "KeysUnreadable", message))

    def _announce(self, events: list[schedule.Event]) -> None:
        for event in events:
            self._event("Warning" if event.warning else "Normal", event.reason, event.message)
            log.info("signing keys of %s/%s: %s", *self.worker.key, event.message)
            if event.rotation is not None:
                metrics.SIGNING_KEY_ROTATIONS.labels(*self.worker.key, event.rotation).inc()
                if event.rotation in ("scheduled", "manual", "algorithm"):
                    self.regenerated = None  # a normal rotation since: back to KeysActive

    def _event(self, kind: str, reason: str, message: str) -> None:
        self.shared.post_event(self.worker.body, kind, reason, message)

    async def _report(self, server: MCPServer, settings: Settings, now: datetime) -> None:
        assert self.ring is not None
        ring, key = self.ring, self.worker.key
        active, pending = ring.active, ring.next
        upcoming = schedule.next_rotation(ring, settings)
        keys = KeysStatus(
            active_kid=active.kid if active else None,
            next_kid=pending.kid if pending else None,
            published_kids=ring.kids(),
            last_rotation_time=ring.last_rotation,
            next_rotation_time=upcoming,
            rotations=ring.rotations,
            last_rotate_request=ring.last_rotate_request,
            revoked_kids=list(ring.revoked),
        )
        if active is not None and active.activated is not None:
            metrics.SIGNING_KEY_AGE.labels(*key).set((now - active.activated).total_seconds())
        if upcoming is not None:
            metrics.SIGNING_KEY_NEXT_ROTATION.labels(*key).set(upcoming.timestamp())
        metrics.SIGNING_KEYS_PUBLISHED.labels(*key).set(len(ring.keys))
        metrics.SIGNING_KEYS_READY.labels(*key).set(1)
        await self._set_status(keys, self._ready_condition(ring))

    def _ready_condition(self, ring: KeyRing) -> Want:
        active = ring.active
        summary = f"kid {active.kid if active else '-'} signs; {len(ring.keys)} key(s) published"
        if self.regenerated:
            return Want("KeysReady", "True", "KeysRegenerated", f"{self.regenerated}; {summary}")
        return Want("KeysReady", "True", "KeysActive", summary)

    async def _set_status(self, keys: KeysStatus | None, condition: Want) -> None:
        async with self.worker.lock:
            if keys is not None:
                self.worker.status = self.worker.status.model_copy(update={"keys": keys})
            self.worker.keys_conditions = [condition]
            await self.worker.write_status()

    # -- the probe's token ------------------------------------------------------------------

    def probe_token(self) -> str | None:
        """A short-lived token for the MCP probe (subject ``system:mcp-operator:probe``),
        minted with the active key and renewed at half its lifetime or on rotation."""
        server, ring = self.worker.server, self.ring
        active = ring.active if ring is not None else None
        if server is None or not server.spec.auth.enabled or active is None:
            return None
        material = self.materials.get(active.kid)
        if material is None:
            return None
        if self.probe and self.probe.kid == active.kid and time.monotonic() < self.probe.renew_at:
            return self.probe.value
        ttl = min(tokens.PROBE_TTL, parse_duration(server.spec.auth.token_ttl))
        value = tokens.mint(
            material,
            iss=tokens.issuer(server),
            aud=tokens.audience(server),
            sub=tokens.PROBE_SUBJECT,
            ttl=ttl,
            now=self.shared.clock(),
        )
        self.probe = _ProbeToken(active.kid, value, time.monotonic() + ttl.total_seconds() / 2)
        return value


__all__ = ["REVOKE_ANNOTATION", "ROTATE_ANNOTATION", "KeysLoop", "install"]
