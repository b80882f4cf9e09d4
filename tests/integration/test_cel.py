"""CEL proven: every cross-field rule of the CRD is enforced by a real, current API server.

The rules (``api/rules.py``, emitted as ``x-kubernetes-validations``) are collected from the
checked-in CRD itself, so a new rule without a row here fails ``test_every_rule_has_a_case``.
Each rule is matched to rows of the invalid-spec table (tests/unit/test_invalid_specs.py) by
field path and message; each such row must be refused by the server with the rule's message.

The CRD is applied the way the README tells users to: ``kubectl apply --server-side`` WITHOUT
``--validate=false`` (kubectl 1.37 checks it against the server's OpenAPI first). A CEL compile
error or a blown cost budget would fail that apply.

Runs on the session's control plane (every supported release, 1.34 on, enforces CEL; the
oldest one is smoked in tests/integration/test_oldest_k8s.py).
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_devcluster.controlplane import (
    ControlPlane,
    tools_bin_dir,
)
from tests.conftest import kubectl_for, wait_established

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "mcpservers.mcp-operator.dev.yaml"
CRD_NAME = "mcpservers.mcp-operator.dev"
Obj = dict[str, Any]

# Rules whose model error is worded differently from the CEL message (the model reports the
# pattern; CEL says "DNS-1035 label"): rule message prefix -> table row ids.
EXTRA_CASES = {"metadata.name: must be a DNS-1035 label": ("name-starts-with-digit",)}


def _load_table() -> Any:
    path = ROOT / "tests" / "unit" / "test_invalid_specs.py"
    spec = importlib.util.spec_from_file_location("_mcp_invalid_specs_table_cel", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


TABLE = _load_table()


@dataclass(frozen=True)
class CelRule:
    """One ``x-kubernetes-validations`` entry and where in the schema it sits."""

    location: str  # "spec.health", "" for the root
    rule: str
    message: str

    @property
    def field_path(self) -> str:
        """The field the message is about: location + the message's ``field:`` prefix."""
        field = self.message.split(":", 1)[0]
        return f"{self.location}.{field}" if self.location else field


def cel_rules(schema: Obj, location: str = "") -> list[CelRule]:
    out = [
        CelRule(location, v["rule"], v["message"])
        for v in schema.get("x-kubernetes-validations", [])
    ]
    for name, sub in (schema.get("properties") or {}).items():
        out += cel_rules(sub, f"{location}.{name}" if location else name)
    if isinstance(schema.get("items"), dict):
        out += cel_rules(schema["items"], f"{location}[]")
    return out


def crd_doc() -> Obj:
    doc: Obj = yaml.safe_load(CRD_FILE.read_text())
    return doc


RULES = cel_rules(crd_doc()["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def cases_for(rule: CelRule) -> list[Any]:
    extra = next((ids for p, ids in EXTRA_CASES.items() if rule.message.startswith(p)), ())
    return [
        c
        for c in TABLE.CASES
        if c.id in extra or (c.path == rule.field_path and c.fragment in rule.message)
    ]


def rule_cases() -> list[Any]:
    return [pytest.param(rule, case, id=case.id) for rule in RULES for case in cases_for(rule)]


# ---- a current control plane ---------------------------------------------------------------


@pytest.fixture(scope="module")
def current(cluster: ControlPlane) -> ControlPlane:
    """The session's control plane: every supported release enforces CEL."""
    return cluster


def kubectl(
    cp: ControlPlane, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    config = str(cp.admin_kubeconfig)
    return subprocess.run(
        [str(tools_bin_dir() / "kubectl"), f"--kubeconfig={config}", *args],
        input=input,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "KUBECONFIG": config},
        check=False,
    )


@pytest.fixture(scope="module")
def crd_applied(current: ControlPlane) -> Obj:
    """The CRD applied server-side, with kubectl's client-side validation on."""
    result = kubectl(current, "apply", "--server-side", "-f", str(CRD_FILE))
    assert result.returncode == 0, result.stderr
    assert "serverside-applied" in result.stdout, result.stdout
    wait_established(kubectl_for(current), CRD_NAME)
    stored: Obj = json.loads(kubectl(current, "get", "crd", CRD_NAME, "-o", "json").stdout)
    return stored


# ---- tests ---------------------------------------------------------------------------------


def test_the_crd_has_cross_field_rules() -> None:
    assert len(RULES) >= 10, RULES


def test_every_rule_has_a_case() -> None:
    missing = [r.message for r in RULES if not cases_for(r)]
    assert not missing, f"CEL rules with no row in tests/unit/test_invalid_specs.py: {missing}"


def test_crd_is_accepted_and_keeps_every_rule(crd_applied: Obj, current: ControlPlane) -> None:
    conditions = {c["type"]: c for c in crd_applied["status"]["conditions"]}
    assert conditions["Established"]["status"] == "True"
    assert conditions.get("NonStructuralSchema", {}).get("status", "False") != "True"
    schema = crd_applied["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    # The server kept every rule (1.20 would have pruned them all).
    assert sorted(r.message for r in cel_rules(schema)) == sorted(r.message for r in RULES)
    with current.client() as client:
        assert int(client.get("/version").json()["minor"].rstrip("+")) >= 25


def test_a_valid_object_is_accepted(crd_applied: Obj, current: ControlPlane) -> None:
    """The rows below fail because of their one change, not because the base is invalid."""
    doc = TABLE.base()
    result = kubectl(
        current, "apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(doc)
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize(("rule", "case"), rule_cases())
def test_rule_is_enforced_by_the_server(
    rule: CelRule, case: Any, crd_applied: Obj, current: ControlPlane
) -> None:
    doc = TABLE.apply_changes(TABLE.base(), case.changes)
    result = kubectl(
        current, "apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(doc)
    )
    assert result.returncode != 0, f"the server accepted {case.id}: {result.stdout}"
    assert "is invalid" in result.stderr, result.stderr
    # The server says the rule's own words (the same the models say).
    assert rule.message in result.stderr, result.stderr


@pytest.mark.parametrize(
    "pod",
    [
        {"securityContext": {"runAsUser": 0, "runAsNonRoot": False}},
        {
            "securityContext": {"runAsNonRoot": False},
            "containerSecurityContext": {"runAsUser": 0},
        },
        {"securityContext": {"runAsUser": 0}, "containerSecurityContext": {"runAsUser": 1000}},
    ],
    ids=["root-opted-in", "container-root-opted-in-at-pod", "container-overrides-pod-root"],
)
def test_root_rules_accept_what_the_kubelet_would_run(
    pod: Obj, crd_applied: Obj, current: ControlPlane
) -> None:
    """The root rules refuse only the contradiction: each of these starts under a kubelet."""
    doc = TABLE.base()
    doc["spec"]["pod"] = pod
    TABLE.parse_server(doc)  # the models agree
    result = kubectl(
        current, "apply", "--server-side", "--dry-run=server", "-f", "-", input=json.dumps(doc)
    )
    assert result.returncode == 0, result.stderr
