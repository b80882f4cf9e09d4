"""Turn raw manifests into models, or into one readable line per problem.

Pydantic's errors name Python-side locations and generic messages; users need the field
path as written in YAML (``spec.health.failureThreshold``) and the rule in plain words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mcp_operator.api.models import MCPServer


@dataclass(frozen=True)
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class InvalidSpec(ValueError):
    """An object that cannot be realised; carries every problem found."""

    def __init__(self, problems: list[Problem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


_MESSAGES = {
    "missing": "is required",
    "extra_forbidden": "is not a known field",
    "greater_than_equal": "must be ≥ {ge}",
    "less_than_equal": "must be ≤ {le}",
    "greater_than": "must be > {gt}",
    "less_than": "must be < {lt}",
    "string_too_short": "must be at least {min_length} characters",
    "string_too_long": "must be at most {max_length} characters",
    "string_pattern_mismatch": "must match {pattern}",
    "int_parsing": "must be an integer",
    "int_type": "must be an integer",
    "int_from_float": "must be an integer",
    "bool_parsing": "must be true or false",
    "bool_type": "must be true or false",
    "string_type": "must be a string",
    "list_type": "must be a list",
    "dict_type": "must be an object",
    "model_type": "must be an object",
    "model_attributes_type": "must be an object",
}


def _message(err: Any) -> str:
    ctx = err.get("ctx") or {}
    kind = err["type"]
    if kind == "literal_error":
        return f"must be one of {ctx.get('expected', '')}"
    if kind == "cross_field":
        return str(ctx["message"])
    if kind == "value_error":
        return str(err["msg"]).removeprefix("Value error, ")
    template = _MESSAGES.get(kind)
    return template.format(**ctx) if template else str(err["msg"])


def _path(err: Any) -> str:
    parts = [str(p) for p in err["loc"]]
    if err["type"] == "cross_field":
        parts.append(err["ctx"]["field"])
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(document)"


def problems_of(error: ValidationError) -> list[Problem]:
    return [Problem(_path(e), _message(e)) for e in error.errors()]


def parse_server(document: Any) -> MCPServer:
    """Validate one manifest; raise :class:`InvalidSpec` with field-path messages."""
    if not isinstance(document, dict):
        raise InvalidSpec([Problem("(document)", "must be a mapping")])
    try:
        return MCPServer.model_validate(document)
    except ValidationError as exc:
        raise InvalidSpec(problems_of(exc)) from None
