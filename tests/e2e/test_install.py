"""Install as a user would, on the real control plane: the Helm chart, the kustomize base and
the namespaced overlay. Each time, the operator then runs here *as the installed
ServiceAccount* (a TokenRequest token, so exactly the RBAC the install granted, with the
Deployment's own arguments) and an example MCPServer becomes Ready under the node agent.

Written for any supported server version: on servers older than 1.25 (no server-side field
validation) kubectl and helm cannot validate CEL-bearing CRDs client-side, so validation is
left to the server there; on current servers nothing is switched off.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mcp_devcluster.controlplane import ControlPlane, tools_bin_dir
from mcp_devcluster.stack import EXAMPLE_IMAGE, condition, free_port
from mcp_operator import install
from mcp_operator.api.crd import crd
from tests.conftest import wait_established
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, others_paused

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mcp-operator"
CRD_NAME = crd()["metadata"]["name"]
READY_TIMEOUT = 90.0
Obj = dict[str, Any]


def server_minor(kubectl: Kubectl) -> int:
    version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]
    return int("".join(c for c in version["minor"] if c.isdigit()))


@pytest.fixture(scope="module")
def old_server(kubectl: Kubectl) -> bool:
    """A server older than 1.25 does not know the CRD's x-kubernetes-validations: client-side
    OpenAPI checks reject them, and its server-side apply refuses fields outside its schema
    (a client-side apply drops them). It has no policy/v1 before 1.21 either."""
    return server_minor(kubectl) < 25


def helm_write_flags(old_server: bool) -> list[str]:
    return ["--server-side=false", "--disable-openapi-validation"] if old_server else []


def helm(cluster: ControlPlane, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [str(tools_bin_dir() / "helm"), "--kubeconfig", str(cluster.admin_kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)}: {result.stderr}{result.stdout}")
    return result


def token_kubeconfig(
    cluster: ControlPlane, kubectl: Kubectl, namespace: str, sa: str, path: Path
) -> Path:
    """A kubeconfig carrying a TokenRequest token of ``namespace/sa``: that identity only."""
    token = kubectl("create", "token", sa, "-n", namespace, "--duration=1h").stdout.strip()
    config = yaml.safe_load(cluster.admin_kubeconfig.read_text())  # same server and CA
    config["users"] = [{"name": sa, "user": {"token": token}}]
    for context in config["contexts"]:
        context["context"]["user"] = sa
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class InstalledOperator:
    """The operator as an installed Deployment would run it, but as a local process."""

    proc: subprocess.Popen[bytes]
    log: Path
    metrics_port: int
    kubeconfig: Path

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def container_args(objects: list[Obj]) -> list[str]:
    (deploy,) = [o for o in objects if o["kind"] == "Deployment"]
    args = deploy["spec"]["template"]["spec"]["containers"][0]["args"]
    return [str(a) for a in args]


@contextlib.contextmanager
def operator_as(
    kubeconfig: Path, args: list[str], namespace: str, workdir: Path
) -> Iterator[InstalledOperator]:
    """Run ``mcp-operator`` with the Deployment's ``args`` (ports moved to free ones) and the
    Deployment's POD_NAMESPACE, as the identity in ``kubeconfig``; wait until it is live."""
    metrics, health = free_port(), free_port()
    kept = [a for a in args if not a.startswith(("--metrics-port", "--liveness-port"))]
    argv = [sys.executable, "-m", "mcp_operator.cli", *kept]
    argv += [f"--metrics-port={metrics}", f"--liveness-port={health}"]
    env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "POD_NAMESPACE": namespace,
        "POD_NAME": f"local-{secrets.token_hex(3)}",
        "PYTHONUNBUFFERED": "1",
    }
    log = workdir / "operator.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    op = InstalledOperator(proc, log, metrics, kubeconfig)
    try:

        def live() -> bool:
            assert proc.poll() is None, f"operator exited:\n{op.tail()}"
            return httpx.get(f"http://127.0.0.1:{health}/healthz", timeout=1).is_success

        wait_for(live, timeout=45, what=f"operator live:\n{op.tail()}")
        yield op
    finally:
        op.stop()


def example_server(namespace: str, name: str) -> Obj:
    """examples/basic.yaml, in ``namespace``."""
    doc = yaml.safe_load((ROOT / "examples" / "basic.yaml").read_text())
    doc["metadata"] = {"name": name, "namespace": namespace}
    return dict(doc)


def assert_reconciles_to_ready(kubectl: Kubectl, op: InstalledOperator, namespace: str) -> Obj:
    name = f"ex-{secrets.token_hex(2)}"
    kubectl(
        "apply",
        "--validate=false",
        "-f",
        "-",
        input=yaml.safe_dump(example_server(namespace, name)),
    )

    def ready() -> Obj | None:
        obj = dict(get_json(kubectl, "mcpserver", name, "-n", namespace))
        cond = condition(obj, "Ready")
        return obj if cond and cond["status"] == "True" else None

    try:
        return wait_for(ready, timeout=READY_TIMEOUT, what=f"{namespace}/{name} Ready")
    except TimeoutError:
        obj = get_json(kubectl, "mcpserver", name, "-n", namespace)
        pytest.fail(
            f"not Ready: {json.dumps(obj.get('status'), indent=1)}\noperator:\n{op.tail()}",
            pytrace=False,
        )


def apply(kubectl: Kubectl, old_server: bool, *args: str, doc: str | None = None) -> str:
    """Server-side apply (what the README tells users); client-side on an old server."""
    mode = ["--validate=false"] if old_server else ["--server-side", "--field-manager=install"]
    return str(kubectl("apply", *mode, *args, input=doc, timeout=120).stdout)


def apply_kustomization(kubectl: Kubectl, old_server: bool, path: Path) -> None:
    if not old_server:
        apply(kubectl, old_server, "-k", str(path))
        return
    objects = [d for d in yaml.safe_load_all(kubectl("kustomize", str(path)).stdout) if d]
    objects = [o for o in objects if not o["apiVersion"].startswith("policy/")]
    apply(kubectl, old_server, "-f", "-", doc=yaml.safe_dump_all(objects))


# ---- Helm ------------------------------------------------------------------------------------


@dataclass
class Release:
    name: str
    namespace: str
    objects: list[Obj]


def adopt_existing_crd(kubectl: Kubectl, release: str, namespace: str) -> None:
    """A CRD installed before (kubectl, kustomize, an earlier test) blocks `helm install`
    unless Helm may adopt it: the documented labels and annotations (README, Install)."""
    if kubectl("get", "crd", CRD_NAME, check=False).returncode != 0:
        return
    kubectl("label", "--overwrite", "crd", CRD_NAME, "app.kubernetes.io/managed-by=Helm")
    kubectl(
        "annotate",
        "--overwrite",
        "crd",
        CRD_NAME,
        f"meta.helm.sh/release-name={release}",
        f"meta.helm.sh/release-namespace={namespace}",
    )


@pytest.fixture(scope="module")
def release(cluster: ControlPlane, kubectl: Kubectl, old_server: bool) -> Iterator[Release]:
    namespace = f"mcp-helm-{secrets.token_hex(3)}"
    name = "mcp"
    flags = helm_write_flags(old_server)
    adopt_existing_crd(kubectl, name, namespace)
    # The `helm test` pod's image: any with python3 (values.yaml); the node agent runs the
    # example server's image as a local program (there is no container runtime here).
    test_image = f"tests.image={EXAMPLE_IMAGE}"
    helm(cluster, "install", name, str(CHART), "-n", namespace, "--create-namespace",
         "--set", test_image, *flags)  # fmt: skip
    rendered = helm(cluster, "get", "manifest", name, "-n", namespace).stdout
    objects = [d for d in yaml.safe_load_all(rendered) if d]
    try:
        yield Release(name, namespace, objects)
    finally:
        helm(cluster, "uninstall", name, "-n", namespace, "--wait=false", check=False)
        kubectl("delete", "namespace", namespace, "--wait=false", check=False)


def test_helm_template_passes_a_server_side_dry_run(
    cluster: ControlPlane, kubectl: Kubectl, old_server: bool
) -> None:
    version = json.loads(kubectl("version", "-o", "json").stdout)["serverVersion"]["gitVersion"]
    rendered = helm(
        cluster, "template", "dry", str(CHART), "-n", "default", "--kube-version", version
    ).stdout
    out = apply(kubectl, old_server, "--dry-run=server", "-f", "-", doc=rendered)
    for kind in ("customresourcedefinition", "clusterrole", "deployment", "service"):
        assert f"{kind}" in out.lower(), out


def test_helm_install_with_a_values_typo_fails_on_the_schema(cluster: ControlPlane) -> None:
    result = helm(
        cluster,
        "install",
        "typo",
        str(CHART),
        "-n",
        "default",
        "--set",
        "replicaCont=3",
        check=False,
    )
    assert result.returncode != 0
    assert "replicaCont" in result.stderr and "not allowed" in result.stderr, result.stderr
    assert helm(cluster, "status", "typo", "-n", "default", check=False).returncode != 0


def test_helm_install_creates_crd_rbac_deployment_service(
    kubectl: Kubectl, release: Release
) -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in release.objects}
    for kind, name in kinds:
        scope = (
            []
            if kind in {"CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
            else [
                "-n",
                release.namespace,
            ]
        )
        kubectl("get", kind.lower(), name, *scope)
    wanted = {
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "ServiceAccount",
        "Deployment",
        "Service",
        "PodDisruptionBudget",
    }
    assert wanted <= {k for k, _ in kinds}
    crd_obj = get_json(kubectl, "crd", CRD_NAME)
    assert crd_obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep"
    established = condition(crd_obj, "Established")
    assert established and established["status"] == "True"


def test_operator_with_the_charts_identity_reconciles_an_example(
    cluster: ControlPlane,
    kubectl: Kubectl,
    node_agent: NodeAgentProcess,
    release: Release,
    unique_ns: str,
    tmp_path: Path,
) -> None:
    (sa,) = [o["metadata"]["name"] for o in release.objects if o["kind"] == "ServiceAccount"]
    config = token_kubeconfig(cluster, kubectl, release.namespace, sa, tmp_path / "sa.kubeconfig")
    with (
        others_paused(),
        operator_as(config, container_args(release.objects), release.namespace, tmp_path) as op,
    ):
        assert_reconciles_to_ready(kubectl, op, unique_ns)
        # `helm test`: the chart's test pod, run by the node agent, asks the metrics Service
        # by its cluster DNS name (nodeagent/dns) through the agent's Service proxy.
        endpoint_for_local_operator(kubectl, release, node_agent, op.metrics_port)
        tested = helm(cluster, "test", release.name, "-n", release.namespace, "--timeout", "120s")
        assert "Phase:          Succeeded" in tested.stdout, tested.stdout
        lease = get_json(kubectl, "lease", "-n", release.namespace, install_lease(release))
        assert lease["spec"]["holderIdentity"].startswith("local-")
    # A graceful stop hands the lease over at once (client-go's ReleaseOnCancel).
    lease = get_json(kubectl, "lease", "-n", release.namespace, install_lease(release))
    assert not lease["spec"].get("holderIdentity")


def endpoint_for_local_operator(
    kubectl: Kubectl, release: Release, agent: NodeAgentProcess, port: int
) -> None:
    """Make the local operator the ready endpoint of the chart's metrics Service.

    The chart's Deployment pods cannot run here (no mount namespace for their in-cluster
    credentials), so the operator runs as a local process; this EndpointSlice stands for its
    pod, as a hostNetwork pod's would. The address is a local one (the pod range is routed
    to this host) that the agent never hands to a pod (.255 of its pod CIDR); the operator's
    metrics server listens on every address. The EndpointSlice controller leaves a slice
    that another manager owns alone; the agent's proxy routes through every slice.
    """
    (service,) = [o for o in release.objects if o["kind"] == "Service"]
    (port_name,) = [p["name"] for p in service["spec"]["ports"]]
    argv = agent.proc.args
    assert isinstance(argv, list)
    cidr = str(argv[argv.index("--pod-cidr") + 1])
    address = str(ipaddress.ip_network(cidr).broadcast_address)
    slice_ = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": f"{service['metadata']['name']}-local-operator",
            "namespace": release.namespace,
            "labels": {
                "kubernetes.io/service-name": service["metadata"]["name"],
                "endpointslice.kubernetes.io/managed-by": "tests.mcp-operator.dev",
            },
        },
        "addressType": "IPv4",
        "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
        "ports": [{"name": port_name, "port": port, "protocol": "TCP"}],
    }
    kubectl("apply", "-f", "-", input=yaml.safe_dump(slice_))


def install_lease(release: Release) -> str:
    args = container_args(release.objects)
    return args[args.index("--leader-lease") + 1]


def test_helm_upgrade_keeps_the_crd_and_the_servers(
    cluster: ControlPlane, kubectl: Kubectl, release: Release, old_server: bool
) -> None:
    flags = helm_write_flags(old_server)
    uid = get_json(kubectl, "crd", CRD_NAME)["metadata"]["uid"]
    helm(cluster, "upgrade", release.name, str(CHART), "-n", release.namespace, *flags)
    assert get_json(kubectl, "crd", CRD_NAME)["metadata"]["uid"] == uid
    # Even an upgrade that stops rendering it (crds.install=false) leaves it: keep policy.
    helm(
        cluster,
        "upgrade",
        release.name,
        str(CHART),
        "-n",
        release.namespace,
        "--set",
        "crds.install=false",
        *flags,
    )
    assert get_json(kubectl, "crd", CRD_NAME)["metadata"]["uid"] == uid


# ---- kustomize ---------------------------------------------------------------------------------


def kustomized(kubectl: Kubectl, path: str) -> list[Obj]:
    out = kubectl("kustomize", str(ROOT / path)).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def remove_operator_objects(kubectl: Kubectl, objects: list[Obj], keep: set[str]) -> None:
    """Delete what an install created, except the kinds in ``keep`` (never the CRD: other
    tests' servers live in it)."""
    for obj in objects:
        if obj["kind"] in keep | {"CustomResourceDefinition"}:
            continue
        scope = ["-n", obj["metadata"]["namespace"]] if "namespace" in obj["metadata"] else []
        kubectl(
            "delete",
            obj["kind"].lower(),
            obj["metadata"]["name"],
            *scope,
            "--ignore-not-found",
            "--wait=false",
            check=False,
        )


def test_kustomize_base_installs_and_its_identity_reconciles(
    cluster: ControlPlane,
    kubectl: Kubectl,
    node_agent: NodeAgentProcess,
    old_server: bool,
    unique_ns: str,
    tmp_path: Path,
) -> None:
    objects = kustomized(kubectl, "manifests/base")
    apply_kustomization(kubectl, old_server, ROOT / "manifests/base")
    try:
        wait_established(kubectl, CRD_NAME)
        for kind in ("clusterrole", "clusterrolebinding"):
            kubectl("get", kind, install.NAME)
        kubectl("get", "deployment,service,serviceaccount", "-n", install.NAMESPACE)
        config = token_kubeconfig(
            cluster, kubectl, install.NAMESPACE, install.NAME, tmp_path / "sa.kubeconfig"
        )
        with (
            others_paused(),
            operator_as(config, container_args(objects), install.NAMESPACE, tmp_path) as op,
        ):
            assert_reconciles_to_ready(kubectl, op, unique_ns)
    finally:
        # Keep the namespace and ServiceAccount for the overlay test (a terminating namespace
        # takes a while); drop the cluster-wide rights, which the overlay must not inherit.
        remove_operator_objects(kubectl, objects, keep={"Namespace", "ServiceAccount"})


def test_namespaced_overlay_reconciles_there_and_reads_no_secrets_elsewhere(
    cluster: ControlPlane,
    kubectl: Kubectl,
    node_agent: NodeAgentProcess,
    old_server: bool,
    unique_ns: str,
    tmp_path: Path,
) -> None:
    overlay = ROOT / "manifests/overlays/namespaced"
    objects = kustomized(kubectl, "manifests/overlays/namespaced")
    watched = install.OVERLAY_WATCHED_NAMESPACE
    # The base test (or an earlier run) may have left cluster-wide rights behind: none allowed.
    for kind in ("clusterrolebinding", "clusterrole"):
        kubectl("delete", kind, install.NAME, "--ignore-not-found", check=False)
    apply_kustomization(kubectl, old_server, overlay)
    try:
        config = token_kubeconfig(
            cluster, kubectl, install.NAMESPACE, install.NAME, tmp_path / "sa.kubeconfig"
        )
        kubectl("create", "secret", "generic", "elsewhere", "-n", unique_ns, "--from-literal=k=v")
        kubectl("create", "secret", "generic", "here", "-n", watched, "--from-literal=k=v")
        denied = kubectl(
            "get", "secret", "elsewhere", "-n", unique_ns, kubeconfig=config, check=False
        )
        assert denied.returncode != 0 and "forbidden" in denied.stderr.lower(), denied.stderr
        kubectl("get", "secret", "here", "-n", watched, kubeconfig=config)
        cluster_wide = kubectl("get", "mcpservers", "-A", kubeconfig=config, check=False)
        assert cluster_wide.returncode != 0 and "forbidden" in cluster_wide.stderr.lower()
        with (
            others_paused(),
            operator_as(config, container_args(objects), install.NAMESPACE, tmp_path) as op,
        ):
            assert_reconciles_to_ready(kubectl, op, watched)
            # Exact names need no cluster-wide namespace list (kopf would retry it ~50 s).
            assert "is forbidden" not in op.tail(400), op.tail(400)
    finally:
        kubectl("delete", "mcpservers", "--all", "-n", watched, "--wait=false", check=False)
        remove_operator_objects(kubectl, objects, keep=set())
