"""Turn raw manifests into models, or into one readable line per problem.

Pydantic's errors name Python-side locations and generic messages; users need the field
path as written in YAML (``spec.health.failureThreshold``) and the rule in plain words.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from mcp_operator.api.models import API_VERSION, KIND, MCPServer, MCPServerSpec


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


def _join(base: str, rel: str) -> str:
    if not rel:
        return base
    if base == "(document)":
        return rel
    return base + rel if rel.startswith("[") else f"{base}.{rel}"


def _expand(err: Any) -> list[Problem]:
    """One error may carry several problems (all broken rules of a model, all problems of a
    Kubernetes sub-object): one line each."""
    ctx = err.get("ctx") or {}
    loc = err["loc"][:-1] if ctx.get("sibling") else err["loc"]
    base = _path({**err, "loc": loc})
    if err["type"] == "k8s_schema":
        return [Problem(_join(base, rel), msg) for rel, msg in ctx["problems"]]
    if err["type"] == "cross_field":
        failures = ctx.get("failures") or [(ctx["field"], ctx["message"])]
        return [Problem(_join(base, field), msg) for field, msg in failures]
    return [Problem(_path(err), _message(err))]


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
    out = ""
    for part in parts:
        out += f"[{part}]" if part.isdigit() else (f".{part}" if out else part)
    return out or "(document)"


def problems_of(error: ValidationError) -> list[Problem]:
    out: list[Problem] = []
    for err in error.errors():
        for problem in _expand(err):
            if problem not in out:
                out.append(problem)
    return out


def parse_server(document: Any) -> MCPServer:
    """Validate one manifest; raise :class:`InvalidSpec` with every problem, by field path."""
    if not isinstance(document, dict):
        what = {list: "a list", str: "a string", type(None): "empty"}.get(
            type(document), "a scalar"
        )
        raise InvalidSpec([Problem("(document)", f"must be a mapping (an object), not {what}")])
    kind = document.get("kind")
    if isinstance(kind, str) and kind != KIND:
        # A foreign object: its fields mean nothing here, so one line instead of dozens.
        raise InvalidSpec(
            [Problem("kind", f"{kind} is not {KIND} ({API_VERSION}); only {KIND}s are accepted")]
        )
    try:
        return MCPServer.model_validate(document)
    except ValidationError as exc:
        problems = problems_of(exc)
        problems += [p for p in _spec_rule_problems(document.get("spec")) if p not in problems]
        raise InvalidSpec(problems) from None


def _spec_rule_problems(spec: Any) -> list[Problem]:
    """The spec's cross-field rules, also when another spec field is invalid.

    Pydantic skips a model's rules as soon as any of its fields fails, so a user fixing an
    unrelated typo would only then learn about a rule. Each rule is checked here on just the
    fields its CEL reads (plus a placeholder image), so it is reported whenever those fields
    themselves are valid."""
    if not isinstance(spec, dict):
        return []
    out: list[Problem] = []
    for rule in MCPServerSpec.__rules__:
        fields = {m.split(".")[0] for m in re.findall(r"self\.([A-Za-z]\w*)", rule.cel)}
        subset = {k: spec[k] for k in fields if k in spec}
        try:
            MCPServerSpec.model_validate({**subset, "image": "placeholder"})
        except ValidationError as exc:
            out += [
                Problem(f"spec.{field}", message)
                for err in exc.errors()
                if err["type"] == "cross_field" and not err["loc"]
                for field, message in err["ctx"].get("failures") or []
                if field == rule.field
            ]
    return out
