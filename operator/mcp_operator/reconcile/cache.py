"""The cache's credential (created once) and its status (pure).

The password lives only in the Secret ``NAME-cache-auth``. It is created when absent and
never written again by reconcile: a create that races another writer (or an operator killed
between the create and the next step) simply finds the Secret on the next pass and uses what
is there. Only its SHA-256 leaves this module (into the rendered ACL file), so no log line,
Event, status field or metric can carry the password.
"""

from __future__ import annotations

import base64
import secrets
from dataclasses import dataclass
from typing import Any, Protocol

from mcp_operator.api.models import CacheStatus, MCPServer
from mcp_operator.keys import cacherotation as rotation
from mcp_operator.keys import cachestore
from mcp_operator.keys.cachestore import read_password
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile.conditions import Want
from mcp_operator.render import cache

Obj = dict[str, Any]
PASSWORD_BYTES = 32  # token_urlsafe: 43 URL-safe characters, usable in MCP_CACHE_URL as is


class SecretClient(Protocol):
    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None: ...

    async def create(self, obj: Obj, fenced: bool = True) -> Obj: ...

    async def patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, body: Obj
    ) -> Obj: ...


@dataclass(frozen=True)
class Credential:
    """The passwords' hashes, or why there are none (a condition message)."""

    password_hash: str | None
    monitor_hash: str | None = None
    problem: str = ""
    reason: str = "CredentialInvalid"
    """CacheReady's reason when there is no hash: CredentialInvalid (the Secret's content)
    or CredentialUnavailable (the API server refused to read or create it)."""
    operator_hash: str | None = None
    extra_hashes: tuple[str, ...] = ()
    """During a password rotation: the other password Redis accepts."""
    tier_hashes: tuple[tuple[str, str], ...] = ()
    """During a password rotation: per tier, the password its pods should run."""


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


async def ensure_credential(
    client: SecretClient, server: MCPServer, owner_uid: str | None
) -> Credential:
    """Read ``NAME-cache-auth``; create it with fresh passwords when absent (409: someone
    else created it first, read theirs). An unusable existing Secret is reported, not
    replaced: replacing it would lock out every client holding the old password. Its
    ``rotation`` state (keys/cachestore.py) says which passwords Redis accepts and which
    one each tier runs while the password rotates."""
    namespace = server.metadata.namespace
    name = cache.auth_secret_name(server)
    existing = await client.get("v1", "Secret", namespace, name)
    if existing is None:
        password, monitor, operator = new_password(), new_password(), new_password()
        try:
            await client.create(cache.auth_secret(server, password, monitor, owner_uid, operator))
            return Credential(
                cache.password_hash(password),
                cache.password_hash(monitor),
                operator_hash=cache.password_hash(operator),
            )
        except ApiError as exc:
            if exc.status != 409:
                raise
        existing = await client.get("v1", "Secret", namespace, name)
        if existing is None:
            return Credential(None, problem=f"Secret {name} was created and deleted concurrently")
    existing = await _with_operator_password(client, existing, namespace, name)
    return credential_of(existing, name)


async def _with_operator_password(
    client: SecretClient, secret: Obj, namespace: str | None, name: str
) -> Obj:
    """A Secret from before rotation existed lacks the operator's Redis user: add it before
    the first render, so an upgrade changes the Redis pod template (ACL file, readiness
    probe) once -- one Redis restart, not two. A concurrent writer (409) wins; the next
    reconcile sees its Secret."""
    if read_password(secret, cache.SECRET_OPERATOR_PASSWORD_KEY) or not read_password(secret):
        return secret
    body = {
        "metadata": {"resourceVersion": secret.get("metadata", {}).get("resourceVersion")},
        "data": {cache.SECRET_OPERATOR_PASSWORD_KEY: _b64(new_password())},
    }
    try:
        return await client.patch("v1", "Secret", namespace, name, body)
    except ApiError as exc:
        if exc.status != 409:
            raise
    return await client.get("v1", "Secret", namespace, name) or secret


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def credential_of(secret: Obj, name: str) -> Credential:
    """The hashes an existing Secret gives the renderers (pure)."""
    monitor_stored = read_password(secret, cache.SECRET_MONITOR_PASSWORD_KEY)
    try:
        stored = cachestore.decode(secret)
    except cachestore.UnreadableState as exc:
        # Fail static: which passwords Redis must accept and which one each tier runs are
        # unknown (mid-rotation, the retiring one is only in that entry). No hash: the
        # reconcile keeps the cache's applied config and the tiers' live stamps as they are.
        return Credential(
            None,
            problem=f"Secret {name}: {exc}; the cache keeps its last applied configuration",
        )
    state = stored.state if stored else None
    if state is None or monitor_stored is None:
        keys = f"'{cache.SECRET_PASSWORD_KEY}' and '{cache.SECRET_MONITOR_PASSWORD_KEY}'"
        return Credential(
            None,
            problem=f"Secret {name} lacks usable {keys} keys; delete it to have new "
            "passwords generated",
        )
    operator = read_password(secret, cache.SECRET_OPERATOR_PASSWORD_KEY)
    return Credential(
        state.current,
        cache.password_hash(monitor_stored),
        operator_hash=cache.password_hash(operator) if operator else None,
        extra_hashes=tuple(sorted(rotation.accepted(state) - {state.current})),
        tier_hashes=tuple((t, rotation.tier_hash(state, t)) for t in ("primary", "backup"))
        if state.previous
        else (),
    )


def cache_status(
    server: MCPServer, deployment: Obj | None, credential: Credential | None
) -> tuple[CacheStatus, Want | None]:
    """``status.cache`` and ``CacheReady`` from the observed cache Deployment.

    Ready means the Deployment has a ready pod, and its readiness probe is an authenticated
    PING: a ready pod answers the MCP pods' credentials. None when the cache is off.
    """
    if not server.spec.cache.enabled:
        return CacheStatus(), None
    base = {"endpoint": cache.endpoint(server), "secret_name": cache.auth_secret_name(server)}
    if credential is not None and credential.password_hash is None:
        want = Want("CacheReady", "False", credential.reason, credential.problem)
        return CacheStatus(ready=False, **base), want
    ready = int(((deployment or {}).get("status") or {}).get("readyReplicas") or 0)
    if deployment is None:
        want = Want(
            "CacheReady", "False", "CacheNotCreated", "the cache Deployment is not there yet"
        )
    elif ready >= 1:
        want = Want(
            "CacheReady", "True", "CacheAvailable", "the cache answers an authenticated PING"
        )
    else:
        want = Want(
            "CacheReady",
            "False",
            "CacheUnavailable",
            "the cache pod is not ready (starting, or not answering an authenticated PING); "
            "MCP pods keep serving without it",
        )
    return CacheStatus(ready=ready >= 1, **base), want
