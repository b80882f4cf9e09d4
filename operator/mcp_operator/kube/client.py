"""A small async Kubernetes client on httpx: just the verbs the operator uses.

Why not the official client: it is synchronous (blocking the event loop for every object)
and its generated modules cost most of a Python operator's memory. The operator needs a
handful of verbs — server-side apply, get/list/delete, status patches, events and
discovery — and they fit here. Credentials come from the official package's *config
loader* (:mod:`mcp_operator.kube.auth`), which is small and handles kubeconfig's corners.
"""

from __future__ import annotations

import json
import re
import ssl
from collections.abc import Callable, Generator
from typing import Any

import httpx

from mcp_operator.kube.auth import (
    Credentials,
    CredentialsError,
    TokenSource,
    credentials_from_kubeconfig,
    credentials_in_cluster,
    load_credentials,
)

Obj = dict[str, Any]
FIELD_MANAGER = "mcp-operator"

# kind → (plural, namespaced). Only what the operator touches.
RESOURCES: dict[str, tuple[str, bool]] = {
    "ServiceAccount": ("serviceaccounts", True),
    "Service": ("services", True),
    "Secret": ("secrets", True),
    "ConfigMap": ("configmaps", True),
    "Pod": ("pods", True),
    "Event": ("events", True),
    "Namespace": ("namespaces", False),
    "Deployment": ("deployments", True),
    "PodDisruptionBudget": ("poddisruptionbudgets", True),
    "NetworkPolicy": ("networkpolicies", True),
    "EndpointSlice": ("endpointslices", True),
    "Lease": ("leases", True),
    "MCPServer": ("mcpservers", True),
    "PrometheusRule": ("prometheusrules", True),
    "ServiceMonitor": ("servicemonitors", True),
    "Role": ("roles", True),
    "RoleBinding": ("rolebindings", True),
    "ClusterRole": ("clusterroles", False),
    "ClusterRoleBinding": ("clusterrolebindings", False),
    "CustomResourceDefinition": ("customresourcedefinitions", False),
}


class ApiError(Exception):
    """A non-2xx answer, with the server's Status message (never the request body)."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(f"{status} {reason}: {message}")
        self.status = status
        self.reason = reason
        self.message = message


def resource_path(
    api_version: str,
    kind: str,
    namespace: str | None,
    name: str | None = None,
    subresource: str | None = None,
) -> str:
    plural, namespaced = RESOURCES[kind]
    base = "/api/v1" if api_version == "v1" else f"/apis/{api_version}"
    if namespaced and namespace:
        base += f"/namespaces/{namespace}"
    path = f"{base}/{plural}"
    if name:
        path += f"/{name}"
    if subresource:
        path += f"/{subresource}"
    return path


def ssl_context(creds: Credentials) -> ssl.SSLContext | bool:
    if creds.insecure:
        return False
    ctx = ssl.create_default_context(cafile=creds.ca_file)
    if creds.cert_file and creds.key_file:
        ctx.load_cert_chain(creds.cert_file, creds.key_file)
    return ctx


class NotLeading(ApiError):
    """A write refused locally: this replica may not act (it is not, or may no longer be,
    the leader). Raised before anything is sent."""

    def __init__(self) -> None:
        super().__init__(503, "NotLeader", "this operator replica is not the leader")


class BearerAuth(httpx.Auth):
    """The current token on every request; on a 401 the source is refreshed (a rotated
    service-account token, an expired exec credential) and the request retried once."""

    def __init__(self, tokens: TokenSource) -> None:
        self.tokens = tokens

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.tokens.current()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        response = yield request
        if response.status_code == 401:
            self.tokens.invalidate()
            fresh = self.tokens.current()
            if fresh and fresh != token:
                request.headers["Authorization"] = f"Bearer {fresh}"
                yield request


class KubeClient:
    """Async verbs over one pooled HTTP/1.1 connection set."""

    def __init__(
        self,
        creds: Credentials,
        timeout: float = 30.0,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self.creds = creds
        # The write fence (leader election): checked before every non-GET request, so no
        # caller can write once this replica may no longer act.
        self.may_write = may_write
        self._http = httpx.AsyncClient(
            base_url=creds.server,
            auth=BearerAuth(creds.tokens) if creds.tokens is not None else None,
            verify=ssl_context(creds),
            timeout=timeout,
            limits=httpx.Limits(max_connections=20, max_keepalive_connections=20),
        )

    async def close(self) -> None:
        await self._http.aclose()

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        fenced: bool = True,
    ) -> Obj:
        if fenced and method != "GET" and self.may_write is not None and not self.may_write():
            raise NotLeading()
        content = None if body is None else json.dumps(body).encode()
        response = await self._http.request(
            method,
            path,
            params=params,
            content=content,
            headers={"Content-Type": content_type} if content is not None else None,
        )
        if response.status_code >= 400:
            raise _api_error(response)
        return response.json() if response.content else {}

    def stream(
        self, method: str, path: str, *, params: dict[str, Any], timeout: httpx.Timeout
    ) -> Any:
        """A streaming response (watches): ``async with client.stream(...) as response``."""
        return self._http.stream(method, path, params=params, timeout=timeout)

    async def apply(
        self, obj: Obj, *, force: bool = True, dry_run: bool = False, subresource: str | None = None
    ) -> Obj:
        """Server-side apply under the operator's single field manager."""
        meta = obj["metadata"]
        path = resource_path(
            obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], subresource
        )
        params: dict[str, Any] = {"fieldManager": FIELD_MANAGER, "force": str(force).lower()}
        if dry_run:
            params["dryRun"] = "All"
        return await self.request(
            "PATCH", path, params=params, body=obj, content_type="application/apply-patch+yaml"
        )

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        try:
            return await self.request("GET", resource_path(api_version, kind, namespace, name))
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    async def list(
        self,
        api_version: str,
        kind: str,
        namespace: str | None = None,
        label_selector: str | None = None,
    ) -> list[Obj]:
        params = {"labelSelector": label_selector} if label_selector else None
        result = await self.request(
            "GET", resource_path(api_version, kind, namespace), params=params
        )
        return list(result.get("items", []))

    async def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, uid: str | None = None
    ) -> bool:
        """Delete (background propagation); a precondition on ``uid`` avoids deleting a
        same-named successor. Returns False when it was already gone."""
        body: Obj = {"propagationPolicy": "Background"}
        if uid:
            body["preconditions"] = {"uid": uid}
        try:
            await self.request(
                "DELETE", resource_path(api_version, kind, namespace, name), body=body
            )
        except ApiError as exc:
            if exc.status in (404, 409):
                return False
            raise
        return True

    async def patch(
        self,
        api_version: str,
        kind: str,
        namespace: str | None,
        name: str,
        body: Obj,
        *,
        subresource: str | None = None,
        content_type: str = "application/merge-patch+json",
    ) -> Obj:
        path = resource_path(api_version, kind, namespace, name, subresource)
        return await self.request("PATCH", path, body=body, content_type=content_type)

    async def create(self, obj: Obj, fenced: bool = True) -> Obj:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return await self.request("POST", path, body=obj, fenced=fenced)

    async def server_minor(self) -> int:
        """The API server's minor version (``"37"``, or ``"37+"`` on some distributions)."""
        version = await self.request("GET", "/version")
        return int(re.sub(r"\D.*$", "", str(version.get("minor", "0"))) or 0)

    async def api_versions(self) -> frozenset[str]:
        """Every served group/version, for the renderers' Capabilities."""
        core = await self.request("GET", "/api")
        groups = await self.request("GET", "/apis")
        found = {f"{v}" for v in core.get("versions", [])}
        for group in groups.get("groups", []):
            found.update(v["groupVersion"] for v in group.get("versions", []))
        return frozenset(found)


def _api_error(response: httpx.Response) -> ApiError:
    try:
        status = response.json()
        return ApiError(response.status_code, status.get("reason", ""), status.get("message", ""))
    except ValueError:
        return ApiError(response.status_code, response.reason_phrase, response.text[:200])


__all__ = [
    "ApiError",
    "Credentials",
    "CredentialsError",
    "KubeClient",
    "NotLeading",
    "credentials_from_kubeconfig",
    "credentials_in_cluster",
    "load_credentials",
]
