"""Smoke on the oldest Kubernetes release the README claims (``OLDEST_K8S_VERSION``).

The suite runs on the newest tested release; this module starts its own control plane of the
oldest one and checks what a user installing there would hit first: the CRD is accepted by
``kubectl apply --server-side`` (client validation on: a CEL rule that does not compile or
blows the cost budget of that release fails here), a cross-field rule is enforced with its
message, and one MCPServer becomes Ready with its pods run by the node agent.

That build has no kube-scheduler (``make tools`` builds only kube-apiserver and
kube-controller-manager of the oldest release, to keep a cold CI run short): the node agent
binds the pods (``--binder agent``). Skipped, saying how to build them, only when those
binaries are absent; ``make tools`` (and so ``.ci/run``) builds them, so CI runs it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_devcluster.controlplane import OLDEST_K8S_VERSION, ControlPlane
from mcp_devcluster.stack import (
    OperatorProcess,
    condition,
    install_operator_rbac,
    server_manifest,
)
from tests.conftest import (
    kubectl_binary,
    kubectl_for,
    missing_binaries,
    started,
    wait_established,
)
from tests.e2e.conftest import get_json, start_node_agent, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "crds" / "mcpservers.mcp-operator.dev.yaml"
NAMESPACE = "smoke"


@pytest.fixture(scope="module")
def oldest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    cp = ControlPlane(
        tmp_path_factory.mktemp("oldest-cluster"),
        version=OLDEST_K8S_VERSION,
        scheduler=False,
        die_with_parent=True,
    )
    missing = missing_binaries(cp)
    if missing:
        pytest.skip(
            f"Kubernetes {OLDEST_K8S_VERSION} not built ({', '.join(missing)}): "
            f'K8S_BINS="kube-apiserver kube-controller-manager" '
            f"hack/build-k8s-module.sh {OLDEST_K8S_VERSION} (make tools does)"
        )
    with started(cp, timeout=120):
        yield cp


def test_oldest_release_takes_the_crd_enforces_cel_and_runs_a_server(
    oldest: ControlPlane, tmp_path: Path
) -> None:
    kubectl = kubectl_for(oldest)
    with oldest.client() as client:
        assert client.get("/version").json()["gitVersion"] == f"v{OLDEST_K8S_VERSION}"

    # The CRD, the way the README installs it.
    kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    crd_name = yaml.safe_load(CRD_FILE.read_text())["metadata"]["name"]
    wait_established(kubectl, crd_name)
    kubectl("create", "namespace", NAMESPACE)

    # CEL: a cross-field rule refused by this release's API server, with its message.
    bad = server_manifest("bad", NAMESPACE, health={"intervalSeconds": 1, "timeoutSeconds": 5})
    refused = kubectl("apply", "--server-side", "-f", "-", input=json.dumps(bad), check=False)
    assert refused.returncode != 0, refused.stdout
    assert "timeoutSeconds: must not exceed intervalSeconds" in refused.stderr, refused.stderr

    # One MCPServer Ready: operator (restricted identity) + node agent (it binds: no scheduler).
    install_operator_rbac(str(kubectl_binary()), oldest.admin_kubeconfig)
    agent = start_node_agent(oldest.admin_kubeconfig, tmp_path / "agent", "--binder", "agent")
    operator = OperatorProcess(oldest.operator_kubeconfig, tmp_path / "operator.log").start()
    try:
        operator.wait_live()
        good = server_manifest("smoke", NAMESPACE, backup={"enabled": False})
        kubectl("apply", "--server-side", "-f", "-", input=json.dumps(good))

        def ready() -> dict[str, Any] | None:
            obj: dict[str, Any] = get_json(kubectl, "mcpserver", "smoke", "-n", NAMESPACE)
            cond = condition(obj, "Ready")
            return obj if cond and cond["status"] == "True" else None

        wait_for(ready, timeout=180, what=f"MCPServer Ready on {OLDEST_K8S_VERSION}")
        pods = get_json(kubectl, "pods", "-n", NAMESPACE)
        running = [p for p in pods["items"] if p["status"].get("phase") == "Running"]
        assert running and all(p["spec"].get("nodeName") for p in running)
    except BaseException:
        print(operator.log_tail(), agent.log_tail(), sep="\n---- agent ----\n")
        raise
    finally:
        operator.stop()
        agent.stop()
