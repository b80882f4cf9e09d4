"""The Helm chart and the kustomize trees, rendered by the real helm 4 / kubectl 1.37 (no
cluster): strict values, RBAC from the one rule list, the operator pod's shape in each mode,
and every rendered object valid for Kubernetes 1.37 (kubernetes-validate's schemas)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mcp_devcluster.controlplane import tools_bin_dir
from mcp_operator import install, rbac
from mcp_operator.api.crd import crd

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mcp-operator"
Obj = dict[str, Any]
# Kinds the built-in 1.37 schemas do not know (a CRD of the Prometheus Operator).
NOT_BUILTIN = {"ServiceMonitor", "PrometheusRule"}
# What a cluster with the Prometheus Operator serves (helm template's --api-versions).
PROMETHEUS_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
)


def tool(name: str) -> str:
    path = tools_bin_dir() / name
    if not path.exists():
        pytest.fail(f"{path} missing: run hack/install-tools.sh", pytrace=False)
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, check=check, timeout=60
    )


def template(
    *sets: str,
    namespace: str = "mcp-system",
    show_tests: bool = False,
    api_versions: tuple[str, ...] = (),
) -> list[Obj]:
    argv = ["template", "mcp", str(CHART), "--namespace", namespace]
    for s in sets:
        argv += ["--set", s]
    for api in api_versions:
        argv += ["--api-versions", api]
    docs = yaml.safe_load_all(helm(*argv).stdout)
    objs = [d for d in docs if d]
    if not show_tests:
        objs = [o for o in objs if "helm.sh/hook" not in o["metadata"].get("annotations", {})]
    return objs


def kustomize(path: str) -> list[Obj]:
    out = subprocess.run(
        [tool("kubectl"), "kustomize", str(ROOT / path)],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def the(objs: list[Obj], kind: str) -> Obj:
    (obj,) = by_kind(objs, kind)
    return obj


# ---- strict values -------------------------------------------------------------------------


def test_helm_lint_strict() -> None:
    result = helm("lint", "--strict", str(CHART), check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_typo_fails_with_a_schema_error() -> None:
    result = helm("template", "mcp", str(CHART), "--set", "replicaCont=3", check=False)
    assert result.returncode != 0
    assert "replicaCont" in result.stderr and "not allowed" in result.stderr, result.stderr
    nested = helm("template", "mcp", str(CHART), "--set", "image.tga=1", check=False)
    assert nested.returncode != 0 and "tga" in nested.stderr


def _objects_in(schema: Any, path: str = "") -> list[tuple[str, Obj]]:
    found = []
    if isinstance(schema, dict):
        if "properties" in schema:
            found.append((path or "<root>", schema))
        for key, value in schema.items():
            found += _objects_in(value, f"{path}.{key}" if path else key)
    elif isinstance(schema, list):
        for i, value in enumerate(schema):
            found += _objects_in(value, f"{path}[{i}]")
    return found


def test_schema_closes_every_object_and_documents_every_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    open_objects = [p for p, o in _objects_in(schema) if o.get("additionalProperties") is not False]
    assert not open_objects
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values) == set(schema["properties"]) - {"global"}


# ---- RBAC from the one rule list -------------------------------------------------------------


def test_cluster_wide_rbac_is_the_generated_rule_list() -> None:
    objs = template()
    assert the(objs, "ClusterRole")["rules"] == rbac.rules_for("watched", "cluster")
    binding = the(objs, "ClusterRoleBinding")
    sa = the(objs, "ServiceAccount")["metadata"]
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": sa["name"], "namespace": sa["namespace"]}
    ]
    (lease_role,) = by_kind(objs, "Role")
    assert lease_role["metadata"]["namespace"] == "mcp-system"
    args = the(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    # get/update only on the Lease the operator is told to use
    assert lease_role["rules"] == rbac.lease_rules(args[args.index("--leader-lease") + 1])
    assert (
        "--all-namespaces"
        in the(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    )


def test_namespaced_mode_grants_secrets_only_where_servers_live() -> None:
    objs = template("watchNamespaces={team-a,team-b}")
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    roles = {r["metadata"]["namespace"]: r["rules"] for r in by_kind(objs, "Role")}
    assert set(roles) == {"team-a", "team-b", "mcp-system"}
    assert roles["team-a"] == roles["team-b"] == rbac.rules_for("watched")
    assert roles["mcp-system"] == rbac.lease_rules("mcp-mcp-operator")  # leases only
    secret_namespaces = {
        ns for ns, rules in roles.items() for r in rules if "secrets" in r["resources"]
    }
    assert secret_namespaces == {"team-a", "team-b"}  # never the operator's own namespace
    bindings = {b["metadata"]["namespace"] for b in by_kind(objs, "RoleBinding")}
    assert bindings == set(roles)
    args = the(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--namespace=team-a" in args and "--namespace=team-b" in args
    assert "--all-namespaces" not in args


def test_chart_crd_is_the_generated_crd_kept_on_uninstall() -> None:
    rendered = the(template(), "CustomResourceDefinition")
    assert rendered["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    assert {k: v for k, v in rendered.items() if k != "metadata"} == {
        k: v for k, v in crd().items() if k != "metadata"
    }
    assert not by_kind(template("crds.install=false"), "CustomResourceDefinition")
    not_kept = the(template("crds.keep=false"), "CustomResourceDefinition")
    assert "helm.sh/resource-policy" not in not_kept["metadata"]["annotations"]


# ---- the operator pod -------------------------------------------------------------------------


def _assert_restricted(pod: Obj) -> None:
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    for container in pod["containers"]:
        sc = container["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False
        assert sc["readOnlyRootFilesystem"] is True
        assert sc["capabilities"]["drop"] == ["ALL"]


def test_default_is_two_leader_elected_replicas_with_a_pdb() -> None:
    objs = template()
    deploy = the(objs, "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert deploy["spec"]["replicas"] == 2 and "strategy" not in deploy["spec"]
    assert container["args"][container["args"].index("--leader-lease") + 1] == "mcp-mcp-operator"
    assert the(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    assert container["image"] == f"{install.IMAGE_REPOSITORY}:{install.__version__}"
    assert container["livenessProbe"]["httpGet"]["port"] == "health"
    assert container["readinessProbe"]["httpGet"]["port"] == "health"
    assert {p["name"] for p in container["ports"]} == {"metrics", "health"}
    assert container["resources"]["requests"]["memory"]
    _assert_restricted(pod)
    service = the(objs, "Service")
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_operator_pods_carry_the_label_the_cache_network_policies_admit() -> None:
    """Whatever nameOverride/fullnameOverride say, and in the flat install too: a
    NetworkPolicy peer that misses the operator's pods would stall every rotation."""
    from mcp_operator.render import cache

    flat = [d for d in yaml.safe_load_all((ROOT / "manifests/install.yaml").read_text()) if d]
    for objs in (template(), template("nameOverride=tools", "fullnameOverride=x"), flat):
        deploy = next(o for o in by_kind(objs, "Deployment"))
        labels = deploy["spec"]["template"]["metadata"]["labels"]
        assert cache.OPERATOR_POD_LABELS.items() <= labels.items(), labels


def test_one_replica_recreates_and_has_no_pdb() -> None:
    objs = template("replicaCount=1")
    assert the(objs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert not by_kind(objs, "PodDisruptionBudget")


def test_several_replicas_without_leader_election_are_refused() -> None:
    result = helm(
        "template", "mcp", str(CHART), "--set", "leaderElection.enabled=false", check=False
    )
    assert result.returncode != 0 and "leaderElection" in result.stderr


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    deploy = the(template(f"image.digest={digest}"), "Deployment")
    image = deploy["spec"]["template"]["spec"]["containers"][0]["image"]
    assert image == f"{install.IMAGE_REPOSITORY}@{digest}"


def test_helm_test_pod_checks_the_metrics_service_and_is_restricted() -> None:
    objs = template(show_tests=True)
    (pod,) = [o for o in objs if o["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    service = the(objs, "Service")["metadata"]["name"]
    assert (
        f"http://{service}.mcp-system.svc:9090/metrics"
        in pod["spec"]["containers"][0]["command"][-1]
    )
    _assert_restricted(pod["spec"])


def test_opt_in_servicemonitor_networkpolicy_namespace() -> None:
    assert not {"ServiceMonitor", "NetworkPolicy", "Namespace"} & {o["kind"] for o in template()}
    objs = template(
        "metrics.serviceMonitor.enabled=true",
        "metrics.serviceMonitor.labels.release=prom",
        "networkPolicy.enabled=true",
        "namespace.create=true",
        api_versions=PROMETHEUS_APIS,
    )
    monitor = the(objs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    # The series' own namespace label (the server's) must survive the scrape.
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    policy = the(objs, "NetworkPolicy")
    assert policy["spec"]["ingress"][0]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    namespace = the(objs, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_prometheus_objects_only_where_the_api_is_served() -> None:
    """Opted in on a cluster without the Prometheus Operator: no ServiceMonitor or
    PrometheusRule (an install would fail on the unknown kind), the dashboard regardless."""
    sets = (
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
    )
    kinds = [o["kind"] for o in template(*sets)]
    assert "ServiceMonitor" not in kinds and "PrometheusRule" not in kinds
    assert "ConfigMap" in kinds
    kinds = [o["kind"] for o in template(*sets, api_versions=PROMETHEUS_APIS)]
    assert {"ServiceMonitor", "PrometheusRule"} <= set(kinds)
    assert not {"PrometheusRule", "ConfigMap"} & {
        o["kind"] for o in template(api_versions=PROMETHEUS_APIS)
    }


def operator_rule(*sets: str) -> Obj:
    objs = template("metrics.prometheusRule.enabled=true", *sets, api_versions=PROMETHEUS_APIS)
    return the(objs, "PrometheusRule")


def test_operator_rules_pass_promtool_and_read_only_known_metrics(tmp_path: Path) -> None:
    from tests.unit.promql import unknown
    from tests.unit.test_promtool import promtool

    rule = operator_rule("metrics.prometheusRule.labels.release=prom")
    assert rule["metadata"]["labels"]["release"] == "prom"
    rules = rule["spec"]["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [
        "MCPOperatorDown",
        "MCPOperatorReconcileErrors",
        "MCPOperatorProbesPaced",
    ]
    runbooks = (ROOT / "docs" / "runbooks.md").read_text().lower()
    for r in rules:
        assert not unknown(r["expr"]), r
        assert r["labels"]["severity"] in ("critical", "warning")
        anchor = r["annotations"]["runbook_url"].rpartition("#")[2]
        assert f"### {anchor}" in runbooks
    path = tmp_path / "operator.rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run(
        [promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_dashboard_configmap_has_the_sidecar_label_and_the_json() -> None:
    objs = template(
        "metrics.grafanaDashboard.enabled=true",
        "metrics.grafanaDashboard.annotations.grafana_folder=MCP",
    )
    (cm,) = [
        o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")
    ]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "MCP"}
    shipped = json.loads(cm["data"]["mcp-operator-fleet.json"])
    source = json.loads((CHART / "files" / "dashboards" / "mcp-operator-fleet.json").read_text())
    assert shipped == source


# ---- kustomize ----------------------------------------------------------------------------------


def _key(obj: Obj) -> tuple[str, str, str]:
    meta = obj["metadata"]
    return obj["kind"], meta.get("namespace", ""), meta["name"]


def test_kustomize_base_is_the_flat_install() -> None:
    """kustomize reorders objects (namespaces and CRDs first), nothing else."""
    assert sorted(kustomize("manifests/base"), key=_key) == sorted(install.manifests(), key=_key)


def test_namespaced_overlay_has_no_cluster_rights() -> None:
    objs = kustomize("manifests/overlays/namespaced")
    assert not by_kind(objs, "ClusterRole") and not by_kind(objs, "ClusterRoleBinding")
    ns = install.OVERLAY_WATCHED_NAMESPACE
    roles = {r["metadata"]["namespace"]: r["rules"] for r in by_kind(objs, "Role")}
    assert roles == {
        ns: rbac.rules_for("watched"),
        install.NAMESPACE: rbac.lease_rules(install.NAME),
    }
    args = the(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args == install.operator_args([ns])


# ---- everything rendered is valid Kubernetes 1.37 ---------------------------------------------


RENDERINGS = {
    "chart-default": lambda: template(show_tests=True),
    "chart-namespaced": lambda: template("watchNamespaces={a,b}", "replicaCount=1"),
    "chart-all-options": lambda: template(
        "metrics.serviceMonitor.enabled=true",
        "metrics.prometheusRule.enabled=true",
        "metrics.grafanaDashboard.enabled=true",
        "networkPolicy.enabled=true",
        "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.team=obs",
        "namespace.create=true",
        "tolerations[0].key=x",
        "tolerations[0].operator=Exists",
        "topologySpreadConstraints[0].maxSkew=1",
        "topologySpreadConstraints[0].topologyKey=topology.kubernetes.io/zone",
        "topologySpreadConstraints[0].whenUnsatisfiable=ScheduleAnyway",
        "nodeSelector.kubernetes\\.io/os=linux",
        "priorityClassName=system-cluster-critical",
        "imagePullSecrets[0].name=regcred",
        "verbose=true",
        api_versions=PROMETHEUS_APIS,
    ),
    "kustomize-base": lambda: kustomize("manifests/base"),
    "kustomize-namespaced": lambda: kustomize("manifests/overlays/namespaced"),
}


@pytest.mark.parametrize("rendering", sorted(RENDERINGS))
def test_rendered_objects_validate_against_kubernetes_1_37(rendering: str) -> None:
    version = "1.37.0"
    objs = RENDERINGS[rendering]()
    assert objs
    problems = []
    for obj in objs:
        if obj["kind"] in NOT_BUILTIN:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            problems.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert not problems
