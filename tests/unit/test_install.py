"""The install manifests are generated from the same sources as everything else."""

from __future__ import annotations

from pathlib import Path

import yaml

from mcp_operator import rbac
from mcp_operator.api.crd import crd
from mcp_operator.install import manifests, manifests_yaml, repo_files

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_install_files_match_generator() -> None:
    """install.yaml, the kustomize base and overlay, and the chart's CRD and rules."""
    drifted = [rel for rel, text in repo_files().items() if (ROOT / rel).read_text() != text]
    assert not drifted, f"{drifted} drifted: run `make manifests`"


def test_generated_overlay_files_are_all_referenced() -> None:
    overlay = ROOT / "manifests" / "overlays" / "namespaced"
    on_disk = {p.name for p in overlay.iterdir()}
    assert on_disk == {
        rel.rsplit("/", 1)[1] for rel in repo_files() if rel.startswith("manifests/overlays")
    }


def test_manifests_carry_the_generated_crd_and_rules() -> None:
    docs = list(yaml.safe_load_all(manifests_yaml()))
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["CustomResourceDefinition"] == crd()
    assert by_kind["ClusterRole"]["rules"] + by_kind["Role"]["rules"] == rbac.RULES
    binding = by_kind["ClusterRoleBinding"]
    assert binding["subjects"][0]["name"] == by_kind["ServiceAccount"]["metadata"]["name"]


def test_operator_pod_is_restricted_and_leader_elected() -> None:
    deploy = next(d for d in manifests() if d["kind"] == "Deployment")
    pod = deploy["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
    assert "--leader-lease" in container["args"]
    assert deploy["spec"]["replicas"] >= 2
    assert {o["kind"] for o in manifests()} >= {"PodDisruptionBudget", "Service"}


def test_rule_scopes_partition_the_one_list() -> None:
    """Every rule is granted somewhere, and exactly once."""
    scopes = [rbac.rules_for(s) for s in ("watched", "cluster", "operator")]
    granted = [rule for scope in scopes for rule in scope]
    assert sorted(map(repr, granted)) == sorted(map(repr, rbac.RULES))
    assert all(scopes)
    assert not any("secrets" in r["resources"] for r in rbac.rules_for("cluster", "operator"))


def test_security_notes_name_every_granted_resource() -> None:
    notes = (ROOT / "docs" / "security.md").read_text()
    missing = [r for rule in rbac.RULES for r in rule["resources"] if f"`{r}`" not in notes]
    assert not missing, f"docs/security.md does not say why the operator may touch {missing}"


def test_lease_rights_only_in_the_operator_namespace_for_its_lease() -> None:
    """No cluster-wide lease rights; get/update only on the Lease the Deployment names."""
    docs = manifests()
    cluster_rules = next(d for d in docs if d["kind"] == "ClusterRole")["rules"]
    assert not any("leases" in r["resources"] for r in cluster_rules)
    role = next(d for d in docs if d["kind"] == "Role" and "leader" in d["metadata"]["name"])
    deploy = next(d for d in docs if d["kind"] == "Deployment")
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    lease = args[args.index("--leader-lease") + 1]
    assert role["metadata"]["namespace"] == deploy["metadata"]["namespace"]
    for rule in role["rules"]:
        assert rule["resources"] == ["leases"]
        assert rule.get("resourceNames") == [lease] or rule["verbs"] == ["create"]
