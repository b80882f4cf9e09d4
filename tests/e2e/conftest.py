"""E2E fixtures: the node agent (scheduler + kubelet stand-in) on the `cluster` fixture.

node_agent     session-scoped running agent (a subprocess of the test session) running
               NODE_COUNT Nodes in ZONE_COUNT zones, with ``.state_dir``, ``.log_path``,
               ``.pid``, ``.node_name`` (the first node), ``.node_names``, ``.log_tail()``,
               ``.metrics_port`` (per-container memory series, nodeagent/metrics)
example_image  the image name the agent maps to the example MCP server
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pytest

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.nodeagent.ipam import random_pod_cidr
from mcp_devcluster.stack import EXAMPLE_IMAGE, free_port

REDIS_IMAGE = "redis:7"
NODE_NAME = "mcp-local"
NODE_COUNT = 3
ZONE_COUNT = 2

T = TypeVar("T")


@dataclass
class NodeAgentProcess:
    """Handle on the agent subprocess."""

    proc: subprocess.Popen[bytes]
    state_dir: Path
    log_path: Path
    node_name: str = NODE_NAME
    metrics_port: int = 0  # per-container memory series (nodeagent/metrics); 0: off

    @property
    def node_names(self) -> list[str]:
        """Every node the agent runs: mcp-local, mcp-local-2, ..."""
        return [NODE_NAME] + [f"{NODE_NAME}-{i}" for i in range(2, NODE_COUNT + 1)]

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, lines: int = 40) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_node_agent(
    kubeconfig: Path, state_dir: Path, *extra: str, timeout: float = 30.0
) -> NodeAgentProcess:
    """Start the agent and wait until it says it is ready (caches synced, node registered)."""
    state_dir.mkdir(parents=True, exist_ok=True)
    log_path = state_dir / "agent.log"
    argv = [
        sys.executable,
        "-m",
        "mcp_devcluster.nodeagent",
        "--kubeconfig",
        str(kubeconfig),
        "--node-name",
        NODE_NAME,
        "--nodes",
        str(NODE_COUNT),
        "--zones",
        str(ZONE_COUNT),
        "--state-dir",
        str(state_dir),
        "--backoff-base",
        "2",
        "--pod-cidr",
        random_pod_cidr(),
        *extra,
    ]
    with open(log_path, "ab") as log_file:
        proc = subprocess.Popen(
            argv, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    agent = NodeAgentProcess(proc, state_dir, log_path)
    deadline = time.monotonic() + timeout
    while f"nodeagent {NODE_NAME} ready" not in (log_path.read_text(errors="replace")):
        if proc.poll() is not None or time.monotonic() > deadline:
            agent.stop()
            pytest.fail(f"node agent did not start:\n{agent.log_tail()}", pytrace=False)
        time.sleep(0.1)
    return agent


@pytest.fixture(scope="session")
def node_agent(
    cluster: ControlPlane, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NodeAgentProcess]:
    port = free_port()
    agent = start_node_agent(
        cluster.admin_kubeconfig,
        tmp_path_factory.mktemp("nodeagent"),
        "--metrics-port",
        str(port),
    )
    agent.metrics_port = port
    try:
        yield agent
    finally:
        agent.stop()


@pytest.fixture(scope="session")
def example_image() -> str:
    return EXAMPLE_IMAGE


def wait_for(
    check: Callable[[], T | None], timeout: float = 60.0, interval: float = 0.25, what: str = ""
) -> T:
    """Poll ``check`` until it returns a truthy value; fail with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except Exception as exc:  # transient API/kubectl errors while things settle
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what or check}: last={last!r}")


def get_json(kubectl: Callable[..., subprocess.CompletedProcess[str]], *args: str) -> Any:
    """``kubectl get ... -o json`` decoded."""
    return json.loads(kubectl("get", *args, "-o", "json").stdout)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return (
        Path(f"/proc/{pid}").exists()
        and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    )
