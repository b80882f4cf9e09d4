"""Operator start-up as a user sees it (a real process): no kubeconfig → one line and exit
code 2; an unreachable API server → one line per back-off attempt, /healthz answering."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.unit.test_credentials import kubeconfig


def run_cli(tmp_path: Path, *args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "mcp_operator.cli", "run", "--metrics-port", "0", *args],
        env={k: v for k, v in {**os.environ, **env}.items() if k != "KUBERNETES_SERVICE_HOST"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_run_without_kubeconfig_exits_with_one_line(tmp_path: Path) -> None:
    from mcp_devcluster.stack import free_port

    proc = run_cli(
        tmp_path,
        "--liveness-port",
        str(free_port()),
        env={"KUBECONFIG": str(tmp_path / "nope"), "HOME": str(tmp_path)},
    )
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "ERROR" in line]
    assert len(errors) == 1 and "no kubeconfig" in errors[0], out


def test_unreachable_api_server_is_retried_quietly_while_healthz_answers(tmp_path: Path) -> None:
    from mcp_devcluster.stack import free_port

    port = free_port()
    config = kubeconfig(tmp_path / "kc", {"token": "t"}, server=f"https://127.0.0.1:{free_port()}")
    proc = run_cli(tmp_path, "--liveness-port", str(port), env={"KUBECONFIG": str(config)})
    try:
        deadline = time.monotonic() + 30
        healthy = ready = None
        while time.monotonic() < deadline:
            try:
                healthy = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert healthy is not None and healthy.status_code == 200
        assert ready is not None and ready.status_code == 503  # not connected yet
        time.sleep(3.5)  # attempts at 0, 1, 3 s
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out
    assert "Traceback" not in out
    lines = [line for line in out.splitlines() if "unreachable" in line]
    assert 2 <= len(lines) <= 4, out
    assert "retrying in 1s" in lines[0] and "retrying in 2s" in lines[1]
