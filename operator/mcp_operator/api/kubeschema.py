"""Check embedded Kubernetes sub-objects against the real Kubernetes schemas, offline.

An ``MCPServer`` embeds Kubernetes types (``env``, ``resources``, probes, affinity, volumes,
security contexts, ...). The CRD keeps them free-form, so without this check ``memory: lots``
or ``effect: NoSchedul`` would pass admission and fail later, on the Deployment, as
``ApplyFailed``. The definitions are vendored from ``kubernetes-validate``'s strict schemas
(only the reachable subset, ~100 kB instead of the package's 108 MB; regenerate with
``hack/vendor_k8s_schemas.py``) and checked by a small validator here, which reports every
problem with its path rather than stopping at the first. A few rules the OpenAPI schema does
not carry but the API server enforces (quantity syntax, enum-like strings) are added.
"""

from __future__ import annotations

import json
import re
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_VERSION = "1.37.0"
SCHEMA_FILE = Path(__file__).with_name("k8s-schemas.json")
CORE = "io.k8s.api.core.v1."

# The embedded types, by the short name used in the models.
ROOTS = {
    name: CORE + name
    for name in (
        "EnvVar",
        "EnvFromSource",
        "ResourceRequirements",
        "Probe",
        "Affinity",
        "Toleration",
        "Volume",
        "VolumeMount",
        "PodSecurityContext",
        "SecurityContext",
        "LocalObjectReference",
        "TopologySpreadConstraint",
    )
}

# Kubernetes' quantity grammar (resource.Quantity), e.g. 100m, 1.5Gi, 1e3.
QUANTITY = re.compile(
    r"^[+]?([0-9]+(\.[0-9]*)?|\.[0-9]+)(([KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$"
)

# String fields the API server restricts to a set of values although the schema says
# only "string": (definition, property) -> allowed values.
ENUMS: dict[tuple[str, str], tuple[str, ...]] = {
    (CORE + "Toleration", "effect"): ("NoSchedule", "PreferNoSchedule", "NoExecute", ""),
    (CORE + "Toleration", "operator"): ("Exists", "Equal", ""),
    (CORE + "NodeSelectorRequirement", "operator"): (
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
        "Gt",
        "Lt",
    ),
    ("io.k8s.apimachinery.pkg.apis.meta.v1.LabelSelectorRequirement", "operator"): (
        "In",
        "NotIn",
        "Exists",
        "DoesNotExist",
    ),
    (CORE + "TopologySpreadConstraint", "whenUnsatisfiable"): ("DoNotSchedule", "ScheduleAnyway"),
    (CORE + "SeccompProfile", "type"): ("RuntimeDefault", "Unconfined", "Localhost"),
    (CORE + "HTTPGetAction", "scheme"): ("HTTP", "HTTPS"),
    (CORE + "PodSecurityContext", "fsGroupChangePolicy"): ("OnRootMismatch", "Always"),
    (CORE + "EmptyDirVolumeSource", "medium"): ("", "Memory", "HugePages"),
}

# Strings the API server refuses when empty although the schema allows "".
NON_EMPTY = {
    (CORE + "EnvVar", "name"),
    (CORE + "Volume", "name"),
    (CORE + "VolumeMount", "name"),
    (CORE + "VolumeMount", "mountPath"),
}

Problem = tuple[str, str]  # (path relative to the checked value, message)


def extract(definitions: dict[str, Any], roots: dict[str, str]) -> dict[str, Any]:
    """The definitions reachable from ``roots``, descriptions removed (used by the vendoring
    script and its drift test)."""
    out: dict[str, Any] = {}
    stack = list(roots.values())
    while stack:
        name = stack.pop()
        if name in out:
            continue
        out[name] = _strip(definitions[name])
        stack += _refs(out[name])
    return dict(sorted(out.items()))


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip(v) for k, v in node.items() if k != "description"}
    if isinstance(node, list):
        return [_strip(v) for v in node]
    return node


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        own = [node["$ref"].rsplit("/", 1)[-1]] if "$ref" in node else []
        return own + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


@cache
def definitions() -> dict[str, Any]:
    return dict(json.loads(SCHEMA_FILE.read_text())["definitions"])


def check(kind: str, value: Any) -> list[Problem]:
    """Every problem of ``value`` as a Kubernetes ``kind`` (a key of :data:`ROOTS`)."""
    problems: list[Problem] = []
    _check(ROOTS[kind], {"$ref": "#/$defs/" + ROOTS[kind]}, value, "", problems)
    if kind == "ResourceRequirements" and not problems:
        problems += _requests_within_limits(value)
    return problems


_SUFFIX = {
    "": 1.0,
    "n": 1e-9,
    "u": 1e-6,
    "m": 1e-3,
    "k": 1e3,
    "M": 1e6,
    "G": 1e9,
    "T": 1e12,
    "P": 1e15,
    "E": 1e18,
    "Ki": 2.0**10,
    "Mi": 2.0**20,
    "Gi": 2.0**30,
    "Ti": 2.0**40,
    "Pi": 2.0**50,
    "Ei": 2.0**60,
}


def quantity_value(value: Any) -> float:
    """A quantity (``500m``, ``1.5Gi``, ``2``, ``1e3``) as a number; assumes it is valid."""
    if isinstance(value, int | float):
        return float(value)
    text = str(value).lstrip("+")
    match = re.match(r"^([0-9.]+)([eE][+-]?[0-9]+)?([a-zA-Z]*)$", text)
    if not match:
        return 0.0
    number = float(match.group(1) + (match.group(2) or ""))
    return number * _SUFFIX.get(match.group(3), 1.0)


def _requests_within_limits(value: dict[str, Any]) -> list[Problem]:
    """The API server refuses a request above its limit; say so before anything is applied."""
    requests, limits = value.get("requests") or {}, value.get("limits") or {}
    return [
        (f"requests.{name}", f"must not exceed limits.{name} ({limits[name]})")
        for name, wanted in requests.items()
        if name in limits and quantity_value(wanted) > quantity_value(limits[name])
    ]


def _types(node: dict[str, Any]) -> set[str]:
    kind = node.get("type")
    if kind is None:
        return set()
    return {kind} if isinstance(kind, str) else set(kind)


_PY_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
}


def _is(value: Any, kind: str) -> bool:
    if kind == "null":
        return value is None
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False
    return isinstance(value, _PY_TYPES[kind])


def _join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    return f"{path}.{key}" if path else key


def _check(owner: str, node: dict[str, Any], value: Any, path: str, out: list[Problem]) -> None:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        if name == "io.k8s.apimachinery.pkg.api.resource.Quantity":
            _quantity(value, path, out)
            return
        if name == "io.k8s.apimachinery.pkg.util.intstr.IntOrString":
            if value is not None and not (_is(value, "string") or _is(value, "integer")):
                out.append((path, "must be an integer or a string"))
            return
        _check(name, definitions()[name], value, path, out)
        return
    types = _types(node)
    if types and not any(_is(value, t) for t in types):
        wanted = " or ".join(sorted(t for t in types if t != "null"))
        out.append((path, f"must be {_article(wanted)}, not {_describe(value)}"))
        return
    if value is None:
        return
    if "enum" in node and value not in node["enum"]:
        out.append((path, f"must be one of {', '.join(map(str, node['enum']))}"))
    if isinstance(value, dict):
        _object(owner, node, value, path, out)
    elif isinstance(value, list) and "items" in node:
        for i, item in enumerate(value):
            _check(owner, node["items"], item, _join(path, i), out)


def _object(
    owner: str, node: dict[str, Any], value: dict[str, Any], path: str, out: list[Problem]
) -> None:
    props: dict[str, Any] = node.get("properties") or {}
    for name in node.get("required") or []:
        if name not in value:
            out.append((_join(path, name), "is required"))
    extra = node.get("additionalProperties", True)
    for key, item in value.items():
        sub = _join(path, str(key))
        if key in props:
            _check(owner, props[key], item, sub, out)
            if item == "" and (owner, str(key)) in NON_EMPTY:
                out.append((sub, "must not be empty"))
            allowed = ENUMS.get((owner, str(key)))
            if allowed and isinstance(item, str) and item not in allowed:
                out.append((sub, "must be one of " + ", ".join(a or '""' for a in allowed)))
        elif extra is False:
            out.append((sub, "is not a known field"))
        elif isinstance(extra, dict):
            _check(owner, extra, item, sub, out)


def _quantity(value: Any, path: str, out: list[Problem]) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        out.append((path, f"must be a quantity such as 500m or 1Gi, not {_describe(value)}"))
    elif isinstance(value, str) and not QUANTITY.match(value):
        out.append((path, f"must be a quantity such as 500m or 1Gi, not {value!r}"))
    elif isinstance(value, int | float) and value < 0:
        out.append((path, "must not be negative"))


def _article(kind: str) -> str:
    return ("an " if kind[:1] in "aeiou" else "a ") + kind


def _describe(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    names.update({dict: "an object", list: "a list", type(None): "null"})
    return names.get(type(value), type(value).__name__)
