"""Services: one stable endpoint that follows the active tier, and one per tier.

Failover is a change of the stable Service's selector; the per-tier Services give
humans and dashboards a fixed handle on each tier regardless of which one is active.
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.models import MCPServer, Tier
from mcp_operator.render import meta
from mcp_operator.render.context import RenderContext

Obj = dict[str, Any]


def _service(server: MCPServer, name: str, component: str, tier: Tier, ctx: RenderContext) -> Obj:
    port = {
        "name": meta.MCP_PORT_NAME,
        "port": server.spec.port,
        "targetPort": meta.MCP_PORT_NAME,
        # Set explicitly: server-side apply keys ports by port+protocol and older API
        # servers fail with HTTP 500 when the protocol is left to defaulting.
        "protocol": "TCP",
    }
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(server, name, component, ctx.owner_uid, tier),
        "spec": {
            "type": "ClusterIP",
            "selector": meta.selector(server, tier),
            "ports": [port],
            # Always set (also None): a removed ClientIP must be reset, not left behind.
            "sessionAffinity": server.spec.service.session_affinity,
        },
    }


def stable_service(server: MCPServer, ctx: RenderContext) -> Obj:
    svc = _service(server, meta.child_name(server), "endpoint", ctx.active_tier, ctx)
    # The stable Service's tier label is what it *selects*, kept out of its own labels so
    # that a label selector for a tier's objects does not pick it up.
    del svc["metadata"]["labels"][meta.TIER_LABEL]
    return svc


def tier_service(server: MCPServer, tier: Tier, ctx: RenderContext) -> Obj:
    return _service(server, meta.child_name(server, tier), tier, tier, ctx)
