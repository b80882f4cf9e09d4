"""The renderers, through what a user would notice in the objects they produce."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_operator.api.models import MCPServer
from mcp_operator.api.validation import parse_server
from mcp_operator.render import Capabilities, RenderContext, render

ROOT = Path(__file__).resolve().parents[2]
# examples/bad.yaml is the deliberately invalid one (README shows its errors).
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.stem != "bad")

SERVER = "mcp-operator.dev/server"
TIER = "mcp-operator.dev/tier"
RECOMMENDED = (
    "app.kubernetes.io/name",
    "app.kubernetes.io/instance",
    "app.kubernetes.io/component",
    "app.kubernetes.io/managed-by",
    "app.kubernetes.io/part-of",
)
Obj = dict[str, Any]


def example(name: str) -> MCPServer:
    return parse_server(yaml.safe_load((ROOT / "examples" / f"{name}.yaml").read_text()))


def server(**spec: Any) -> MCPServer:
    doc: Obj = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "tools"},
        "spec": {"image": "ghcr.io/example/mcp:1", **spec},
    }
    return parse_server(doc)


def by_kind(objects: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found: Obj = by_kind(objects, kind)[name]
    return found


def container(deployment: Obj) -> Obj:
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    found: Obj = c
    return found


def all_examples() -> list[Any]:
    return [pytest.param(p.stem, id=p.stem) for p in EXAMPLES]


# ---- what gets created ----------------------------------------------------------------------


def test_basic_example_makes_two_deployments_three_services_and_an_identity() -> None:
    objects = render(example("basic"))
    assert sorted(by_kind(objects, "Deployment")) == ["weather-backup", "weather-primary"]
    assert sorted(by_kind(objects, "Service")) == ["weather", "weather-backup", "weather-primary"]
    assert sorted(by_kind(objects, "ServiceAccount")) == ["weather"]
    # primary has 2 replicas (a PDB), the hot backup 1 (no PDB)
    assert sorted(by_kind(objects, "PodDisruptionBudget")) == ["weather-primary"]
    assert len(objects) == 7


def test_apply_order_is_identity_workloads_traffic() -> None:
    kinds = [o["kind"] for o in render(example("basic"))]
    assert kinds == [
        "ServiceAccount",
        "Deployment",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Service",
        "Service",
    ]


def test_everything_lands_in_the_servers_namespace() -> None:
    for obj in render(server()):
        assert obj["metadata"]["namespace"] == "tools"


def test_backup_disabled_means_one_tier() -> None:
    objects = render(server(backup={"enabled": False}, failover={"enabled": False}))
    assert sorted(by_kind(objects, "Deployment")) == ["weather-primary"]
    assert sorted(by_kind(objects, "Service")) == ["weather", "weather-primary"]


def test_spec_reaches_the_container() -> None:
    objects = render(
        server(
            command=["python", "-m", "srv"],
            args=["--port", "9000"],
            port=9000,
            env=[{"name": "A", "value": "1"}],
            envFrom=[{"configMapRef": {"name": "cfg"}}],
            resources={"limits": {"memory": "1Gi"}},
        )
    )
    c = container(one(objects, "Deployment", "weather-primary"))
    assert c["image"] == "ghcr.io/example/mcp:1"
    assert c["command"] == ["python", "-m", "srv"]
    assert c["args"] == ["--port", "9000"]
    assert c["env"] == [{"name": "HOME", "value": "/home/mcp"}, {"name": "A", "value": "1"}]
    assert c["envFrom"] == [{"configMapRef": {"name": "cfg"}}]
    assert c["resources"] == {"limits": {"memory": "1Gi"}}
    assert c["ports"] == [{"name": "mcp", "containerPort": 9000, "protocol": "TCP"}]
    svc = one(objects, "Service", "weather")
    assert svc["spec"]["ports"][0]["port"] == 9000
    assert svc["spec"]["ports"][0]["targetPort"] == "mcp"


def test_default_resources_have_requests_and_a_memory_limit() -> None:
    c = container(one(render(server()), "Deployment", "weather-primary"))
    assert c["resources"]["requests"]["cpu"]
    assert c["resources"]["requests"]["memory"]
    assert c["resources"]["limits"]["memory"]
    assert "command" not in c and "args" not in c
    assert c["env"] == [{"name": "HOME", "value": "/home/mcp"}]  # the writable home


# ---- labels and selectors -----------------------------------------------------------------


@pytest.mark.parametrize("name", all_examples())
def test_recommended_and_operator_labels_everywhere(name: str) -> None:
    srv = example(name)
    for obj in render(srv, RenderContext(owner_uid="u")):
        labels = obj["metadata"]["labels"]
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        for key in RECOMMENDED:
            assert labels.get(key), f"{where} lacks {key}"
        assert labels["app.kubernetes.io/instance"] == srv.metadata.name
        assert labels["app.kubernetes.io/managed-by"] == "mcp-operator"
        assert labels[SERVER] == srv.metadata.name, where
        is_stable_service = (
            obj["kind"] == "Service" and obj["metadata"]["name"] == srv.metadata.name
        )
        is_cache = labels["app.kubernetes.io/component"] == "cache"
        if obj["kind"] == "ServiceAccount" or is_stable_service or is_cache:
            # Not of a tier; the stable Service only *selects* one (see below), the cache
            # serves both.
            assert TIER not in labels, where
        else:
            assert labels[TIER] in {"primary", "backup"}, where
            assert obj["metadata"]["name"].endswith(labels[TIER]), where
        if obj["kind"] == "Deployment":
            tmpl = obj["spec"]["template"]["metadata"]["labels"]
            for key in RECOMMENDED:
                assert tmpl.get(key), f"{where} pod template lacks {key}"
            if is_cache:
                assert SERVER not in tmpl and tmpl["mcp-operator.dev/cache"] == srv.metadata.name
                continue
            assert tmpl[SERVER] == srv.metadata.name
            assert tmpl[TIER] == labels[TIER]


@pytest.mark.parametrize("name", all_examples())
def test_selectors_use_only_the_two_immutable_labels(name: str) -> None:
    srv = example(name)
    for obj in render(srv):
        kind = obj["kind"]
        if kind in {"Deployment", "PodDisruptionBudget"}:
            sel = obj["spec"]["selector"]
            assert set(sel) == {"matchLabels"}
            sel = sel["matchLabels"]
        elif kind == "Service":
            sel = obj["spec"]["selector"]
        else:
            continue
        if obj["metadata"]["name"].endswith("-cache"):
            # The cache's pods carry no server label: the prober would take them for MCP pods.
            assert sel == {"mcp-operator.dev/cache": srv.metadata.name}
            continue
        assert set(sel) == {SERVER, TIER}, f"{kind}/{obj['metadata']['name']}: {sel}"
        assert sel[SERVER] == srv.metadata.name
        if kind == "Deployment":
            template_labels = obj["spec"]["template"]["metadata"]["labels"]
            assert sel.items() <= template_labels.items()


def test_stable_service_selects_the_active_tier() -> None:
    srv = example("basic")
    stable = one(render(srv), "Service", "weather")
    assert stable["spec"]["selector"][TIER] == "primary"
    flipped = one(render(srv, RenderContext(active_tier="backup")), "Service", "weather")
    assert flipped["spec"]["selector"][TIER] == "backup"
    # only the selector changes on failover
    assert {k: v for k, v in stable.items() if k != "spec"} == {
        k: v for k, v in flipped.items() if k != "spec"
    }
    assert stable["spec"]["ports"] == flipped["spec"]["ports"]


def test_tier_services_select_their_own_tier_whatever_is_active() -> None:
    for active in ("primary", "backup"):
        objects = render(example("basic"), RenderContext(active_tier=active))
        for tier in ("primary", "backup"):
            svc = one(objects, "Service", f"weather-{tier}")
            assert svc["spec"]["selector"] == {SERVER: "weather", TIER: tier}


def test_parents_labels_and_annotations_are_not_copied() -> None:
    doc = yaml.safe_load((ROOT / "examples" / "basic.yaml").read_text())
    doc["metadata"]["labels"] = {"argocd.argoproj.io/instance": "apps", "team": "x"}
    doc["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "apps:x"}
    for obj in render(parse_server(doc)):
        assert "argocd.argoproj.io/instance" not in obj["metadata"]["labels"]
        assert "team" not in obj["metadata"]["labels"]
        assert "argocd.argoproj.io/tracking-id" not in obj["metadata"].get("annotations", {})
        if obj["kind"] == "Deployment":
            assert "team" not in obj["spec"]["template"]["metadata"]["labels"]


def test_pod_labels_and_annotations_reach_the_pod_template_only() -> None:
    objects = render(example("full"))
    dep = one(objects, "Deployment", "billing-tools-primary")
    assert dep["spec"]["template"]["metadata"]["labels"]["team"] == "billing"
    assert dep["spec"]["template"]["metadata"]["annotations"]["example.com/team"] == "billing"
    assert "team" not in dep["metadata"]["labels"]
    assert dep["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}


# ---- pod security ---------------------------------------------------------------------------


def test_pods_meet_the_restricted_pod_security_standard() -> None:
    for dep in by_kind(render(example("basic")), "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        psc = pod["securityContext"]
        assert psc["runAsNonRoot"] is True
        assert psc["seccompProfile"] == {"type": "RuntimeDefault"}
        assert psc.get("runAsUser", 1) != 0
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["capabilities"]["drop"] == ["ALL"]
            assert "add" not in sc["capabilities"]
            assert sc["readOnlyRootFilesystem"] is True
            assert sc.get("privileged", False) is False
            assert sc.get("seccompProfile", {"type": "RuntimeDefault"}) == {
                "type": "RuntimeDefault"
            }
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
        tmp = {v["name"]: v for v in pod["volumes"]}["tmp"]
        assert "emptyDir" in tmp
        assert not any("hostPath" in v for v in pod["volumes"])
        assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")


def test_security_context_is_overridable() -> None:
    srv = server(
        pod={
            "securityContext": {"runAsUser": 1000},
            "containerSecurityContext": {"readOnlyRootFilesystem": False},
        }
    )
    pod = one(render(srv), "Deployment", "weather-primary")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsUser"] == 1000
    assert pod["securityContext"]["runAsNonRoot"] is True  # the rest of the defaults stay
    sc = pod["containers"][0]["securityContext"]
    assert sc["readOnlyRootFilesystem"] is False
    assert sc["allowPrivilegeEscalation"] is False


# ---- probes and readiness ---------------------------------------------------------------------


def test_probes_default_to_tcp_on_the_mcp_port() -> None:
    c = container(one(render(server()), "Deployment", "weather-primary"))
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert c[probe]["tcpSocket"] == {"port": "mcp"}, probe
        assert c[probe]["periodSeconds"] >= 1


def test_probes_are_overridable_one_by_one() -> None:
    readiness = {"httpGet": {"path": "/healthz", "port": "mcp"}, "periodSeconds": 3}
    c = container(
        one(render(server(probes={"readiness": readiness})), "Deployment", "weather-primary")
    )
    assert c["readinessProbe"] == readiness
    assert c["livenessProbe"]["tcpSocket"] == {"port": "mcp"}
    assert c["startupProbe"]["tcpSocket"] == {"port": "mcp"}


def test_pods_carry_the_mcp_health_readiness_gate() -> None:
    for dep in by_kind(render(example("full")), "Deployment").values():
        gates = dep["spec"]["template"]["spec"]["readinessGates"]
        assert {"conditionType": "mcp-operator.dev/mcp-healthy"} in gates


def test_default_anti_affinity_spreads_a_tiers_pods() -> None:
    dep = one(render(server()), "Deployment", "weather-backup")
    terms = dep["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert terms[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
        SERVER: "weather",
        TIER: "backup",
    }


def test_rolling_update_never_drops_below_desired() -> None:
    dep = one(render(server()), "Deployment", "weather-primary")
    assert dep["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


@pytest.mark.parametrize(
    ("pod", "minor", "sleep"),
    [({}, 37, 5), ({"drainSeconds": 12}, 30, 12), ({"drainSeconds": 0}, 37, None), ({}, 29, None)],
    ids=["default", "set-on-1.30", "off", "server-without-sleep-action"],
)
def test_terminating_pods_drain_before_sigterm(pod: Obj, minor: int, sleep: int | None) -> None:
    """A preStop sleep keeps a terminating pod serving while proxies drop it; a server
    older than 1.30 refuses the field, so it is left out there."""
    ctx = RenderContext(capabilities=Capabilities(minor=minor))
    for name in ("weather-primary", "weather-backup"):
        template = one(render(server(pod=pod), ctx), "Deployment", name)["spec"]["template"]
        lifecycle = container({"spec": {"template": template}}).get("lifecycle")
        grace = template["spec"].get("terminationGracePeriodSeconds")
        if sleep is None:
            assert lifecycle is None and grace is None
        else:
            assert lifecycle == {"preStop": {"sleep": {"seconds": sleep}}}
            assert grace == sleep + 30  # the server keeps Kubernetes' default 30 s to exit


# ---- replicas, standby and PDBs -----------------------------------------------------------------


def replicas(objects: list[Obj]) -> dict[str, int]:
    return {n: d["spec"]["replicas"] for n, d in by_kind(objects, "Deployment").items()}


def test_hot_backup_runs_all_the_time() -> None:
    assert replicas(render(example("basic"))) == {"weather-primary": 2, "weather-backup": 1}


@pytest.mark.parametrize(
    ("ctx", "backup"),
    [
        (RenderContext(), 0),
        (RenderContext(backup_warm=True), 1),
        (RenderContext(active_tier="backup"), 1),
    ],
    ids=["idle", "warming", "active"],
)
def test_cold_backup_runs_only_when_active_or_warm(ctx: RenderContext, backup: int) -> None:
    assert replicas(render(example("cold-standby"), ctx)) == {
        "search-primary": 1,
        "search-backup": backup,
    }


def test_pdb_only_for_tiers_with_more_than_one_replica() -> None:
    srv = server(primary={"replicas": 1}, backup={"replicas": 2, "standby": "cold"})
    assert by_kind(render(srv), "PodDisruptionBudget") == {}
    warm = by_kind(render(srv, RenderContext(backup_warm=True)), "PodDisruptionBudget")
    assert sorted(warm) == ["weather-backup"]
    full = by_kind(render(example("full")), "PodDisruptionBudget")
    assert sorted(full) == ["billing-tools-backup", "billing-tools-primary"]
    pdb = full["billing-tools-primary"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"]["matchLabels"] == {SERVER: "billing-tools", TIER: "primary"}


@pytest.mark.parametrize(
    ("api_versions", "expected"),
    [
        (frozenset({"v1", "apps/v1", "policy/v1", "policy/v1beta1"}), "policy/v1"),
        (frozenset({"v1", "apps/v1", "policy/v1"}), "policy/v1"),
        (frozenset({"v1", "apps/v1", "policy/v1beta1"}), "policy/v1beta1"),
    ],
    ids=["current", "1.25+", "1.20"],
)
def test_pdb_api_version_follows_capabilities(api_versions: frozenset[str], expected: str) -> None:
    ctx = RenderContext(capabilities=Capabilities(api_versions=api_versions))
    [pdb] = by_kind(render(example("basic"), ctx), "PodDisruptionBudget").values()
    assert pdb["apiVersion"] == expected


def test_offline_render_targets_current_kubernetes() -> None:
    [pdb] = by_kind(render(example("basic")), "PodDisruptionBudget").values()
    assert pdb["apiVersion"] == "policy/v1"


# ---- identity -----------------------------------------------------------------------------------


def test_service_account_has_no_token_and_pods_mount_none() -> None:
    objects = render(example("basic"))
    sa = one(objects, "ServiceAccount", "weather")
    assert sa["automountServiceAccountToken"] is False
    for dep in by_kind(objects, "Deployment").values():
        pod = dep["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "weather"
        assert pod["automountServiceAccountToken"] is False


def test_own_service_account_is_used_and_none_is_created() -> None:
    objects = render(server(pod={"serviceAccountName": "bring-your-own"}))
    assert by_kind(objects, "ServiceAccount") == {}
    for dep in by_kind(objects, "Deployment").values():
        assert dep["spec"]["template"]["spec"]["serviceAccountName"] == "bring-your-own"


# ---- wire details ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", all_examples())
def test_every_port_has_protocol_tcp(name: str) -> None:
    for obj in render(example(name)):
        if obj["kind"] == "Service":
            ports = obj["spec"]["ports"]
        elif obj["kind"] == "Deployment":
            ports = [p for c in obj["spec"]["template"]["spec"]["containers"] for p in c["ports"]]
        else:
            continue
        assert ports
        for port in ports:
            assert port["protocol"] == "TCP", f"{obj['kind']}/{obj['metadata']['name']}: {port}"


@pytest.mark.parametrize("name", all_examples())
def test_render_is_deterministic_and_pure(name: str) -> None:
    srv = example(name)
    before = srv.model_dump()
    first = render(srv, RenderContext(owner_uid="u"))
    snapshot = copy.deepcopy(first)
    first[0]["metadata"]["labels"]["mutated"] = "yes"  # callers may mutate what they get
    second = render(srv, RenderContext(owner_uid="u"))
    assert second == snapshot
    assert yaml.safe_dump_all(second, sort_keys=False) == yaml.safe_dump_all(
        snapshot, sort_keys=False
    )
    assert srv.model_dump() == before


def test_editing_a_rendered_object_does_not_change_later_renders() -> None:
    srv = example("full")
    dep = one(render(srv), "Deployment", "billing-tools-primary")
    dep["spec"]["template"]["spec"]["nodeSelector"]["mutated"] = "yes"
    dep["spec"]["template"]["spec"]["containers"][0]["env"][1]["value"] = "debug"
    again = one(render(srv), "Deployment", "billing-tools-primary")
    assert again["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/os": "linux"}
    assert again["spec"]["template"]["spec"]["containers"][0]["env"][1] == {
        "name": "LOG_LEVEL",
        "value": "info",
    }


def test_editing_default_resources_does_not_leak_into_other_servers() -> None:
    c = container(one(render(server()), "Deployment", "weather-primary"))
    original = copy.deepcopy(c["resources"])
    c["resources"]["limits"]["memory"] = "1Ti"
    try:
        other = container(one(render(example("basic")), "Deployment", "weather-primary"))
        assert other["resources"] == original
    finally:
        c["resources"]["limits"]["memory"] = original["limits"]["memory"]


def test_owner_reference_only_when_the_owner_is_known() -> None:
    srv = example("basic")
    for obj in render(srv):
        assert "ownerReferences" not in obj["metadata"]
    for obj in render(srv, RenderContext(owner_uid="1234-uid")):
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mcp-operator.dev/v1alpha1",
                "kind": "MCPServer",
                "name": "weather",
                "uid": "1234-uid",
                "controller": True,
            }
        ]


@pytest.mark.parametrize("name", all_examples())
def test_child_names_are_dns1035_labels(name: str) -> None:
    import re

    for obj in render(example(name)):
        child = obj["metadata"]["name"]
        assert len(child) <= 63 and re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", child), child


def test_longest_allowed_name_gives_valid_child_names() -> None:
    doc = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "a" * 45},
        "spec": {"image": "i"},
    }
    for obj in render(parse_server(doc)):
        assert len(obj["metadata"]["name"]) <= 63
        for value in obj["metadata"]["labels"].values():
            assert len(value) <= 63
