"""Placeholder replaced by the health loop integration."""

from __future__ import annotations

from mcp_operator.reconcile.worker import Shared


def install(shared: Shared) -> None:
    return None
