"""Names, labels and metadata shared by every child object.

Names are deterministic (no ``generateName``) so that a restarted operator finds what it
created. The parent's own labels are deliberately *not* copied: Argo CD tracks ownership
by label, and copied tracking labels make it claim the children as its own.
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.models import API_VERSION, GROUP, KIND, MCPServer, Tier

SERVER_LABEL = f"{GROUP}/server"
TIER_LABEL = f"{GROUP}/tier"
MANAGED_BY = "mcp-operator"
HEALTH_GATE = f"{GROUP}/mcp-healthy"
MCP_PORT_NAME = "mcp"
# Stamped on each pod so the operator probes a pod the way it was created: a rollout that
# changes spec.path or health.scheme is then hitless (old pods keep being probed as before).
PROBE_PATH_ANNOTATION = f"{GROUP}/probe-path"
PROBE_SCHEME_ANNOTATION = f"{GROUP}/probe-scheme"


def child_name(server: MCPServer, suffix: str = "") -> str:
    name = server.metadata.name
    return f"{name}-{suffix}" if suffix else name


def selector(server: MCPServer, tier: Tier) -> dict[str, str]:
    """The small, immutable label subset that Deployment and Service selectors use."""
    return {SERVER_LABEL: server.metadata.name, TIER_LABEL: tier}


def labels(server: MCPServer, component: str, tier: Tier | None = None) -> dict[str, str]:
    """Kubernetes recommended labels plus the operator's own."""
    out = {
        "app.kubernetes.io/name": "mcp-server",
        "app.kubernetes.io/instance": server.metadata.name,
        "app.kubernetes.io/component": component,
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/part-of": "mcp-operator",
        SERVER_LABEL: server.metadata.name,
    }
    if tier is not None:
        out[TIER_LABEL] = tier
    return out


def metadata(
    server: MCPServer, name: str, component: str, owner_uid: str | None, tier: Tier | None = None
) -> dict[str, Any]:
    """Object metadata with an owner reference (controller=true) when the owner is known."""
    meta: dict[str, Any] = {"name": name}
    if server.metadata.namespace is not None:  # absent stays absent (kustomize, Argo CD)
        meta["namespace"] = server.metadata.namespace
    meta["labels"] = labels(server, component, tier)
    if owner_uid:
        meta["ownerReferences"] = [
            {
                "apiVersion": API_VERSION,
                "kind": KIND,
                "name": server.metadata.name,
                "uid": owner_uid,
                "controller": True,
                # No blockOwnerDeletion: background deletion needs none, and setting it
                # would need `update` on mcpservers/finalizers (least privilege).
            }
        ]
    return meta


def endpoint(server: MCPServer) -> str:
    """The stable in-cluster URL: the Service that always selects the active tier."""
    meta, spec = server.metadata, server.spec
    namespace = meta.namespace or "default"
    return f"http://{meta.name}.{namespace}.svc:{spec.port}{spec.path}"
