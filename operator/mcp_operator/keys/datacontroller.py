"""The data-encryption keyring loop beside each worker: I/O around the shared schedule.

The policy is :func:`mcp_operator.keys.schedule.decide` — the signing keys' schedule, not a
second one — with ``publishAhead`` = ``rotation.publishAhead`` (a new key is mounted
decrypt-only before it encrypts, so every pod can open what any pod seals) and ``hold`` =
``retention`` (a retired key keeps decrypting that long, then it is removed).

One pass: read the Secret ``NAME-data-keys`` (the truth, and also what the pods mount: a
key in it is *published*), decide, and write the whole ring back in one server-side apply
carrying the ``resourceVersion`` read (a concurrent writer makes it fail with 409 and the
pass starts over from a fresh read; an absent Secret is created, 409 if someone was
first). Then status, Events and metrics. A crash between any two steps is harmless: a key
generated but not written never existed; everything the next pass needs is in the Secret.

Key material stays in the Secret and this process' memory; logs, Events, status and
metrics name keys by ``kid`` and times only.

The Secret has no owner reference on purpose: deleting the ``MCPServer`` keeps the keys,
so re-creating it (a GitOps re-sync, a migration) does not make every stored ciphertext
unreadable. Deleting the Secret is the way to destroy them (crypto-shredding). A deleted
Secret of a live server is regenerated (Warning Event: old ciphertexts are lost); a
Secret that does not parse is not replaced but reported (``DataKeysReady=False``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import datetime, timedelta
from typing import Any

from mcp_operator import metrics
from mcp_operator.api.durations import parse_duration
from mcp_operator.api.models import (
    GROUP,
    MAX_DATA_KEYS_STATUS,
    DataKeysStatus,
    DataKeyStatus,
    MCPServer,
)
from mcp_operator.auth.datakeys import DataKey
from mcp_operator.keys import datastore, schedule
from mcp_operator.keys.schedule import KeyRing, Requests, Settings
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile.conditions import Want
from mcp_operator.reconcile.worker import PAUSE_ANNOTATION, ServerWorker, Shared
from mcp_operator.render import datakeys as render_datakeys
from mcp_operator.render import meta

log = logging.getLogger(__name__)
Obj = dict[str, Any]
ROTATE_ANNOTATION = f"{GROUP}/rotate-data-keys"
POLL_SECONDS = 10.0  # tampering with the Secret is noticed within this
TICK_SECONDS = 0.5
IDLE_SECONDS = 2.0  # encryption off: turning it on is noticed within this
PENDING_RECHECK_SECONDS = 1.0


def install(shared: Shared) -> None:
    shared.companions.append(lambda worker: DataKeysLoop(worker).run())


def settings_of(server: MCPServer) -> Settings:
    spec = server.spec.data_encryption
    return Settings(
        algorithm=datastore.ALGORITHM,
        every=parse_duration(spec.rotation.every),
        publish_ahead=parse_duration(spec.rotation.publish_ahead),
        token_ttl=parse_duration(spec.retention),  # the schedule's hold = retention
        leeway=timedelta(0),
    )


def requests_of(body: Obj) -> Requests:
    annotations = body.get("metadata", {}).get("annotations") or {}
    return Requests(rotate=annotations.get(ROTATE_ANNOTATION) or None)


def key_status(ring: KeyRing) -> list[DataKeyStatus]:
    return [
        DataKeyStatus(
            kid=k.kid,
            phase=k.phase,
            created=k.created,
            activated=k.activated,
            retired=k.retired,
            remove_after=k.remove_at,
        )
        for k in ring.keys[-MAX_DATA_KEYS_STATUS:]  # the API bounds the list; newest win
    ]


def describe(
    old: KeyRing, new: KeyRing, events: list[schedule.Event]
) -> list[tuple[str, str, str]]:
    """Events for humans, ``(type, reason, message)``, from the ring's change (the
    schedule's own messages speak of signing and the JWKS)."""
    out: list[tuple[str, str, str]] = []
    before = {k.kid: k for k in old.keys}
    for key in new.keys:
        if key.kid not in before and key.activated is None:
            out.append(("Normal", "DataKeyAdded", f"kid {key.kid} mounted, decrypt-only"))
    newly_retired = [
        k
        for k in new.keys
        if k.retired is not None and k.kid in before and not before[k.kid].retired
    ]
    for event in events:
        active = new.active
        if event.rotation is None or active is None:
            continue
        message = f"kid {active.kid} encrypts now ({event.rotation} rotation)"
        for key in newly_retired:
            until = key.remove_at.isoformat() if key.remove_at else "?"
            message += f"; kid {key.kid} decrypts until {until}"
        kind = "Warning" if event.rotation == "emergency" else "Normal"
        out.append((kind, "DataKeyRotated", message))
    kept = {k.kid for k in new.keys}
    for kid in before:
        if kid not in kept:
            message = f"kid {kid} removed after its retention; its ciphertexts no longer decrypt"
            out.append(("Normal", "DataKeyRemoved", message))
    return out


class DataKeysLoop:
    """Runs the keyring schedule for one MCPServer while ``spec.dataEncryption.enabled``."""

    def __init__(self, worker: ServerWorker) -> None:
        self.worker = worker
        self.shared = worker.shared
        self.ring: KeyRing | None = None
        self.next_poll = 0.0
        self.problem: str | None = None  # the unreadable-Secret reason last announced
        self.regenerated: str | None = None
        self.failures = 0

    async def run(self) -> None:
        while True:
            server: MCPServer | None = None
            try:
                server = self._server()
                if server is not None and self._due(server):
                    await self.sync(server)
                    self.failures = 0
                elif server is None and self._turned_off():
                    await self._forget()
            except Exception as exc:  # never die; the message names no key material
                await self._report_failure(exc)
            await asyncio.sleep(TICK_SECONDS if server is not None else IDLE_SECONDS)

    def _server(self) -> MCPServer | None:
        server = self.worker.server
        annotations = self.worker.body["metadata"].get("annotations") or {}
        if server is None or not server.spec.data_encryption.enabled:
            return None
        return None if annotations.get(PAUSE_ANNOTATION) == "disabled" else server

    def _turned_off(self) -> bool:
        """``spec.dataEncryption`` was switched off (not paused) while status mirrors it."""
        server = self.worker.server
        shown = self.worker.data_keys_conditions or self.worker.status.data_keys.keys
        return bool(shown) and server is not None and not server.spec.data_encryption.enabled

    async def _forget(self) -> None:
        """Drop DataKeysReady and status.dataKeys (no stale condition); the Secret stays."""
        self.ring, self.next_poll = None, 0.0
        async with self.worker.lock:
            self.worker.data_keys_conditions = []
            status = self.worker.status
            kept = [c for c in status.conditions if c.type != "DataKeysReady"]
            self.worker.status = status.model_copy(
                update={"data_keys": DataKeysStatus(), "conditions": kept}
            )
            await self.worker.write_status()
        for gauge in (metrics.DATA_KEY_AGE, metrics.DATA_KEYS, metrics.DATA_KEYS_READY):
            with contextlib.suppress(KeyError):
                gauge.remove(*self.worker.key)

    def _due(self, server: MCPServer) -> bool:
        if time.monotonic() >= self.next_poll:
            return True
        if self.failures or self.ring is None:
            return False
        if requests_of(self.worker.body).rotate not in (None, self.ring.last_rotate_request):
            return True
        deadline = schedule.next_deadline(self.ring, settings_of(server))
        return deadline is not None and self.shared.clock() >= deadline

    async def _report_failure(self, exc: Exception) -> None:
        """Back off exponentially and say why in DataKeysReady (e.g. RBAC refused a write)."""
        self.failures += 1
        delay = min(60.0, 2.0**self.failures)
        self.next_poll = time.monotonic() + delay
        log.warning("data keys of %s/%s: pass failed: %r", *self.worker.key, exc)
        detail = exc.message if isinstance(exc, ApiError) else type(exc).__name__
        message = f"could not sync data keys (retry in {delay:.0f}s): {detail}"[:1000]
        metrics.DATA_KEYS_READY.labels(*self.worker.key).set(0)
        with contextlib.suppress(Exception):
            await self._set_status(
                None, Want("DataKeysReady", "False", "DataKeysSyncFailed", message)
            )

    # -- one pass ---------------------------------------------------------------------------

    async def sync(self, server: MCPServer) -> None:
        self.next_poll = time.monotonic() + POLL_SECONDS
        name = render_datakeys.secret_name(server)
        secret = await self.shared.client.get("v1", "Secret", self.worker.key[0], name)
        materials: dict[str, DataKey] = {}
        lost: str | None = None
        if secret is None:
            ring, version = KeyRing(rotations=self.worker.status.data_keys.rotations), None
            lost = self._lost_secret_message()
        else:
            try:
                ring, materials = datastore.decode(secret.get("data"))
            except datastore.UnreadableKeyring as exc:
                await self._report_unreadable(str(exc))
                return
            version = secret["metadata"].get("resourceVersion")
        self.problem = None
        await self._decide_and_write(server, ring, materials, version, lost)

    async def _decide_and_write(
        self,
        server: MCPServer,
        ring: KeyRing,
        materials: dict[str, DataKey],
        version: str | None,
        lost: str | None = None,
    ) -> None:
        """Decide and write; ``lost`` (the Secret was deleted) is announced only once the
        new keys are written: a refused create (RBAC, quota, 409) retries without reposting."""
        fresh: dict[str, DataKey] = {}

        def new_kid(_alg: str) -> str:
            key = datastore.generate()
            fresh[key.kid] = key
            return key.kid

        settings, now = settings_of(server), self.shared.clock()
        mounted = frozenset(materials)  # in the Secret = on its way to every pod
        plan = schedule.decide(ring, settings, now, mounted, requests_of(self.worker.body), new_kid)
        kept = {k: v for k, v in {**materials, **fresh}.items() if k in plan.ring.kids()}
        if (plan.ring != ring or version is None) and not await self._write(
            server, plan.ring, kept, version
        ):
            return
        self.ring = plan.ring
        if lost is not None:
            self.regenerated = lost
            self.shared.post_event(self.worker.body, "Warning", "DataKeysRegenerated", lost)
        if any(k.published is None for k in plan.ring.keys):
            self.next_poll = time.monotonic() + PENDING_RECHECK_SECONDS
        for kind, reason, message in describe(ring, plan.ring, plan.events):
            self.shared.post_event(self.worker.body, kind, reason, message)
            log.info("data keys of %s/%s: %s", *self.worker.key, message)
        for event in plan.events:
            if event.rotation is not None:
                metrics.DATA_KEY_ROTATIONS.labels(*self.worker.key, event.rotation).inc()
                if event.rotation in ("scheduled", "manual"):
                    self.regenerated = None
        await self._report(settings, now)

    async def _write(
        self, server: MCPServer, ring: KeyRing, materials: dict[str, DataKey], version: str | None
    ) -> bool:
        """Create the Secret, or server-side apply it with the resourceVersion read; False
        when someone else wrote it first (the next pass re-reads)."""
        body = self._secret_body(server, ring, materials, version)
        try:
            if version is None:
                await self.shared.client.create(body)
            else:
                await self.shared.client.apply(body)
        except ApiError as exc:
            if exc.status != 409:
                raise
            log.info("data keys of %s/%s changed concurrently; re-reading", *self.worker.key)
            self.next_poll = 0.0
            return False
        return True

    def _secret_body(
        self, server: MCPServer, ring: KeyRing, materials: dict[str, DataKey], version: str | None
    ) -> Obj:
        # No owner reference: the keys outlive the MCPServer (see the module docstring).
        metadata = meta.metadata(server, render_datakeys.secret_name(server), "data-keys", None)
        metadata["annotations"] = {
            f"{GROUP}/description": "data-encryption keyring and its rotation schedule; "
            "written only by mcp-operator (see status.dataKeys); kept when the MCPServer is "
            "deleted — delete this Secret to destroy the keys"
        }
        if version is not None:
            metadata["resourceVersion"] = version  # apply fails with 409 if it moved
        return {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata,
            "type": "Opaque",
            "data": datastore.encode(ring, materials),
        }

    # -- reporting --------------------------------------------------------------------------

    def _lost_secret_message(self) -> str | None:
        """What a deleted Secret of a server that had keys cost (None for a new server)."""
        lost = [k.kid for k in self.worker.status.data_keys.keys]
        if not lost:
            return None
        return (
            f"the Secret of data keys was deleted; new keys generated, ciphertexts of "
            f"kid(s) {', '.join(lost)} no longer decrypt"
        )

    async def _report_unreadable(self, reason: str) -> None:
        message = (
            f"Secret {self.worker.key[1]}-data-keys is unreadable: {reason}; not replaced "
            "(restore it from a backup, or delete it to generate new keys and lose what the "
            "old ones encrypted); pods keep the last keyring they read"
        )
        if self.problem != reason:
            self.shared.post_event(self.worker.body, "Warning", "DataKeysUnreadable", message)
        self.problem = reason
        metrics.DATA_KEYS_READY.labels(*self.worker.key).set(0)
        await self._set_status(None, Want("DataKeysReady", "False", "DataKeysUnreadable", message))

    async def _report(self, settings: Settings, now: datetime) -> None:
        assert self.ring is not None
        ring, key = self.ring, self.worker.key
        active = ring.active
        upcoming = schedule.next_rotation(ring, settings)
        status = DataKeysStatus(
            active_kid=active.kid if active else None,
            keys=key_status(ring),
            last_rotation_time=ring.last_rotation,
            next_rotation_time=upcoming,
            rotations=ring.rotations,
            last_rotate_request=ring.last_rotate_request,
        )
        if active is not None and active.activated is not None:
            metrics.DATA_KEY_AGE.labels(*key).set((now - active.activated).total_seconds())
        metrics.DATA_KEYS.labels(*key).set(len(ring.keys))
        metrics.DATA_KEYS_READY.labels(*key).set(1)
        summary = f"kid {active.kid if active else '-'} encrypts; {len(ring.keys)} key(s) mounted"
        if self.regenerated:
            want = Want(
                "DataKeysReady", "True", "DataKeysRegenerated", f"{self.regenerated}; {summary}"
            )
        else:
            want = Want("DataKeysReady", "True", "DataKeysActive", summary)
        await self._set_status(status, want)

    async def _set_status(self, keys: DataKeysStatus | None, condition: Want) -> None:
        async with self.worker.lock:
            if keys is not None:
                self.worker.status = self.worker.status.model_copy(update={"data_keys": keys})
            self.worker.data_keys_conditions = [condition]
            await self.worker.write_status()


__all__ = ["ROTATE_ANNOTATION", "DataKeysLoop", "install"]
