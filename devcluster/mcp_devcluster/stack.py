"""The local stack the demo and the e2e tests share: CRD + RBAC install and the operator
process, run as the restricted ``mcp-operator`` identity bound to the generated rules.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from mcp_operator import rbac
from mcp_operator.api.crd import crd
from mcp_operator.api.models import API_VERSION, KIND
from mcp_operator.render.context import CURRENT_API_VERSIONS

OPERATOR_USER = "mcp-operator"
# The image the node agent maps to the project's example MCP server.
EXAMPLE_IMAGE = "ghcr.io/mcp-operator/example-server:dev"
# Not "mcp-operator": that is the name the install manifests (kustomize base) give their own
# ClusterRole and binding, which the install e2e tests apply to the same cluster.
ROLE_NAME = "mcp-operator-dev-user"
__all__ = ["CURRENT_API_VERSIONS", "OperatorProcess", "free_port", "install_operator_rbac"]


def server_manifest(
    name: str, namespace: str, image: str = EXAMPLE_IMAGE, **spec: Any
) -> dict[str, Any]:
    """An ``MCPServer`` of the example image; ``spec`` fields override or add."""
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"image": image, **spec},
    }


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def kubectl_apply(kubectl: str, kubeconfig: Path, objects: list[dict[str, Any]]) -> None:
    """Apply via kubectl: --validate=false because kubectl 1.37 validates against the old
    server's OpenAPI and refuses CRDs with CEL rules."""
    doc = yaml.safe_dump_all(objects)
    subprocess.run(
        [kubectl, f"--kubeconfig={kubeconfig}", "apply", "--validate=false", "-f", "-"],
        input=doc,
        text=True,
        check=True,
        capture_output=True,
    )


def install_crd(kubectl: str, kubeconfig: Path) -> None:
    kubectl_apply(kubectl, kubeconfig, [crd()])
    name = crd()["metadata"]["name"]
    # Polled, not `kubectl wait --for=condition=Established`: right after a create the CRD
    # has no status yet, and kubectl 1.37 then fails at once instead of waiting.
    deadline = time.monotonic() + 30
    jsonpath = 'jsonpath={.status.conditions[?(@.type=="Established")].status}'
    while True:
        got = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", "get", "crd", name, "-o", jsonpath],
            capture_output=True,
            text=True,
            check=False,
        )
        if got.stdout.strip() == "True":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"crd/{name} not Established in 30s: {got.stderr}")
        time.sleep(0.2)


def install_operator_rbac(
    kubectl: str, kubeconfig: Path, rules: list[dict[str, Any]] | None = None
) -> None:
    """Bind the restricted user to exactly the generated rules (or ``rules``)."""
    subject = {"kind": "User", "name": OPERATOR_USER, "apiGroup": "rbac.authorization.k8s.io"}
    # Lease rights are not cluster-wide: a test that runs with --leader-lease binds
    # rbac.lease_role(...) in its operator namespace.
    granted = rbac.rules_for("watched", "cluster") if rules is None else rules
    objects = [rbac.cluster_role(ROLE_NAME, granted), rbac.cluster_role_binding(ROLE_NAME, subject)]
    if rules is not None:  # a replaced rule set must not keep rules of the previous one
        subprocess.run(
            [
                kubectl,
                f"--kubeconfig={kubeconfig}",
                "delete",
                "clusterrole",
                ROLE_NAME,
                "--ignore-not-found",
            ],
            check=True,
            capture_output=True,
        )
    kubectl_apply(kubectl, kubeconfig, objects)


@dataclass
class OperatorProcess:
    """``mcp-operator run`` as a subprocess (so tests can kill -9 it like a node failure)."""

    kubeconfig: Path
    log_path: Path
    metrics_port: int = field(default_factory=free_port)
    liveness_port: int = field(default_factory=free_port)
    extra_args: tuple[str, ...] = ("--verbose",)
    proc: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)  # e.g. POD_NAME/POD_NAMESPACE

    def start(self) -> OperatorProcess:
        argv = [
            sys.executable,
            "-m",
            "mcp_operator.cli",
            "run",
            "--all-namespaces",
            "--metrics-port",
            str(self.metrics_port),
            "--liveness-port",
            str(self.liveness_port),
            *self.extra_args,
        ]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        env.update(self.env)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill9(self) -> None:
        if self.proc is not None and self.alive:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or not self.alive:
            return
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_tail(self, lines: int = 60) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def metrics(self) -> str:
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5).text

    def wait_live(self, timeout: float = 30.0) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise RuntimeError(f"operator exited:\n{self.log_tail()}")
            try:
                if httpx.get(
                    f"http://127.0.0.1:{self.liveness_port}/healthz", timeout=1
                ).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"operator not live after {timeout}s:\n{self.log_tail()}")


def condition(obj: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for cond in (obj.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return dict(cond)
    return None


def dumps(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=True)
