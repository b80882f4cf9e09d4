"""The node agent on a real control plane: scheduling, processes, probes, gates, cleanup."""

from __future__ import annotations

import asyncio
import ipaddress
import json
import os
import shutil
import signal
import socket
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.nodeagent.ipam import DEV_POD_RANGE

from .conftest import REDIS_IMAGE, NodeAgentProcess, get_json, pid_alive, wait_for

pytestmark = pytest.mark.e2e

GATE = "mcp-operator.dev/mcp-healthy"


def deployment(name: str, image: str, replicas: int = 2, gate: bool = False) -> str:
    """A Deployment of the example server with a tcpSocket readiness probe."""
    pod_spec: dict[str, Any] = {
        "containers": [
            {
                "name": "server",
                "image": image,
                "ports": [{"name": "http", "containerPort": 8080}],
                "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 1},
            }
        ],
        "terminationGracePeriodSeconds": 5,
    }
    if gate:
        pod_spec["readinessGates"] = [{"conditionType": GATE}]
    return json.dumps(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec},
            },
        }
    )


def pods(kubectl: Any, ns: str, selector: str) -> list[dict[str, Any]]:
    return list(get_json(kubectl, "pods", "-n", ns, "-l", selector)["items"])


def condition(pod: dict[str, Any], ctype: str) -> dict[str, Any] | None:
    return next((c for c in pod["status"].get("conditions", []) if c["type"] == ctype), None)


def is_ready(pod: dict[str, Any]) -> bool:
    cond = condition(pod, "Ready")
    return pod["status"].get("phase") == "Running" and cond is not None and cond["status"] == "True"


def container_pid(pod: dict[str, Any]) -> int:
    return int(pod["status"]["containerStatuses"][0]["containerID"].removeprefix("nodeagent://"))


async def call_add(url: str) -> Any:
    from mcp import Client

    async with Client(url) as client:
        result = await client.call_tool("add", {"a": 2, "b": 3})
        return result.structured_content


def test_deployment_pods_run_ready_on_distinct_ips_and_serve_mcp(
    node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str, example_image: str
) -> None:
    started = time.monotonic()
    kubectl("apply", "-n", unique_ns, "-f", "-", input=deployment("ex", example_image))
    ready = wait_for(
        lambda: (
            (p := pods(kubectl, unique_ns, "app=ex"))
            and len(p) == 2
            and all(map(is_ready, p))
            and p
        ),
        timeout=60,
        what="2 ready pods",
    )
    print(f"deployment → 2 pods Ready in {time.monotonic() - started:.1f}s")
    ips = {p["status"]["podIP"] for p in ready}
    pod_range = ipaddress.IPv4Network(DEV_POD_RANGE)
    assert len(ips) == 2 and all(ipaddress.IPv4Address(ip) in pod_range for ip in ips), ips
    for pod in ready:
        assert pod["spec"]["nodeName"] in node_agent.node_names
        assert pod["status"]["hostIP"] == "127.0.0.1"
        assert pod["status"]["containerStatuses"][0]["started"] is True
    for ip in ips:
        assert asyncio.run(call_add(f"http://{ip}:8080/mcp")) == {"result": 5}


def _endpoint_ready(kubectl: Any, ns: str, service: str, ip: str) -> bool | None:
    slices = get_json(
        kubectl, "endpointslices", "-n", ns, "-l", f"kubernetes.io/service-name={service}"
    )
    for eps in slices["items"]:
        for ep in eps.get("endpoints") or []:
            if ip in ep.get("addresses", []):
                return bool(ep.get("conditions", {}).get("ready"))
    return None


def _patch_gate(cluster: ControlPlane, ns: str, name: str, status: str) -> None:
    body = {
        "status": {
            "conditions": [
                {"type": GATE, "status": status, "reason": "Test", "message": "set by test"}
            ]
        }
    }
    with cluster.client() as client:
        resp = client.patch(
            f"/api/v1/namespaces/{ns}/pods/{name}/status",
            content=json.dumps(body),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
        resp.raise_for_status()


def test_readiness_gate_holds_pod_until_condition_true(
    node_agent: NodeAgentProcess,
    cluster: ControlPlane,
    kubectl: Any,
    unique_ns: str,
    example_image: str,
) -> None:
    kubectl(
        "apply", "-n", unique_ns, "-f", "-", input=deployment("gated", example_image, 1, gate=True)
    )
    kubectl(
        "expose", "deployment", "gated", "-n", unique_ns, "--port", "80", "--target-port", "8080"
    )

    def containers_ready() -> dict[str, Any] | None:
        found = pods(kubectl, unique_ns, "app=gated")
        cond = condition(found[0], "ContainersReady") if found else None
        return found[0] if cond and cond["status"] == "True" else None

    pod = wait_for(containers_ready, what="containers ready")
    name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
    time.sleep(2)  # give the agent a chance to (wrongly) flip Ready
    pod = get_json(kubectl, "pod", name, "-n", unique_ns)
    ready = condition(pod, "Ready")
    assert (
        ready is not None
        and ready["status"] == "False"
        and ready["reason"] == "ReadinessGatesNotReady"
    )
    assert wait_for(
        lambda: _endpoint_ready(kubectl, unique_ns, "gated", ip) is False, what="not-ready endpoint"
    )

    _patch_gate(cluster, unique_ns, name, "True")
    wait_for(
        lambda: is_ready(get_json(kubectl, "pod", name, "-n", unique_ns)), what="Ready after gate"
    )
    assert wait_for(lambda: _endpoint_ready(kubectl, unique_ns, "gated", ip), what="ready endpoint")
    gate = condition(get_json(kubectl, "pod", name, "-n", unique_ns), GATE)
    assert gate is not None and gate["status"] == "True", "the agent erased the gate condition"

    _patch_gate(cluster, unique_ns, name, "False")
    wait_for(
        lambda: not is_ready(get_json(kubectl, "pod", name, "-n", unique_ns)),
        what="NotReady after gate",
    )
    assert wait_for(
        lambda: _endpoint_ready(kubectl, unique_ns, "gated", ip) is False, what="endpoint not ready"
    )


def test_killed_process_is_restarted(
    node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str, example_image: str
) -> None:
    kubectl("apply", "-n", unique_ns, "-f", "-", input=deployment("crash", example_image, 1))
    pod = wait_for(
        lambda: (p := pods(kubectl, unique_ns, "app=crash")) and is_ready(p[0]) and p[0],
        what="ready",
    )
    name, pid = pod["metadata"]["name"], container_pid(pod)
    os.kill(pid, signal.SIGKILL)

    def restarted() -> dict[str, Any] | None:
        current = get_json(kubectl, "pod", name, "-n", unique_ns)
        status = current["status"]["containerStatuses"][0]
        return current if status["restartCount"] == 1 and is_ready(current) else None

    pod = wait_for(restarted, what="restartCount 1 and Ready again")
    status = pod["status"]["containerStatuses"][0]
    assert status["lastState"]["terminated"]["exitCode"] == 137
    assert container_pid(pod) != pid and pid_alive(container_pid(pod))


def test_deleting_deployment_stops_processes(
    node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str, example_image: str
) -> None:
    kubectl("apply", "-n", unique_ns, "-f", "-", input=deployment("gone", example_image, 2))
    ready = wait_for(
        lambda: (
            (p := pods(kubectl, unique_ns, "app=gone"))
            and len(p) == 2
            and all(map(is_ready, p))
            and p
        ),
        what="2 ready pods",
    )
    pids = [container_pid(p) for p in ready]
    assert all(pid_alive(pid) for pid in pids)
    kubectl("delete", "deployment", "gone", "-n", unique_ns, "--wait=false")
    wait_for(lambda: not pods(kubectl, unique_ns, "app=gone"), timeout=60, what="pods deleted")
    wait_for(lambda: not any(pid_alive(pid) for pid in pids), timeout=10, what="processes gone")


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed")
def test_redis_pod_answers_ping(node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cache", "labels": {"app": "cache"}},
        "spec": {
            "containers": [
                {
                    "name": "redis",
                    "image": REDIS_IMAGE,
                    "args": ["--save", "", "--appendonly", "no"],
                    "readinessProbe": {"tcpSocket": {"port": 6379}, "periodSeconds": 1},
                }
            ]
        },
    }
    kubectl("apply", "-n", unique_ns, "-f", "-", input=json.dumps(pod))
    ready = wait_for(
        lambda: (p := get_json(kubectl, "pod", "cache", "-n", unique_ns)) and is_ready(p) and p
    )
    with socket.create_connection((ready["status"]["podIP"], 6379), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"


def test_liveness_failure_restarts_container(
    node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str, example_image: str
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "unhealthy"},
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "server",
                    "image": example_image,
                    "livenessProbe": {
                        "tcpSocket": {"port": 9},  # nothing listens there
                        "initialDelaySeconds": 1,
                        "periodSeconds": 1,
                        "failureThreshold": 2,
                    },
                }
            ],
        },
    }
    kubectl("apply", "-n", unique_ns, "-f", "-", input=json.dumps(pod))

    def restarted() -> bool:
        current = get_json(kubectl, "pod", "unhealthy", "-n", unique_ns)
        statuses = current["status"].get("containerStatuses") or [{}]
        return int(statuses[0].get("restartCount", 0)) >= 1

    wait_for(restarted, timeout=30, what="a liveness restart")


def test_secret_volume_and_env_follow_the_secret(
    node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str, example_image: str
) -> None:
    kubectl("create", "secret", "generic", "creds", "-n", unique_ns, "--from-literal=token=one")
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "reader"},
        "spec": {
            "volumes": [{"name": "creds", "secret": {"secretName": "creds"}}],
            "containers": [
                {
                    "name": "server",
                    "image": example_image,
                    "env": [
                        {
                            "name": "TOKEN",
                            "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}},
                        }
                    ],
                    "volumeMounts": [{"name": "creds", "mountPath": "/etc/creds"}],
                }
            ],
        },
    }
    kubectl("apply", "-n", unique_ns, "-f", "-", input=json.dumps(pod))
    running = wait_for(
        lambda: (
            (p := get_json(kubectl, "pod", "reader", "-n", unique_ns))
            and p["status"].get("phase") == "Running"
            and p
        ),
        what="running",
    )
    environ = Path(f"/proc/{container_pid(running)}/environ").read_bytes().split(b"\0")
    assert b"TOKEN=one" in environ
    mounts = json.loads(
        next(e for e in environ if e.startswith(b"NODEAGENT_MOUNTS=")).split(b"=", 1)[1]
    )
    token_file = Path(mounts["/etc/creds"]) / "token"
    assert token_file.read_text() == "one"
    kubectl(
        "patch",
        "secret",
        "creds",
        "-n",
        unique_ns,
        "-p",
        json.dumps({"stringData": {"token": "two"}}),
    )
    wait_for(lambda: token_file.read_text() == "two", timeout=20, what="volume update")


def test_unknown_image_waits_and_crashing_container_backs_off(
    node_agent: NodeAgentProcess, kubectl: Any, unique_ns: str, example_image: str
) -> None:
    def pod(name: str, image: str, args: list[str]) -> str:
        spec = {"containers": [{"name": "c", "image": image, "args": args}]}
        return json.dumps(
            {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}
        )

    kubectl("apply", "-n", unique_ns, "-f", "-", input=pod("unknown", "nginx:1.25", []))
    kubectl(
        "apply", "-n", unique_ns, "-f", "-", input=pod("crashy", example_image, ["--port", "x"])
    )

    def waiting(name: str, reason: str) -> dict[str, Any] | None:
        current = get_json(kubectl, "pod", name, "-n", unique_ns)
        status = (current["status"].get("containerStatuses") or [{}])[0]
        state = status.get("state", {}).get("waiting", {})
        return status if state.get("reason") == reason else None

    pulled = wait_for(lambda: waiting("unknown", "ErrImagePull"), what="ErrImagePull")
    assert "not in the node agent's image map" in pulled["state"]["waiting"]["message"]
    crashing = wait_for(lambda: waiting("crashy", "CrashLoopBackOff"), what="CrashLoopBackOff")
    assert crashing["restartCount"] >= 1
    assert crashing["lastState"]["terminated"]["exitCode"] == 2
    assert get_json(kubectl, "pod", "crashy", "-n", unique_ns)["status"]["phase"] == "Running"
