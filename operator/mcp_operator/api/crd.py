"""Generate the ``MCPServer`` CustomResourceDefinition from the pydantic models.

Kubernetes wants a *structural* schema: every node typed, no ``$ref``, no ``anyOf`` for
optional values. Pydantic emits JSON Schema with all three, so this module inlines
references, turns ``X | None`` into ``nullable: true``, marks free-form Kubernetes objects
with ``x-kubernetes-preserve-unknown-fields`` and attaches each model's cross-field rules as
CEL ``x-kubernetes-validations``. The output is checked in under ``crds/`` and a test fails
when the two drift.
"""

from __future__ import annotations

import json
from typing import Any

import yaml
from pydantic import BaseModel

from mcp_operator.api import models
from mcp_operator.api.rules import RuledModel

JSON = dict[str, Any]
_DROP_KEYS = {"title", "description_", "$defs"}

PRINTER_COLUMNS: list[JSON] = [
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Active", "type": "string", "jsonPath": ".status.activeTier"},
    {"name": "Primary", "type": "string", "jsonPath": ".status.tiers.primary.summary"},
    {"name": "Backup", "type": "string", "jsonPath": ".status.tiers.backup.summary"},
    {
        "name": "Reason",
        "type": "string",
        "priority": 1,
        "jsonPath": '.status.conditions[?(@.type=="Ready")].reason',
    },
    {"name": "Endpoint", "type": "string", "priority": 1, "jsonPath": ".status.endpoint"},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def _model_classes(root: type[BaseModel]) -> dict[str, type[BaseModel]]:
    """Every model reachable from ``root``, by the name pydantic uses in ``$defs``."""
    found: dict[str, type[BaseModel]] = {}
    stack = [root]
    while stack:
        cls = stack.pop()
        if cls.__name__ in found:
            continue
        found[cls.__name__] = cls
        for field in cls.model_fields.values():
            for arg in _type_args(field.annotation):
                if isinstance(arg, type) and issubclass(arg, BaseModel):
                    stack.append(arg)
    return found


def _type_args(annotation: Any) -> list[Any]:
    args = list(getattr(annotation, "__args__", ()) or ())
    nested = [a for arg in args for a in _type_args(arg)]
    return [annotation, *args, *nested]


class _Structurer:
    """Rewrites one pydantic JSON schema into a structural OpenAPI v3 schema."""

    def __init__(self, schema: JSON, classes: dict[str, type[BaseModel]]) -> None:
        self.defs: JSON = schema.get("$defs", {})
        self.classes = classes

    def convert(self, node: JSON, def_name: str | None = None) -> JSON:
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            inlined = self.convert(self.defs[name], def_name=name)
            # The field's own docstring says more about this use than the class docstring.
            if "description" in node:
                inlined["description"] = _description(node["description"])
            return inlined
        if "anyOf" in node:
            return self._nullable(node)
        out: JSON = {}
        kind = node.get("type")
        if kind == "object" or "properties" in node:
            out = self._object(node, def_name)
        elif kind == "array":
            out = {"type": "array", "items": self.convert(node.get("items", {}))}
        elif "const" in node:
            out = {"type": "string", "enum": [node["const"]]}
        elif kind is None:
            out = {"x-kubernetes-preserve-unknown-fields": True}
        else:
            out = {"type": kind}
        for key in (
            "enum",
            "format",
            "pattern",
            "minimum",
            "maximum",
            "minLength",
            "maxLength",
            "minItems",
            "maxItems",
            "default",
            "description",
        ):
            if key in node and key not in out:
                out[key] = node[key]
        if out.get("format") in {"date-time"}:
            out["type"] = "string"
        if "description" in out:
            out["description"] = _description(out["description"])
        return out

    def _nullable(self, node: JSON) -> JSON:
        options = [o for o in node["anyOf"] if o.get("type") != "null"]
        if len(options) != 1:
            raise ValueError(f"cannot make a structural schema of {node}")
        out = self.convert(options[0])
        out["nullable"] = True
        if "default" in node and node["default"] is not None:
            out["default"] = node["default"]
        if "description" in node:
            out["description"] = _description(node["description"])
        return out

    def _object(self, node: JSON, def_name: str | None) -> JSON:
        props = node.get("properties")
        if props is None:
            return self._map(node)
        out: JSON = {"type": "object", "properties": {}}
        cls = self.classes.get(def_name or "")
        for name, sub in props.items():
            converted = self.convert(sub)
            default = _model_default(cls, name)
            if default is not None:
                converted["default"] = default
            out["properties"][name] = converted
        if node.get("required"):
            out["required"] = list(node["required"])
        if node.get("x-kubernetes-preserve-unknown-fields"):
            out["x-kubernetes-preserve-unknown-fields"] = True
        if cls is not None and issubclass(cls, RuledModel) and cls.__rules__:
            out["x-kubernetes-validations"] = [
                {"rule": r.cel, "message": f"{r.field}: {r.message}"} for r in cls.__rules__
            ]
        return out

    def _map(self, node: JSON) -> JSON:
        extra = node.get("additionalProperties", True)
        if extra is True or extra == {}:
            return {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
        return {"type": "object", "additionalProperties": self.convert(extra)}


def _description(text: str) -> str:
    """Docstrings are wrapped reStructuredText; `kubectl explain` wants one plain paragraph."""
    return " ".join(text.replace("``", "`").split())


def _model_default(cls: type[BaseModel] | None, alias: str) -> JSON | None:
    """The whole default of a nested model field with a default factory, spelled out, so the API
    server fills in the block when the user omits it.

    Spelled out rather than ``{}``: a current API server validates a default against the
    block's CEL rules as written (nested defaults are not applied to it first), and ``{}``
    fails every rule that reads a field ("no such key"), so the CRD would be refused.
    """
    if cls is None:
        return None
    for name, field in cls.model_fields.items():
        if (field.alias or name) == alias and field.default_factory is not None:
            ann = field.annotation
            if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
                return None
            value = field.default_factory()  # type: ignore[call-arg]
            assert isinstance(value, BaseModel)
            dumped: JSON = value.model_dump(mode="json", by_alias=True, exclude_none=True)
            return dumped
    return None


def _schema_for(model: type[BaseModel]) -> JSON:
    raw = model.model_json_schema(by_alias=True, mode="validation")
    return _Structurer(raw, _model_classes(model)).convert(raw, def_name=model.__name__)


def _without_defaults(node: Any) -> Any:
    """Status is written whole by the operator: server-side defaults there only add noise
    (and the 1.20 API server misreads an empty-string default as null)."""
    if isinstance(node, dict):
        return {k: _without_defaults(v) for k, v in node.items() if k != "default"}
    if isinstance(node, list):
        return [_without_defaults(v) for v in node]
    return node


def openapi_schema() -> JSON:
    """The CRD's ``openAPIV3Schema``."""
    spec = _schema_for(models.MCPServerSpec)
    status = _without_defaults(_schema_for(models.MCPServerStatus))
    name_rule = models.DNS1035
    return {
        "type": "object",
        "required": ["spec"],
        "properties": {
            "apiVersion": {
                "type": "string",
                "description": f"`{models.API_VERSION}`: the versioned schema of this object.",
            },
            "kind": {"type": "string", "description": f"`{models.KIND}`."},
            # Only `type: object` is allowed here; kubectl explain shows ObjectMeta's own text.
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
        "x-kubernetes-validations": [
            {
                "rule": f"self.metadata.name.size() <= {models.MAX_NAME_LENGTH}",
                "message": f"metadata.name: must be at most {models.MAX_NAME_LENGTH} characters "
                "so that every child name is a valid DNS-1035 label",
            },
            {
                "rule": f"self.metadata.name.matches('{name_rule}')",
                "message": "metadata.name: must be a DNS-1035 label (lowercase letters, digits "
                "and '-', starting with a letter)",
            },
        ],
    }


def crd() -> JSON:
    """The whole CustomResourceDefinition object."""
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{models.PLURAL}.{models.GROUP}",
            "labels": {
                "app.kubernetes.io/name": "mcp-operator",
                "app.kubernetes.io/part-of": "mcp-operator",
            },
        },
        "spec": {
            "group": models.GROUP,
            "scope": "Namespaced",
            "names": {
                "kind": models.KIND,
                "listKind": f"{models.KIND}List",
                "plural": models.PLURAL,
                "singular": "mcpserver",
                "shortNames": ["mcps"],
                "categories": ["mcp"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "schema": {"openAPIV3Schema": openapi_schema()},
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": PRINTER_COLUMNS,
                }
            ],
        },
    }


def crd_yaml() -> str:
    header = "# Generated by `mcp-operator crd` from the pydantic models. Do not edit.\n"
    # Through JSON: a schema node shared by several fields (an enum of a reused Literal)
    # would otherwise be dumped as a YAML anchor and alias.
    return header + yaml.safe_dump(json.loads(json.dumps(crd())), sort_keys=False, width=100)
