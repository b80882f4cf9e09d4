"""Operator fixtures for e2e tests: CRD + restricted RBAC installed, operator running.

Registered once for the whole session as a pytest plugin (``pytest_plugins`` in
``tests/conftest.py``): test modules ask for ``operator``/``crd_and_rbac`` by name and must
not import them (an imported fixture is a second, per-module instance).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import (
    OperatorProcess,
    condition,
    install_crd,
    install_operator_rbac,
)
from tests.conftest import kubectl_binary
from tests.e2e.conftest import get_json, wait_for

Kubectl = Callable[..., Any]


@pytest.fixture(scope="session")
def crd_and_rbac(cluster: ControlPlane) -> ControlPlane:
    install_crd(str(kubectl_binary()), cluster.admin_kubeconfig)
    install_operator_rbac(str(kubectl_binary()), cluster.admin_kubeconfig)
    # The garbage collector re-reads discovery only every 30 s; restart it so that children
    # of MCPServers are collected at once when their owner goes.
    cluster.restart_controller_manager()
    return cluster


@pytest.fixture(scope="session")
def operator(
    crd_and_rbac: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[OperatorProcess]:
    """The operator as the restricted identity (operator.kubeconfig), never as admin."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    # Discovery re-read every 2 s (default 60): test_monitoring installs the PrometheusRule
    # CRD and expects the rules without a restart, promptly.
    proc = OperatorProcess(
        crd_and_rbac.operator_kubeconfig,
        log,
        extra_args=("--verbose", "--discovery-interval", "2"),
    ).start()
    proc.wait_live()
    try:
        yield proc
    finally:
        proc.stop()


def apply(kubectl: Kubectl, obj: dict[str, Any]) -> None:
    kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(obj))


def get_server(kubectl: Kubectl, namespace: str, name: str) -> dict[str, Any]:
    return dict(get_json(kubectl, "mcpserver", name, "-n", namespace))


def wait_condition(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    type_: str,
    status: str,
    timeout: float = 30.0,
    reason: str | None = None,
) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        obj = get_server(kubectl, namespace, name)
        cond = condition(obj, type_)
        if cond and cond["status"] == status and (reason is None or cond["reason"] == reason):
            return obj
        return None

    return wait_for(check, timeout=timeout, what=f"{name} {type_}={status} {reason or ''}")


def stable_selector_tier(kubectl: Kubectl, namespace: str, name: str) -> str:
    svc = get_json(kubectl, "service", name, "-n", namespace)
    return str(svc["spec"]["selector"]["mcp-operator.dev/tier"])


def elapsed(since: float) -> float:
    return time.monotonic() - since


def _session_operators() -> list[int]:
    """Operators this test session started (children of this process), e.g. the session
    ``operator`` fixture."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            cmdline = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat[1]) == os.getpid() and b"mcp_operator.cli" in cmdline and b"run" in cmdline:
            pids.append(int(proc.name))
    return pids


@contextlib.contextmanager
def others_paused() -> Iterator[None]:
    """SIGSTOP this session's other operators (they would reconcile our objects and mask
    what is tested), SIGCONT them afterwards."""
    pids = _session_operators()
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
