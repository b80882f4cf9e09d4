"""The CRD and the rendered objects against real API servers.

* the local control plane (``cluster`` fixture): the CRD installs and is Established,
  every example is accepted and read back, the schema-enforceable invalid rows are refused
  with the field named, and every rendered child passes a server-side apply dry-run;
* a current Kubernetes release's schemas (``kubernetes-validate``, strict): every rendered
  child and the CRD itself. These need no cluster.

The CRD is applied with kubectl's validation on (as users do); cross-field (CEL) rules are
proven in tests/integration/test_cel.py, and through the models in
tests/unit/test_invalid_specs.py.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import re
import secrets
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mcp_operator.api.crd import crd
from mcp_operator.api.validation import parse_server
from mcp_operator.render import Capabilities, RenderContext, alerts, render
from tests.conftest import wait_established

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "mcpservers.mcp-operator.dev.yaml"
CRD_NAME = "mcpservers.mcp-operator.dev"
RULE_CRD_FILE = ROOT / "tests" / "prometheus" / "monitoring.coreos.com_prometheusrules.yaml"
RULE_CRD_NAME = "prometheusrules.monitoring.coreos.com"
# examples/bad.yaml is the deliberately invalid one (README shows its errors).
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.stem != "bad")
Obj = dict[str, Any]


def _load_invalid_table() -> Any:
    """The invalid-spec table lives with the unit tests; load it from there by path."""
    path = ROOT / "tests" / "unit" / "test_invalid_specs.py"
    spec = importlib.util.spec_from_file_location("_mcp_invalid_specs_table", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


TABLE = _load_invalid_table()


def example_docs() -> list[Any]:
    out = []
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                out.append(pytest.param(doc, id=f"{path.stem}:{doc['metadata']['name']}"))
    return out


def in_namespace(doc: Obj, namespace: str) -> Obj:
    doc = copy.deepcopy(doc)
    doc["metadata"]["namespace"] = namespace
    return doc


# ---- cluster fixtures -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def installed_crd(kubectl: Any) -> Obj:
    kubectl("apply", "-f", str(CRD_FILE))
    wait_established(kubectl, CRD_NAME)
    out: Obj = json.loads(kubectl("get", "crd", CRD_NAME, "-o", "json").stdout)
    return out


@pytest.fixture(scope="module")
def namespace(kubectl: Any, installed_crd: Obj) -> Iterator[str]:
    name = f"t-crd-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="module")
def server_capabilities(kubectl: Any, cluster: Any) -> Capabilities:
    versions = kubectl("api-versions").stdout.split()
    return Capabilities(api_versions=frozenset(versions), minor=cluster.minor)


# ---- the CRD on the session's server (CEL: tests/integration/test_cel.py) ---------------------


@pytest.mark.cluster
def test_crd_installs_and_is_established(installed_crd: Obj, kubectl: Any) -> None:
    conditions = {c["type"]: c["status"] for c in installed_crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    assert conditions.get("NonStructuralSchema", "False") != "True"
    accepted = installed_crd["status"]["acceptedNames"]
    assert accepted["kind"] == "MCPServer"
    assert accepted["shortNames"] == ["mcps"]
    assert "mcp" in accepted["categories"]
    resources = kubectl("api-resources", "--api-group=mcp-operator.dev", "-o", "wide").stdout
    assert "mcpservers" in resources and "mcps" in resources


def _explain(kubectl: Any, *args: str) -> str:
    """The API server publishes a new CRD's OpenAPI a few seconds after Established."""
    deadline = time.monotonic() + 60
    while True:
        result = kubectl("explain", *args, check=False)
        if result.returncode == 0 or time.monotonic() > deadline:
            return str(result.stdout + result.stderr)
        time.sleep(1)


@pytest.mark.cluster
@pytest.mark.parametrize(
    ("field", "words"),
    [
        ("mcpservers.spec", "Never written by the operator"),
        ("mcpservers.spec.pod.automountServiceAccountToken", "Off by default"),
        ("mcpservers.spec.primary.autoscaling.enabled", "never fought"),
        ("mcpservers.spec.backup.pod.tolerations", "Toleration"),
        ("mcpservers.status.conditions.reason", "CamelCase"),
    ],
)
def test_kubectl_explain_shows_descriptions(
    installed_crd: Obj, kubectl: Any, field: str, words: str
) -> None:
    """What a user sees; the unit test walks every field of the schema for a description."""
    out = _explain(kubectl, field)
    assert words in " ".join(out.split()), out


@pytest.mark.cluster
def test_kubectl_explain_recursive_lists_the_new_fields(installed_crd: Obj, kubectl: Any) -> None:
    out = _explain(kubectl, "mcpservers.spec", "--recursive")
    for name in ("volumeMounts", "automountServiceAccountToken", "sessionAffinity", "autoscaling"):
        assert name in out


@pytest.mark.cluster
def test_crd_reapply_is_idempotent(installed_crd: Obj, kubectl: Any) -> None:
    result = kubectl("apply", "-f", str(CRD_FILE))
    assert "unchanged" in result.stdout or "configured" in result.stdout


@pytest.mark.cluster
@pytest.mark.parametrize("doc", example_docs())
def test_example_is_accepted_and_reads_back(doc: Obj, kubectl: Any, namespace: str) -> None:
    doc = in_namespace(doc, namespace)
    name = doc["metadata"]["name"]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        stored: Obj = json.loads(kubectl("get", "mcps", name, "-n", namespace, "-o", "json").stdout)
        assert stored["metadata"]["uid"]
        # What the server stored (with its defaults filled in) means the same as the file.
        assert parse_server(stored).spec == parse_server(doc).spec
        # The server applied the CRD defaults to blocks the user left out.
        assert stored["spec"]["health"]["intervalSeconds"] >= 1
        assert stored["spec"]["failover"]["failback"] in {"Automatic", "Manual"}
        assert stored["spec"]["auth"]["rotation"]["every"]
        # printer columns work
        table = kubectl("get", "mcps", name, "-n", namespace).stdout.splitlines()[0].split()
        assert table[:6] == ["NAME", "READY", "ACTIVE", "PRIMARY", "BACKUP", "AGE"]
    finally:
        kubectl("delete", "mcps", name, "-n", namespace, "--ignore-not-found", check=False)


@pytest.mark.cluster
def test_image_only_object_gets_the_model_defaults_from_the_server(
    kubectl: Any, namespace: str
) -> None:
    doc = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "defaults", "namespace": namespace},
        "spec": {"image": "ghcr.io/example/mcp:1"},
    }
    out = kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(doc))
    stored = json.loads(out.stdout)
    model = parse_server(doc).spec.model_dump(by_alias=True, exclude_none=True)

    def check(served: Any, expected: Any, path: str) -> None:
        if isinstance(expected, dict) and expected:
            assert isinstance(served, dict), path
            for key, value in expected.items():
                if key in served:
                    check(served[key], value, f"{path}.{key}")
        else:
            assert served == expected, path

    check(stored["spec"], model, "spec")
    assert stored["spec"]["primary"]["replicas"] == 2
    assert stored["spec"]["health"]["timeoutSeconds"] == 1


def server_cases() -> list[Any]:
    return [pytest.param(c, id=c.id) for c in TABLE.SERVER_CASES]


@pytest.mark.cluster
@pytest.mark.parametrize("case", server_cases())
def test_schema_enforceable_invalid_spec_is_refused_by_the_server(
    case: Any, kubectl: Any, namespace: str
) -> None:
    doc = in_namespace(TABLE.apply_changes(TABLE.base(), case.changes), namespace)
    if "name" in doc["metadata"] and "metadata.name" not in case.changes:
        doc["metadata"]["name"] = case.id[:45].strip("-")
    result = kubectl(
        "create",
        "--dry-run=server",
        "--validate=false",
        "-f",
        "-",
        input=json.dumps(doc),
        check=False,
    )
    assert result.returncode != 0, f"the server accepted {case.id}: {result.stdout}"
    assert case.path in result.stderr, result.stderr
    assert "is invalid" in result.stderr, result.stderr


@pytest.mark.cluster
def test_table_has_server_rows_of_every_schema_kind() -> None:
    ids = {c.id for c in TABLE.SERVER_CASES}
    assert {"port-zero", "transport-unknown", "path-relative", "image-missing"} <= ids


# ---- rendered children on the session's server ---------------------------------------------


def server_side_dry_run(kubectl: Any, objects: list[Obj]) -> Any:
    """As the operator applies: server-side, its field manager. kubectl's validation is
    strict (its default), so a field the schema does not declare is an error."""
    return kubectl(
        "apply",
        "--server-side",
        "--dry-run=server",
        "--validate=strict",
        "--field-manager",
        "mcp-operator",
        "-f",
        "-",
        input=yaml.safe_dump_all(objects, sort_keys=False),
        check=False,
    )


def expected_pdb_version(cluster: Any) -> str:
    """policy/v1: the only PodDisruptionBudget version of every supported release."""
    return "policy/v1"


@pytest.mark.cluster
def test_server_discovery_gives_the_pdb_version(
    server_capabilities: Capabilities, cluster: Any
) -> None:
    assert "apps/v1" in server_capabilities.api_versions
    assert server_capabilities.pdb_api_version() == expected_pdb_version(cluster)


@pytest.mark.cluster
@pytest.mark.parametrize("doc", example_docs())
@pytest.mark.parametrize(
    "ctx_args",
    [{}, {"active_tier": "backup"}, {"backup_warm": True}],
    ids=["primary-active", "backup-active", "backup-warm"],
)
def test_rendered_children_pass_server_side_apply_dry_run(
    doc: Obj,
    ctx_args: dict[str, Any],
    kubectl: Any,
    namespace: str,
    server_capabilities: Capabilities,
    cluster: Any,
) -> None:
    doc = in_namespace(doc, namespace)
    name = doc["metadata"]["name"]
    kubectl("apply", "-f", "-", input=yaml.safe_dump(doc))
    try:
        uid = kubectl(
            "get", "mcps", name, "-n", namespace, "-o", "jsonpath={.metadata.uid}"
        ).stdout.strip()
        assert uid
        ctx = RenderContext(capabilities=server_capabilities, owner_uid=uid, **ctx_args)
        objects = render(parse_server(doc), ctx)
        assert any(o["kind"] == "Deployment" for o in objects)
        for obj in objects:
            if obj["kind"] == "PodDisruptionBudget":
                assert obj["apiVersion"] == expected_pdb_version(cluster)
        result = server_side_dry_run(kubectl, objects)
        assert result.returncode == 0, result.stderr
        applied = result.stdout.splitlines()
        assert len(applied) == len(objects), result.stdout
        for obj, line in zip(objects, applied, strict=True):
            kind, obj_name = obj["kind"].lower(), obj["metadata"]["name"]
            pattern = rf"{kind}(\.[a-z0-9.]+)?/{re.escape(obj_name)} serverside-applied"
            assert re.match(pattern, line), (obj["kind"], obj_name, line)
    finally:
        kubectl("delete", "mcps", name, "-n", namespace, "--ignore-not-found", check=False)


# ---- the PrometheusRule against the Prometheus Operator's own CRD --------------------------


def rule_servers() -> list[Any]:
    """Servers whose rules differ: every example, the promtool fixtures, and durations that
    the spec accepts but the CRD's pattern would not take verbatim (``1.5m``, ``1h30m``)."""
    docs = [d for p in EXAMPLES for d in yaml.safe_load_all(p.read_text()) if d is not None]
    docs += list(yaml.safe_load_all((ROOT / "tests" / "prometheus" / "servers.yaml").read_text()))
    odd = {"down": {"for": "1.5m"}, "failedOver": {"for": "1h30m"}, "memoryHigh": {"for": "90s"}}
    docs.append(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "odd"},
            "spec": {"image": "x:1", "monitoring": {"prometheusRule": {"alerts": odd}}},
        }
    )
    return [pytest.param(d, id=d["metadata"]["name"]) for d in docs]


@pytest.fixture(scope="module")
def rule_crd(kubectl: Any) -> Iterator[None]:
    """The real CRD, removed afterwards (the e2e monitoring tests start without it)."""
    kubectl("apply", "--server-side", "-f", str(RULE_CRD_FILE))
    wait_established(kubectl, RULE_CRD_NAME)
    try:
        yield
    finally:
        kubectl("delete", "crd", RULE_CRD_NAME, "--ignore-not-found", check=False, timeout=90)


@pytest.mark.cluster
@pytest.mark.parametrize("doc", rule_servers())
def test_rendered_prometheus_rule_passes_the_real_crd_schema(
    doc: Obj, kubectl: Any, namespace: str, rule_crd: None
) -> None:
    server = parse_server(in_namespace(doc, namespace))
    capabilities = Capabilities(api_versions=frozenset({alerts.MONITORING_API}))
    rule = alerts.prometheus_rule(server, RenderContext(capabilities=capabilities))
    assert rule is not None and rule["spec"]["groups"][0]["rules"]
    result = server_side_dry_run(kubectl, [rule])
    assert result.returncode == 0, result.stderr
    assert "serverside-applied" in result.stdout, result.stdout


@pytest.mark.cluster
def test_the_real_crd_schema_is_enforced(kubectl: Any, namespace: str, rule_crd: None) -> None:
    """Guard: the dry-run above is judged by the schema (a ``for`` in Go's decimal style
    and an undeclared field are both refused), so passing it means something."""
    server = parse_server(in_namespace(rule_servers()[0].values[0], namespace))
    capabilities = Capabilities(api_versions=frozenset({alerts.MONITORING_API}))
    rule = alerts.prometheus_rule(server, RenderContext(capabilities=capabilities))
    assert rule is not None
    decimal = copy.deepcopy(rule)
    decimal["spec"]["groups"][0]["rules"][0]["for"] = "1.5m"
    result = server_side_dry_run(kubectl, [decimal])
    assert result.returncode != 0 and "spec.groups[0].rules[0].for" in result.stderr, result
    unknown = copy.deepcopy(rule)
    unknown["spec"]["groups"][0]["rules"][0]["severity"] = "page"
    result = server_side_dry_run(kubectl, [unknown])
    assert result.returncode != 0 and "field not declared in schema" in result.stderr, result


# ---- a current Kubernetes release's schemas (no cluster) -----------------------------------


def latest_schema_version() -> str:
    return str(kubernetes_validate.latest_version())


def test_kubernetes_validate_ships_a_current_release() -> None:
    major, minor = (int(p) for p in latest_schema_version().split(".")[:2])
    assert (major, minor) >= (1, 31)


def rendered_objects() -> list[Any]:
    out = []
    contexts = {
        "primary-active": RenderContext(owner_uid="00000000-0000-0000-0000-000000000001"),
        "backup-active": RenderContext(active_tier="backup"),
        "backup-warm": RenderContext(backup_warm=True),
    }
    for path in EXAMPLES:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            for ctx_id, ctx in contexts.items():
                for obj in render(parse_server(doc), ctx):
                    oid = f"{path.stem}:{ctx_id}:{obj['kind']}/{obj['metadata']['name']}"
                    out.append(pytest.param(obj, id=oid))
    return out


@pytest.mark.parametrize("obj", rendered_objects())
def test_rendered_object_validates_against_current_kubernetes(obj: Obj) -> None:
    version = latest_schema_version()
    try:
        kubernetes_validate.validate(obj, version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for {version}: {exc}")


def test_rendered_pdb_is_policy_v1_for_current_kubernetes() -> None:
    objects = render(parse_server(yaml.safe_load(EXAMPLES[0].read_text())))
    assert {o["apiVersion"] for o in objects if o["kind"] == "PodDisruptionBudget"} <= {"policy/v1"}


def test_crd_validates_against_current_kubernetes() -> None:
    version = latest_schema_version()
    try:
        kubernetes_validate.validate(crd(), version, strict=True)
    except kubernetes_validate.ValidationError as exc:
        pytest.fail(f"the CRD is invalid for {version}: {exc}")


def test_validation_is_really_strict() -> None:
    """Guard against a validator that accepts anything: a typo must be caught."""
    objects = render(parse_server(yaml.safe_load(EXAMPLES[0].read_text())))
    deployment = copy.deepcopy(next(o for o in objects if o["kind"] == "Deployment"))
    deployment["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, latest_schema_version(), strict=True)
