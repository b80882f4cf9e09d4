"""Status conditions by Kubernetes API conventions, as pure functions.

``lastTransitionTime`` moves only when ``status`` flips; reason and message may change
without it, so ``kubectl describe`` shows how long a state has really lasted.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from mcp_operator.api.models import Condition

Status = Literal["True", "False", "Unknown"]

# Order in which conditions are listed in status (Ready first: it is the summary).
ORDER = (
    "Ready",
    "Reconciled",
    "PrimaryHealthy",
    "BackupHealthy",
    "FailedOver",
    "Misconfigured",
    "Verified",
    "KeysReady",
    "CacheReady",
    "MonitoringReady",
)


@dataclass(frozen=True)
class Want:
    """A desired condition, before transition bookkeeping."""

    type: str
    status: Status
    reason: str
    message: str = ""


def merge(
    existing: list[Condition], wanted: list[Want], generation: int | None, now: datetime
) -> list[Condition]:
    """Apply ``wanted`` over ``existing``; untouched types are kept as they are."""
    by_type = {c.type: c for c in existing}
    for want in wanted:
        old = by_type.get(want.type)
        since = old.last_transition_time if old and old.status == want.status else now
        by_type[want.type] = Condition(
            type=want.type,
            status=want.status,
            reason=want.reason,
            message=want.message or want.reason,  # 1.20 servers reject "" here as null
            last_transition_time=since,
            observed_generation=generation,
        )
    rank = {t: i for i, t in enumerate(ORDER)}
    return sorted(by_type.values(), key=lambda c: (rank.get(c.type, len(ORDER)), c.type))


def find(conditions: list[Condition], type_: str) -> Condition | None:
    return next((c for c in conditions if c.type == type_), None)
