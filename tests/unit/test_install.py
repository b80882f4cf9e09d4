"""The install manifests are generated from the same sources as everything else."""

from __future__ import annotations

from pathlib import Path

import yaml

from mcp_operator import rbac
from mcp_operator.api.crd import crd
from mcp_operator.install import manifests, manifests_yaml

ROOT = Path(__file__).resolve().parents[2]


def test_checked_in_manifests_match_generator() -> None:
    checked_in = (ROOT / "manifests" / "install.yaml").read_text()
    assert checked_in == manifests_yaml(), (
        "manifests/install.yaml drifted: run `mcp-operator manifests > manifests/install.yaml`"
    )


def test_manifests_carry_the_generated_crd_and_rules() -> None:
    docs = list(yaml.safe_load_all(manifests_yaml()))
    by_kind = {d["kind"]: d for d in docs}
    assert by_kind["CustomResourceDefinition"] == crd()
    assert by_kind["ClusterRole"]["rules"] == rbac.RULES
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
