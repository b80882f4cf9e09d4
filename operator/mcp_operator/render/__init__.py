"""Pure renderers: ``MCPServer`` + observed context → the desired child objects.

No I/O, no clock, no randomness: the same inputs always give the same objects, which is
what makes ``mcp-operator render`` an exact preview of what the operator applies.
"""

from __future__ import annotations

import copy
from typing import Any

from mcp_operator.api.models import MCPServer
from mcp_operator.render import cache, network, workload
from mcp_operator.render.context import Capabilities, RenderContext

__all__ = ["Capabilities", "RenderContext", "render"]


def render(server: MCPServer, ctx: RenderContext | None = None) -> list[dict[str, Any]]:
    """Every child object, in apply order (identity, workloads, traffic, then the cache)."""
    ctx = ctx or RenderContext()
    tiers = workload.tiers(server)
    objects: list[dict[str, Any] | None] = [workload.service_account(server, ctx)]
    objects += [workload.deployment(server, tier, ctx) for tier in tiers]
    objects += [workload.pod_disruption_budget(server, tier, ctx) for tier in tiers]
    objects.append(network.stable_service(server, ctx))
    objects += [network.tier_service(server, tier, ctx) for tier in tiers]
    objects += cache.objects(server, ctx)
    # Deep copies: rendered objects must not alias the (frozen) spec or module defaults.
    return [copy.deepcopy(obj) for obj in objects if obj is not None]
