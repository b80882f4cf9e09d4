"""Pure status computation: observed children + reconcile outcome → status fields.

Kept apart from the I/O so that what ``kubectl get mcps`` says can be unit-tested
against every combination a 3 a.m. operator might meet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from mcp_operator.api.models import MCPServer, TierStatus
from mcp_operator.reconcile.conditions import Want
from mcp_operator.render import meta

Obj = dict[str, Any]
OutcomeKind = Literal["Applied", "InvalidSpec", "MissingReference", "ApplyFailed", "Paused"]


@dataclass(frozen=True)
class Outcome:
    """What the last reconcile achieved; ``reason`` doubles as the condition reason."""

    reason: OutcomeKind
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == "Applied"


def tier_counts(deployment: Obj | None) -> tuple[int, int]:
    """(desired, ready) replicas of a tier's Deployment as last observed."""
    if deployment is None:
        return 0, 0
    desired = int((deployment.get("spec") or {}).get("replicas") or 0)
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    return desired, ready


def tier_status(old: TierStatus, deployment: Obj | None) -> TierStatus:
    desired, ready = tier_counts(deployment)
    summary = f"{ready}/{desired}" if deployment is not None else "-"
    return old.model_copy(update={"replicas": desired, "ready_replicas": ready, "summary": summary})


def reconciled_condition(outcome: Outcome, generation: int | None) -> Want:
    if outcome.ok:
        return Want("Reconciled", "True", "Applied", f"all children match generation {generation}")
    return Want("Reconciled", "False", outcome.reason, outcome.message)


def ready_condition(
    server: MCPServer, outcome: Outcome, active: TierStatus, no_healthy_tier: bool
) -> Want:
    """The summary condition GitOps tools key on."""
    if outcome.reason == "Paused":
        return Want("Ready", "Unknown", "Paused", "reconciliation is disabled by annotation")
    if not outcome.ok:
        return Want("Ready", "False", outcome.reason, outcome.message)
    if no_healthy_tier:
        return Want(
            "Ready",
            "False",
            "NoHealthyTier",
            "no tier has enough pods answering MCP; traffic has nowhere to go",
        )
    if active.ready_replicas == 0:
        return Want("Ready", "False", "NoReadyPods", "the active tier has no ready pods yet")
    return Want(
        "Ready",
        "True",
        "Available",
        f"{active.ready_replicas} ready pod(s) serve {meta.endpoint(server)}",
    )
