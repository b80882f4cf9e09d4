"""Shared fixtures: a real local control plane (etcd + kube-apiserver + kcm + kube-scheduler
of ``MCP_K8S_VERSION``, default the newest tested release).

Fixtures:
  cluster     session-scoped ControlPlane (.admin_kubeconfig, .operator_kubeconfig, .server,
              .dir, .ca_file, .admin_token, .operator_token, .client(user)). Fresh in a temp
              dir, stopped at session end; or, with MCP_TEST_CLUSTER_DIR=DIR, the (reused or
              started) instance in DIR, left running for the next run.
  kubectl     callable: kubectl("get", "pods", "-n", ns, input=None, check=True,
              kubeconfig=None, timeout=60) -> CompletedProcess[str]; raises KubectlError
              (with stderr) on a non-zero exit when check=True. Admin kubeconfig by default.
  unique_ns   a fresh namespace (whose default ServiceAccount exists), deleted afterwards.

Missing binaries make the `cluster` fixture FAIL, unless MCP_ALLOW_SKIP_CLUSTER=1 (then skip).
Tests that use `cluster` (directly or through the fixtures above) get the `cluster` mark.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from mcp_devcluster.controlplane import (
    ControlPlane,
    ControlPlaneError,
    build_hint,
    tools_bin_dir,
)

# Operator fixtures (crd_and_rbac, operator) for every test that asks for them.
pytest_plugins = ["tests.e2e.ops"]


class KubectlError(RuntimeError):
    def __init__(self, result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"kubectl {' '.join(result.args[1:])} exited {result.returncode}:\n"
            f"{result.stderr.strip()}\n{result.stdout.strip()}".rstrip()
        )


class Kubectl(Protocol):
    def __call__(
        self,
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]: ...


def kubectl_binary() -> Path:
    return tools_bin_dir() / "kubectl"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.cluster)


def _unavailable(reason: str) -> None:
    if os.environ.get("MCP_ALLOW_SKIP_CLUSTER") == "1":
        pytest.skip(reason)
    pytest.fail(reason + " (set MCP_ALLOW_SKIP_CLUSTER=1 to skip instead)", pytrace=False)


def missing_binaries(cp: ControlPlane) -> list[str]:
    """What ``cp`` (and kubectl) would need but is not built or installed."""
    missing = cp.binaries_missing()
    if not kubectl_binary().exists():
        missing.append(str(kubectl_binary()))
    return missing


@contextlib.contextmanager
def started(cp: ControlPlane, timeout: float, stop: bool = True) -> Iterator[ControlPlane]:
    """``cp`` up for the block, down after it (when ``stop``). A start that fails fails the
    test with the control plane's own words, never a traceback, and leaves nothing running."""
    try:
        cp.up(timeout=timeout)
    except ControlPlaneError as exc:
        cp.down()
        pytest.fail(f"control plane {cp.version} failed to start: {exc}", pytrace=False)
    try:
        yield cp
    finally:
        if stop:
            cp.down()


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    reuse_dir = os.environ.get("MCP_TEST_CLUSTER_DIR")
    if reuse_dir:
        cp = ControlPlane(reuse_dir, audit=True)
    else:
        cp = ControlPlane(tmp_path_factory.mktemp("cluster"), die_with_parent=True, audit=True)
    missing = missing_binaries(cp)
    if missing:
        _unavailable(
            "control plane binaries missing: "
            + ", ".join(missing)
            + f" (run {build_hint(cp.version)} and hack/install-tools.sh)"
        )
    if not reuse_dir:
        atexit.register(cp.down)
    try:
        with started(cp, timeout=90, stop=not reuse_dir):
            if not cp.audit_active():  # a reused instance started without the audit log
                cp.stop_apiserver()
                cp.start_apiserver()
            yield cp
    finally:
        if not reuse_dir:
            atexit.unregister(cp.down)


def kubectl_for(cp: ControlPlane) -> Kubectl:
    """kubectl against ``cp``, as the ``kubectl`` fixture gives it for the session's cluster."""
    binary = str(kubectl_binary())

    def run(
        *args: str,
        input: str | None = None,
        check: bool = True,
        kubeconfig: Path | str | None = None,
        timeout: float = 60.0,
    ) -> subprocess.CompletedProcess[str]:
        config = str(kubeconfig or cp.admin_kubeconfig)
        env = {**os.environ, "KUBECONFIG": config}
        result = subprocess.run(
            [binary, f"--kubeconfig={config}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(result)
        return result

    return run


ESTABLISHED = '{.status.conditions[?(@.type=="Established")].status}'


def wait_established(kubectl: Kubectl, crd_name: str, timeout: float = 60.0) -> None:
    """Until the CRD is Established. Not ``kubectl wait --for=condition=Established``: right
    after a create the CRD has no status yet, and kubectl 1.37 then fails at once
    (".status.conditions accessor error: <nil>") instead of waiting."""
    deadline = time.monotonic() + timeout
    while True:
        got = kubectl("get", "crd", crd_name, "-o", f"jsonpath={ESTABLISHED}", check=False)
        if got.stdout.strip() == "True":
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"crd/{crd_name} not Established in {timeout}s: {got.stderr}")
        time.sleep(0.2)


@pytest.fixture(scope="session")
def kubectl(cluster: ControlPlane) -> Kubectl:
    return kubectl_for(cluster)


@pytest.fixture
def unique_ns(request: pytest.FixtureRequest, kubectl: Kubectl) -> Iterator[str]:
    base = re.sub(r"[^a-z0-9-]+", "-", request.node.name.lower()).strip("-")[:40].strip("-")
    name = f"t-{base}-{secrets.token_hex(3)}"
    kubectl("create", "namespace", name)
    # Pods can't be created before the ServiceAccount controller made `default`.
    deadline = time.monotonic() + 30
    while kubectl("get", "sa", "default", "-n", name, check=False).returncode != 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"no default ServiceAccount in {name}")
        time.sleep(0.1)
    yield name
    kubectl("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)
