"""Pod options and the honest render (issue 11), through the objects a user would inspect."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.cli import main
from mcp_operator.render import RenderContext, render
from tests.unit.test_render import container, one, server

Obj = dict[str, Any]


def pod_spec(objects: list[Obj], tier: str = "primary") -> Obj:
    spec: Obj = one(objects, "Deployment", f"weather-{tier}")["spec"]["template"]["spec"]
    return spec


def cli(tmp_path: Path, text: str, *args: str) -> tuple[int, str, str]:
    path = tmp_path / "in.yaml"
    path.write_text(text)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["render", "-f", str(path), *args])
    return code, out.getvalue(), err.getvalue()


MANIFEST = """apiVersion: mcp-operator.dev/v1alpha1
kind: MCPServer
metadata: {name: weather}
spec: {image: ghcr.io/example/mcp:1}
"""

# ---- honest render --------------------------------------------------------------------------


def test_absent_namespace_stays_absent(tmp_path: Path) -> None:
    code, out, _ = cli(tmp_path, MANIFEST)
    assert code == 0
    for obj in yaml.safe_load_all(out):
        assert "namespace" not in obj["metadata"], obj["kind"]


def test_dash_n_sets_the_namespace_and_refuses_a_different_one(tmp_path: Path) -> None:
    code, out, _ = cli(tmp_path, MANIFEST, "-n", "tools")
    assert code == 0
    assert {o["metadata"]["namespace"] for o in yaml.safe_load_all(out)} == {"tools"}
    other = MANIFEST.replace("{name: weather}", "{name: weather, namespace: prod}")
    code, out, err = cli(tmp_path, other, "-n", "tools")
    assert code == 1 and out == ""
    assert "metadata.namespace: is 'prod', but -n asks for 'tools'" in err


def test_no_yaml_anchors_even_for_shared_values(tmp_path: Path) -> None:
    # The same selector dict appears in several objects: PyYAML would print &id001 / *id001.
    code, out, _ = cli(tmp_path, MANIFEST)
    assert code == 0
    assert "&id" not in out and "*id" not in out


def test_owner_references_as_the_operator_sets_them_or_none(tmp_path: Path) -> None:
    with_uid = MANIFEST.replace("{name: weather}", "{name: weather, uid: 1234-abcd}")
    _, out, _ = cli(tmp_path, with_uid)
    for obj in yaml.safe_load_all(out):
        assert obj["metadata"]["ownerReferences"] == [
            {
                "apiVersion": "mcp-operator.dev/v1alpha1",
                "kind": "MCPServer",
                "name": "weather",
                "uid": "1234-abcd",
                "controller": True,
            }
        ]
    _, out, _ = cli(tmp_path, MANIFEST)
    refs = [o["metadata"]["ownerReferences"][0]["uid"] for o in yaml.safe_load_all(out)]
    assert set(refs) == {"<uid of MCPServer weather>"}
    _, out, _ = cli(tmp_path, MANIFEST, "--no-owner-refs")
    assert all("ownerReferences" not in o["metadata"] for o in yaml.safe_load_all(out))


def test_kubernetes_list_items_are_rendered(tmp_path: Path) -> None:
    items = yaml.safe_load(MANIFEST)
    doc = {"apiVersion": "v1", "kind": "List", "items": [items]}
    code, out, err = cli(tmp_path, yaml.safe_dump(doc))
    assert code == 0, err
    assert "weather-primary" in out


# ---- pod options ----------------------------------------------------------------------------


def test_volumes_and_mounts_reach_the_pod() -> None:
    objects = render(
        server(
            pod={"volumes": [{"name": "config", "configMap": {"name": "weather-config"}}]},
            volumeMounts=[{"name": "config", "mountPath": "/etc/weather", "readOnly": True}],
        )
    )
    spec = pod_spec(objects)
    assert {"name": "config", "configMap": {"name": "weather-config"}} in spec["volumes"]
    mounts = container(one(objects, "Deployment", "weather-primary"))["volumeMounts"]
    assert {"name": "config", "mountPath": "/etc/weather", "readOnly": True} in mounts


def test_writable_home_by_default_and_user_home_wins() -> None:
    objects = render(server())
    c = container(one(objects, "Deployment", "weather-primary"))
    assert {"name": "HOME", "value": "/home/mcp"} in c["env"]
    assert {"name": "home", "mountPath": "/home/mcp"} in c["volumeMounts"]
    assert {"name": "home", "emptyDir": {"sizeLimit": "256Mi"}} in pod_spec(objects)["volumes"]
    own = container(
        one(
            render(server(env=[{"name": "HOME", "value": "/data"}])),
            "Deployment",
            "weather-primary",
        )
    )
    assert [e for e in own["env"] if e["name"] == "HOME"] == [{"name": "HOME", "value": "/data"}]
    off = render(server(home={"enabled": False}))
    assert "env" not in container(one(off, "Deployment", "weather-primary"))
    assert all(v["name"] != "home" for v in pod_spec(off)["volumes"])


def test_automount_is_off_by_default_and_can_be_turned_on() -> None:
    assert pod_spec(render(server()))["automountServiceAccountToken"] is False
    objects = render(
        server(pod={"serviceAccountName": "reader", "automountServiceAccountToken": True})
    )
    assert pod_spec(objects)["automountServiceAccountToken"] is True
    assert pod_spec(objects)["serviceAccountName"] == "reader"


def test_image_pull_policy() -> None:
    c = container(one(render(server(imagePullPolicy="Always")), "Deployment", "weather-primary"))
    assert c["imagePullPolicy"] == "Always"


def test_tiers_prefer_different_zones_by_default() -> None:
    objects = render(server())
    for tier, other in (("primary", "backup"), ("backup", "primary")):
        terms = pod_spec(objects, tier)["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        zone = [
            t for t in terms if t["podAffinityTerm"]["topologyKey"] == "topology.kubernetes.io/zone"
        ]
        assert zone, tier
        assert zone[0]["podAffinityTerm"]["labelSelector"]["matchLabels"] == {
            "mcp-operator.dev/server": "weather",
            "mcp-operator.dev/tier": other,
        }


def test_per_tier_placement_overrides_only_its_tier() -> None:
    objects = render(
        server(
            pod={
                "nodeSelector": {"pool": "general"},
                "tolerations": [{"key": "a", "operator": "Exists"}],
            },
            backup={"pod": {"nodeSelector": {"pool": "spot"}, "affinity": {"nodeAffinity": {}}}},
            primary={
                "pod": {
                    "topologySpreadConstraints": [
                        {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}
                    ]
                }
            },
        )
    )
    primary, backup = pod_spec(objects, "primary"), pod_spec(objects, "backup")
    assert primary["nodeSelector"] == {"pool": "general"}
    assert backup["nodeSelector"] == {"pool": "spot"}
    assert backup["affinity"] == {"nodeAffinity": {}}
    assert "podAntiAffinity" in primary["affinity"]
    assert primary["tolerations"] == backup["tolerations"] == [{"key": "a", "operator": "Exists"}]
    assert primary["topologySpreadConstraints"][0]["maxSkew"] == 1
    assert "topologySpreadConstraints" not in backup


def test_security_contexts_are_deep_merged_over_the_defaults() -> None:
    objects = render(
        server(
            pod={
                "securityContext": {
                    "seccompProfile": {"type": "Localhost", "localhostProfile": "p"}
                },
                "containerSecurityContext": {"capabilities": {"add": ["NET_BIND_SERVICE"]}},
            }
        )
    )
    c = container(one(objects, "Deployment", "weather-primary"))["securityContext"]
    assert c["capabilities"] == {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
    assert c["readOnlyRootFilesystem"] is True
    pod = pod_spec(objects)["securityContext"]
    assert pod["seccompProfile"] == {"type": "Localhost", "localhostProfile": "p"}
    assert pod["runAsNonRoot"] is True


@pytest.mark.parametrize("where", ["securityContext", "containerSecurityContext"])
def test_root_beside_run_as_non_root_is_refused_with_why(where: str) -> None:
    with pytest.raises(InvalidSpec) as info:
        server(pod={where: {"runAsUser": 0}})
    [problem] = info.value.problems
    assert problem.path == f"spec.pod.{where}.runAsUser"
    assert "runAsNonRoot" in problem.message and "never start" in problem.message


def test_root_is_allowed_when_run_as_non_root_is_off() -> None:
    off = {"runAsUser": 0, "runAsNonRoot": False}
    objects = render(server(pod={"securityContext": off, "containerSecurityContext": off}))
    assert pod_spec(objects)["securityContext"]["runAsUser"] == 0


def test_session_affinity_on_every_service() -> None:
    for affinity in ("None", "ClientIP"):
        objects = render(server(service={"sessionAffinity": affinity}))
        services = [o for o in objects if o["kind"] == "Service"]
        assert len(services) == 3
        assert {s["spec"]["sessionAffinity"] for s in services} == {affinity}


def test_autoscaling_leaves_primary_replicas_to_the_hpa() -> None:
    objects = render(server(primary={"replicas": 3, "autoscaling": {"enabled": True}}))
    assert "replicas" not in one(objects, "Deployment", "weather-primary")["spec"]
    assert one(objects, "Deployment", "weather-backup")["spec"]["replicas"] == 1
    # replicas is still the floor the PDB is sized for
    assert one(objects, "PodDisruptionBudget", "weather-primary")


def test_port_9090_is_free() -> None:
    assert server(port=9090).spec.port == 9090


def test_render_context_namespace_from_the_cluster_is_kept() -> None:
    objects = render(server(), RenderContext(owner_uid="u"))
    assert {o["metadata"]["namespace"] for o in objects} == {"tools"}


def test_a_volume_referencing_a_missing_config_map_is_a_reference() -> None:
    from mcp_operator.reconcile.worker import _references

    srv = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools"},
            "spec": {
                "image": "x",
                "pod": {
                    "volumes": [
                        {"name": "c", "configMap": {"name": "cfg"}},
                        {"name": "s", "secret": {"secretName": "sec", "optional": True}},
                    ]
                },
            },
        }
    )
    assert _references(srv) == {("ConfigMap", "cfg")}
