"""The MCPServer API: defaults, the generated CRD and its agreement with the models."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mcp_operator.api import crd as crd_mod
from mcp_operator.api import models
from mcp_operator.api.durations import DURATION_PATTERN, format_duration, parse_duration
from mcp_operator.api.rules import RuledModel
from mcp_operator.api.validation import parse_server

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "mcpservers.mcp-operator.dev.yaml"
# examples/bad.yaml is the deliberately invalid one (README shows its errors).
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.stem != "bad")

JSON = dict[str, Any]


def _schema() -> JSON:
    schema: JSON = crd_mod.crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


def _walk(node: Any, path: str = "") -> list[tuple[str, JSON]]:
    """Every schema node (properties, items, additionalProperties) with its path."""
    out: list[tuple[str, JSON]] = [(path, node)]
    for name, sub in (node.get("properties") or {}).items():
        out += _walk(sub, f"{path}.{name}" if path else name)
    if isinstance(node.get("items"), dict):
        out += _walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _walk(node["additionalProperties"], f"{path}{{}}")
    return out


# ---- defaults ---------------------------------------------------------------------------

TIER_POD: JSON = {
    "nodeSelector": None,
    "affinity": None,
    "tolerations": None,
    "topologySpreadConstraints": None,
}
DOCUMENTED_DEFAULTS: JSON = {
    "image": "ghcr.io/example/mcp:1",
    "imagePullPolicy": "IfNotPresent",
    "command": [],
    "args": [],
    "port": 8080,
    "path": "/mcp",
    "transport": "streamable-http",
    "env": [],
    "envFrom": [],
    "resources": {},
    "volumeMounts": [],
    "home": {"enabled": True, "mountPath": "/home/mcp", "sizeLimit": "256Mi"},
    "pod": {
        "nodeSelector": {},
        "affinity": {},
        "tolerations": [],
        "topologySpreadConstraints": [],
        "serviceAccountName": None,
        "automountServiceAccountToken": False,
        "annotations": {},
        "labels": {},
        "imagePullSecrets": [],
        "securityContext": {},
        "containerSecurityContext": {},
        "priorityClassName": None,
        "drainSeconds": 5,
        "volumes": [],
    },
    "probes": {"startup": None, "liveness": None, "readiness": None},
    "service": {"sessionAffinity": "None"},
    "primary": {
        "replicas": 2,
        "pod": TIER_POD,
        "autoscaling": {"enabled": False},
        "minHealthyPods": None,
    },
    "backup": {
        "enabled": True,
        "replicas": 1,
        "standby": "hot",
        "pod": TIER_POD,
        "minHealthyPods": None,
    },
    "health": {
        "intervalSeconds": 2,
        "timeoutSeconds": 1,
        "failureThreshold": 3,
        "successThreshold": 2,
        "recoveryTimeoutSeconds": 30,
        "minHealthyPods": 1,
        "bearerTokenSecretRef": None,
        "scheme": "http",
        "caSecretRef": None,
        "hostHeader": None,
        "headers": {},
    },
    "failover": {
        "enabled": True,
        "failback": "Automatic",
        "cooldownSeconds": 60,
        "maxFailovers": 3,
        "windowSeconds": 600,
        "coldStartTimeoutSeconds": 120,
    },
    "auth": {
        "enabled": False,
        "algorithm": "ES256",
        "tokenTTL": "1h",
        "leeway": "30s",
        "issuer": None,
        "rotation": {"every": "720h", "publishAhead": "10m"},
    },
    "dataEncryption": {
        "enabled": False,
        "rotation": {"every": "720h", "publishAhead": "10m", "propagation": "2m"},
        "retention": "2160h",
    },
    "cache": {
        "enabled": False,
        "maxMemory": "256Mi",
        "evictionPolicy": "allkeys-lru",
        "image": "redis:7.4.2",
        "imagePullPolicy": "IfNotPresent",
        "resources": {},
        "credentialRotation": {"enabled": True, "every": "720h", "propagation": "2m"},
    },
    "monitoring": {
        "prometheusRule": {
            "enabled": True,
            "labels": {},
            "runbookBaseURL": (
                "https://github.com/mcp-operator/mcp-operator/blob/main/docs/runbooks.md"
            ),
            "alerts": {
                "down": {"enabled": True, "for": None, "severity": None},
                "failedOver": {"enabled": True, "for": None, "severity": None},
                "failoverFlapping": {
                    "enabled": True,
                    "for": None,
                    "severity": None,
                    "switches": 4,
                    "window": "1h",
                },
                "backupUnavailable": {"enabled": True, "for": None, "severity": None},
                "probeErrorRateHigh": {
                    "enabled": True,
                    "for": None,
                    "severity": None,
                    "ratio": 0.1,
                    "window": "5m",
                },
                "probeLatencyHigh": {
                    "enabled": True,
                    "for": None,
                    "severity": None,
                    "seconds": 0.5,
                    "window": "5m",
                },
                "memoryHigh": {"enabled": True, "for": None, "severity": None, "ratio": 0.9},
                "signingKeyRotationOverdue": {
                    "enabled": True,
                    "for": None,
                    "severity": None,
                    "grace": "1h",
                },
                "cacheDown": {"enabled": True, "for": None, "severity": None},
                "probeMisconfigured": {"enabled": True, "for": None, "severity": None},
            },
        },
        "serviceMonitor": {"enabled": False, "labels": {}},
    },
}


def _minimal() -> JSON:
    return {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather"},
        "spec": {"image": "ghcr.io/example/mcp:1"},
    }


def test_image_only_gets_every_documented_default() -> None:
    server = parse_server(_minimal())
    assert server.spec.model_dump(by_alias=True) == DOCUMENTED_DEFAULTS
    assert server.metadata.namespace is None  # absent stays absent (kustomize, Argo CD)
    assert server.status is None


def test_crd_defaults_match_model_defaults() -> None:
    """What the API server fills in equals what the models fill in, field by field."""
    spec_schema = _schema()["properties"]["spec"]

    def check(node: JSON, value: Any, path: str) -> None:
        if "default" in node and not isinstance(value, dict):
            assert node["default"] == value, f"{path}: CRD default {node['default']!r} != {value!r}"
        if isinstance(value, dict) and "properties" in node:
            for key, sub in value.items():
                assert key in node["properties"], f"{path}.{key} missing from the CRD"
                check(node["properties"][key], sub, f"{path}.{key}")

    check(spec_schema, DOCUMENTED_DEFAULTS, "spec")
    # Nested blocks default to their whole model default, spelled out (not {}: a current API
    # server checks a default against the block's CEL rules without filling in nested defaults
    # first, and refuses the CRD; tests/integration/test_cel.py applies it to a real one).
    for block in ("pod", "probes", "primary", "backup", "health", "failover", "auth", "cache"):
        assert spec_schema["properties"][block].get("default") == DOCUMENTED_DEFAULTS_JSON[block]
    rotation = spec_schema["properties"]["auth"]["properties"]["rotation"]["default"]
    assert rotation == DOCUMENTED_DEFAULTS_JSON["auth"]["rotation"]


DOCUMENTED_DEFAULTS_JSON = parse_server(
    {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather"},
        "spec": {"image": "ghcr.io/example/mcp:1"},
    }
).spec.model_dump(mode="json", by_alias=True, exclude_none=True)


def test_camel_case_and_snake_case_both_accepted() -> None:
    by_alias = models.HealthSpec.model_validate({"intervalSeconds": 5})
    by_name = models.HealthSpec.model_validate({"interval_seconds": 5})
    assert by_alias == by_name
    assert by_alias.interval_seconds == 5


def test_models_are_frozen() -> None:
    server = parse_server(_minimal())
    with pytest.raises(Exception, match="frozen"):
        server.spec.port = 1  # type: ignore[misc]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_examples_parse(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs, path
    for doc in docs:
        parse_server(doc)


def test_there_are_examples() -> None:
    assert {"basic", "cold-standby", "full"} <= {p.stem for p in EXAMPLES}


# ---- the CRD ------------------------------------------------------------------------------


def test_crd_is_checked_in_and_up_to_date() -> None:
    generated = crd_mod.crd_yaml()
    checked_in = CRD_FILE.read_text(encoding="utf-8")
    assert generated == checked_in, (
        f"{CRD_FILE.relative_to(ROOT)} is out of date with the models; regenerate it with "
        "`mcp-operator crd > crds/mcpservers.mcp-operator.dev.yaml`"
    )


def test_crd_yaml_round_trips() -> None:
    assert yaml.safe_load(crd_mod.crd_yaml()) == crd_mod.crd()


def test_crd_schema_is_structural() -> None:
    forbidden = {"$ref", "anyOf", "oneOf", "allOf", "not", "$defs", "definitions"}
    for path, node in _walk(_schema()):
        bad = forbidden & node.keys()
        assert not bad, f"{path or '(root)'} has {sorted(bad)}"
        assert "type" in node or node.get("x-kubernetes-preserve-unknown-fields") is True, (
            f"{path or '(root)'} has neither type nor x-kubernetes-preserve-unknown-fields: {node}"
        )
        assert node.get("type") in {
            None,
            "object",
            "array",
            "string",
            "integer",
            "number",
            "boolean",
        }
        if node.get("type") == "array":
            assert isinstance(node.get("items"), dict), f"{path}: array without items"
        # metadata is special in a CRD: only `type: object` is allowed at the root's metadata.
    assert _schema()["properties"]["metadata"] == {"type": "object"}


def test_crd_schema_has_no_nullable_required_or_stray_keywords() -> None:
    allowed = {
        "type",
        "properties",
        "required",
        "items",
        "additionalProperties",
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
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-validations",
    }
    for path, node in _walk(_schema()):
        assert node.keys() <= allowed, f"{path}: unexpected {sorted(node.keys() - allowed)}"
        for req in node.get("required", []):
            assert req in node["properties"], f"{path}: required {req} is not a property"
            assert "default" not in node["properties"][req], f"{path}.{req}: required + default"


def test_crd_names_scope_and_version() -> None:
    obj = crd_mod.crd()
    assert obj["apiVersion"] == "apiextensions.k8s.io/v1"
    assert obj["metadata"]["name"] == "mcpservers.mcp-operator.dev"
    spec = obj["spec"]
    assert spec["group"] == "mcp-operator.dev"
    assert spec["scope"] == "Namespaced"
    names = spec["names"]
    assert names["kind"] == "MCPServer"
    assert names["plural"] == "mcpservers"
    assert names["singular"] == "mcpserver"
    assert names["shortNames"] == ["mcps"]
    assert "mcp" in names["categories"]
    [version] = spec["versions"]
    assert version["name"] == "v1alpha1"
    assert version["served"] is True and version["storage"] is True


def test_crd_status_subresource_and_printer_columns() -> None:
    version = crd_mod.crd()["spec"]["versions"][0]
    assert version["subresources"] == {"status": {}}
    columns = {c["name"]: c for c in version["additionalPrinterColumns"]}
    default_view = [c["name"] for c in version["additionalPrinterColumns"] if not c.get("priority")]
    assert default_view == ["Ready", "Active", "Primary", "Backup", "Age"]
    assert columns["Age"]["type"] == "date"
    assert columns["Age"]["jsonPath"] == ".metadata.creationTimestamp"
    assert columns["Active"]["jsonPath"] == ".status.activeTier"
    assert "Ready" in columns["Ready"]["jsonPath"]
    # Every printer column's path exists in the status schema.
    status = _schema()["properties"]["status"]
    for column in version["additionalPrinterColumns"]:
        path = column["jsonPath"]
        if not path.startswith(".status."):
            continue
        node = status
        for part in re.sub(r"\[.*\]", "", path.removeprefix(".status.")).split("."):
            node = node.get("items", node)
            assert part in node["properties"], f"{column['name']}: {path} not in status schema"
            node = node["properties"][part]


def test_spec_is_required_and_image_is_required() -> None:
    schema = _schema()
    assert "spec" in schema["required"]
    assert "image" in schema["properties"]["spec"]["required"]


def _ruled_models() -> dict[str, type[RuledModel]]:
    found = crd_mod._model_classes(models.MCPServerSpec)
    return {
        name: cls
        for name, cls in found.items()
        if issubclass(cls, RuledModel) and cls.__rules__ and issubclass(cls, BaseModel)
    }


# Where each ruled model sits in the spec schema.
RULE_NODES = {
    "MCPServerSpec": "spec",
    "PodSettings": "spec.pod",
    "HealthSpec": "spec.health",
    "AuthSpec": "spec.auth",
    "DataEncryptionSpec": "spec.dataEncryption",
    "CacheCredentialRotationSpec": "spec.cache.credentialRotation",
}


def _node(path: str) -> JSON:
    node: JSON = _schema()
    for part in path.split("."):
        node = node["properties"][part]
    return node


def test_every_ruled_model_is_located() -> None:
    assert set(_ruled_models()) == set(RULE_NODES)


@pytest.mark.parametrize(
    ("model", "rule"),
    [(name, rule) for name, cls in sorted(_ruled_models().items()) for rule in cls.__rules__],
    ids=lambda v: v if isinstance(v, str) else v.field,
)
def test_every_rule_cel_is_in_the_crd_at_its_node(model: str, rule: Any) -> None:
    validations = _node(RULE_NODES[model]).get("x-kubernetes-validations", [])
    assert {"rule": rule.cel, "message": f"{rule.field}: {rule.message}"} in validations


def test_name_rules_are_on_the_root() -> None:
    rules = [v["rule"] for v in _schema()["x-kubernetes-validations"]]
    assert f"self.metadata.name.size() <= {models.MAX_NAME_LENGTH}" in rules
    assert any("self.metadata.name.matches(" in r for r in rules)
    assert models.MAX_NAME_LENGTH == 45


def _cel_fields(cel: str) -> set[str]:
    """Field chains the expression reads from ``self``, e.g. ``rotation.every``."""
    return set(re.findall(r"self\.([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)", cel))


def _cel_refs() -> list[Any]:
    out = []
    for model, cls in sorted(_ruled_models().items()):
        for rule in cls.__rules__:
            for chain in sorted(_cel_fields(rule.cel)):
                out.append(pytest.param(model, rule.cel, chain, id=f"{model}:{chain}"))
    return out


@pytest.mark.parametrize(("model", "cel", "chain"), _cel_refs())
def test_cel_reads_only_fields_that_are_always_present(model: str, cel: str, chain: str) -> None:
    """A CEL rule that reads an absent field fails with "no such key" on the server and so
    rejects the object: every field a rule reads must be defaulted or required (after the
    server applied defaults), or guarded by has()."""
    node = _node(RULE_NODES[model])
    walked: list[str] = []
    for part in chain.split("."):
        if part not in node.get("properties", {}):
            break  # a method such as .all / .startsWith / .size
        walked.append(part)
        present = part in node.get("required", []) or "default" in node["properties"][part]
        guarded = f"has(self.{'.'.join(walked)})" in cel
        assert present or guarded, f"CEL {cel!r} reads self.{'.'.join(walked)}, maybe absent"
        node = node["properties"][part]


def test_every_rule_has_a_python_check_that_passes_on_defaults() -> None:
    for cls in _ruled_models().values():
        instance = cls() if cls is not models.MCPServerSpec else cls(image="x")
        for rule in cls.__rules__:
            assert rule.check(instance), f"{cls.__name__}: {rule.field} fails on defaults"


# ---- durations ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", timedelta(seconds=90)),
        ("10m", timedelta(minutes=10)),
        ("720h", timedelta(hours=720)),
        ("1h30m", timedelta(hours=1, minutes=30)),
        ("1.5h", timedelta(minutes=90)),
        ("250ms", timedelta(milliseconds=250)),
        ("1m30s500ms", timedelta(seconds=90.5)),
        ("0s", timedelta(0)),
    ],
)
def test_durations_parse(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "1", "1d", "h", "-1h", "1 h", "1H", "1.h", "P1D", "1h "])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("delta", "text"),
    [(timedelta(hours=1), "1h"), (timedelta(seconds=90), "1m30s"), (timedelta(0), "0s")],
)
def test_format_duration(delta: timedelta, text: str) -> None:
    assert format_duration(delta) == text
    assert parse_duration(text) == delta


def test_duration_fields_carry_the_pattern_in_the_crd() -> None:
    auth = _node("spec.auth")
    for node in (
        auth["properties"]["tokenTTL"],
        auth["properties"]["rotation"]["properties"]["every"],
        auth["properties"]["rotation"]["properties"]["publishAhead"],
    ):
        assert node["type"] == "string"
        assert node["pattern"] == DURATION_PATTERN
        assert parse_duration(node["default"]) > timedelta(0)


def _schema_paths(node: JSON, path: str) -> list[str]:
    out = []
    for name, sub in (node.get("properties") or {}).items():
        out += [f"{path}.{name}", *_schema_paths(sub, f"{path}.{name}")]
    return out


def _doc_paths(value: Any, path: str) -> set[str]:
    out: set[str] = set()
    if isinstance(value, dict):
        for key, sub in value.items():
            out |= {f"{path}.{key}", *_doc_paths(sub, f"{path}.{key}")}
    return out


def test_examples_cover_every_spec_field() -> None:
    """Every field of the API is shown in at least one example (and so applied to the real
    API server by tests/integration/test_crd_cluster.py). A new field needs an example."""
    shown: set[str] = set()
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                shown |= _doc_paths(doc["spec"], "spec")
    missing = [p for p in _schema_paths(_schema()["properties"]["spec"], "spec") if p not in shown]
    assert not missing, f"no example in examples/ shows {missing}"
