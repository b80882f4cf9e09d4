"""Kubernetes sub-objects checked offline against the vendored Kubernetes schemas, and every
CRD field described (so `kubectl explain mcpservers.spec --recursive` is complete)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from mcp_operator.api import kubeschema
from mcp_operator.api.crd import openapi_schema

ROOT = Path(__file__).resolve().parents[2]


def _vendoring_script() -> Any:
    spec = importlib.util.spec_from_file_location(
        "_vendor", ROOT / "hack" / "vendor_k8s_schemas.py"
    )
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_vendored_schemas_match_kubernetes_validate() -> None:
    """Regenerate with `.venv/bin/python hack/vendor_k8s_schemas.py`."""
    assert kubeschema.SCHEMA_FILE.read_text() == _vendoring_script().vendored_text()


def test_vendored_file_is_small() -> None:
    assert kubeschema.SCHEMA_FILE.stat().st_size < 200_000


@pytest.mark.parametrize(
    ("kind", "value", "problems"),
    [
        ("EnvVar", {"name": "A", "valuFrom": {}}, [("valuFrom", "is not a known field")]),
        ("EnvVar", {"name": "A", "value": "x"}, []),
        (
            "ResourceRequirements",
            {"limits": {"memory": "lots", "cpu": -1}, "requests": {"cpu": "100m"}},
            [
                ("limits.memory", "must be a quantity such as 500m or 1Gi, not 'lots'"),
                ("limits.cpu", "must not be negative"),
            ],
        ),
        ("ResourceRequirements", {"limits": {"memory": "1.5Gi", "cpu": 2}}, []),
        ("Affinity", {"nodeAffinity": 5}, [("nodeAffinity", "must be an object, not an integer")]),
        (
            "Toleration",
            {"effect": "NoSchedul"},
            [("effect", 'must be one of NoSchedule, PreferNoSchedule, NoExecute, ""')],
        ),
        ("Probe", {"httpGet": {"port": "mcp", "path": "/"}, "periodSeconds": 5}, []),
        ("Volume", {"configMap": {"name": "c"}}, [("name", "is required")]),
        ("VolumeMount", {"name": "", "mountPath": "/x"}, [("name", "must not be empty")]),
    ],
)
def test_check(kind: str, value: Any, problems: list[tuple[str, str]]) -> None:
    assert kubeschema.check(kind, value) == problems


def _undescribed(node: Any, path: str) -> list[str]:
    out: list[str] = []
    if not isinstance(node, dict):
        return out
    for name, sub in (node.get("properties") or {}).items():
        if not str(sub.get("description", "")).strip():
            out.append(f"{path}.{name}")
        out += _undescribed(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        out += _undescribed(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        out += _undescribed(node["additionalProperties"], f"{path}{{}}")
    return out


def test_every_crd_field_has_a_description() -> None:
    schema = openapi_schema()
    missing = _undescribed(schema, "")
    # Only `type: object` is allowed on the root's metadata (kubectl shows ObjectMeta's text).
    assert missing == [".metadata"]
    assert schema["properties"]["spec"]["description"]
    assert schema["properties"]["status"]["description"]
