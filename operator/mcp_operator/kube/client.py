"""A small async Kubernetes client on httpx: just the verbs the operator uses.

Why not the official client: it is synchronous (blocking the event loop for every object)
and its generated modules cost most of a Python operator's memory. The operator needs a
handful of verbs — server-side apply, get/list/delete, status patches, events and
discovery — and they fit here.
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

Obj = dict[str, Any]
FIELD_MANAGER = "mcp-operator"
SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")

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


@dataclass(frozen=True)
class Credentials:
    server: str
    token: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False

    def ssl_context(self) -> ssl.SSLContext | bool:
        if self.insecure:
            return False
        ctx = ssl.create_default_context(cafile=self.ca_file)
        if self.cert_file and self.key_file:
            ctx.load_cert_chain(self.cert_file, self.key_file)
        return ctx


def _materialise(data_b64: str | None, path: str | None, suffix: str) -> str | None:
    """kubeconfigs embed certs as base64; ssl wants files."""
    if path or not data_b64:
        return path
    fd, name = tempfile.mkstemp(prefix="mcp-operator-", suffix=suffix)
    with os.fdopen(fd, "wb") as out:
        out.write(base64.b64decode(data_b64))
    return name


def credentials_from_kubeconfig(path: str | None = None, context: str | None = None) -> Credentials:
    path = (
        path
        or os.environ.get("KUBECONFIG", "").split(os.pathsep)[0]
        or str(Path.home() / ".kube" / "config")
    )
    config = yaml.safe_load(Path(path).read_text())
    ctx_name = context or config["current-context"]
    ctx = next(c["context"] for c in config["contexts"] if c["name"] == ctx_name)
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == ctx["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == ctx["user"])
    return Credentials(
        server=cluster["server"].rstrip("/"),
        token=user.get("token"),
        ca_file=_materialise(
            cluster.get("certificate-authority-data"), cluster.get("certificate-authority"), ".crt"
        ),
        cert_file=_materialise(
            user.get("client-certificate-data"), user.get("client-certificate"), ".crt"
        ),
        key_file=_materialise(user.get("client-key-data"), user.get("client-key"), ".key"),
        insecure=bool(cluster.get("insecure-skip-tls-verify")),
    )


def credentials_in_cluster() -> Credentials:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    return Credentials(
        server=f"https://{host}:{port}",
        token=(SA_DIR / "token").read_text().strip(),
        ca_file=str(SA_DIR / "ca.crt"),
    )


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ and SA_DIR.exists():
        return credentials_in_cluster()
    return credentials_from_kubeconfig(kubeconfig)


class KubeClient:
    """Async verbs over one pooled HTTP/1.1 connection set."""

    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        self.creds = creds
        headers = {"Authorization": f"Bearer {creds.token}"} if creds.token else {}
        self._http = httpx.AsyncClient(
            base_url=creds.server,
            headers=headers,
            verify=creds.ssl_context(),
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
    ) -> Obj:
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

    async def create(self, obj: Obj) -> Obj:
        meta = obj["metadata"]
        path = resource_path(obj["apiVersion"], obj["kind"], meta.get("namespace"))
        return await self.request("POST", path, body=obj)

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
