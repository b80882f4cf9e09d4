"""The node agent's cluster-DNS stand-in for Python processes (nodeagent/dns): a process
started with the agent's PYTHONPATH resolves the Service names the proxy recorded, and
every other name exactly as before."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from mcp_devcluster.nodeagent.dns import SHIM_DIR

PROBE = """
import socket, sys
def first(host):
    try:
        return socket.getaddrinfo(host, 80, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        return f"error-{exc.__class__.__name__}"
def by_name(host):
    try:
        return socket.gethostbyname(host)
    except OSError as exc:
        return f"error-{exc.__class__.__name__}"
print(first("web-metrics.tools.svc"), first("web-metrics.tools.svc.cluster.local."),
      first("localhost"), first("gone.tools.svc"), by_name("web-metrics.tools"))
"""


def resolve(tmp_path: Path, hosts: dict[str, str] | None) -> list[str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(SHIM_DIR)
    if hosts is not None:
        path = tmp_path / "hosts.json"
        path.write_text(json.dumps(hosts))
        env["NODEAGENT_HOSTS"] = str(path)
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.split()


def test_recorded_service_names_resolve_to_the_proxy_address(tmp_path: Path) -> None:
    hosts = {
        "web-metrics.tools": "10.96.0.7",
        "web-metrics.tools.svc": "10.96.0.7",
        "web-metrics.tools.svc.cluster.local": "10.96.0.7",
    }
    svc, fqdn, local, gone, by_name = resolve(tmp_path, hosts)
    assert (svc, fqdn, by_name) == ("10.96.0.7", "10.96.0.7", "10.96.0.7")
    assert local in ("127.0.0.1", "::1")  # other names: the real resolver
    assert gone.startswith("error")  # a name the proxy does not (or no longer) answer for


def test_without_the_agents_hosts_file_nothing_changes(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import socket; print(socket.getaddrinfo.__module__)"],
        env={**os.environ, "PYTHONPATH": str(SHIM_DIR)},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.stdout.strip() == "sitecustomize"  # the shim is loaded ...
    svc, *_ = resolve(tmp_path, None)
    assert svc.startswith("error")  # ... but resolves nothing without NODEAGENT_HOSTS
