"""Cross-field rules, defined once and enforced twice.

Each rule carries a CEL expression (emitted into the CRD as ``x-kubernetes-validations``, so
a current API server rejects bad objects at admission) and a Python predicate (enforced by
the models, because older API servers such as 1.20 silently drop CEL). The message is the
same on both sides, so a user sees the same words from ``kubectl apply`` and from
``mcp-operator render``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, model_validator
from pydantic_core import PydanticCustomError


@dataclass(frozen=True)
class Rule:
    """One cross-field invariant of a model.

    ``field`` names the field the message is about (relative to the model), so errors point at
    ``spec.health.timeoutSeconds`` rather than at ``spec.health``.
    """

    field: str
    cel: str
    message: str
    check: Callable[[Any], bool]


class RuledModel(BaseModel):
    """A model whose ``__rules__`` are checked after field validation."""

    __rules__: tuple[Rule, ...] = ()

    @model_validator(mode="after")
    def _check_rules(self) -> RuledModel:
        # Every broken rule at once (a user fixing one problem per run is the bug this avoids):
        # one error carrying all failures, which validation.py expands into one line each.
        failures = [(r.field, r.message) for r in type(self).__rules__ if not r.check(self)]
        if failures:
            raise PydanticCustomError(
                "cross_field",
                "{message}",
                {
                    "field": failures[0][0],
                    "message": "; ".join(f"{f}: {m}" for f, m in failures),
                    "failures": failures,
                },
            )
        return self
