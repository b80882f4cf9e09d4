"""The one-command demo: a real control plane, the node agent, the operator, an MCP server,
a primary failure, the promotion with its timeline, the failback, and a clean exit.

A client calls a tool every 50 ms *through the stable Service* (the node agent's kube-proxy
stand-in forwards to ready endpoints only) from before the kill until after the failback,
and the demo prints how many requests it made and how many failed, by kind and by phase.

    python -m mcp_devcluster.demo        (``make demo`` builds the binaries first)
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mcp_devcluster.controlplane import ControlPlane, tools_bin_dir
from mcp_devcluster.faults import kept_dead
from mcp_devcluster.stack import (
    OperatorProcess,
    install_crd,
    install_operator_rbac,
    server_manifest,
)
from mcp_devcluster.traffic import ToolTraffic, service_address
from mcp_operator.kube.client import KubeClient, credentials_from_kubeconfig

NS = "default"
NAME = "weather"
IMAGE = "ghcr.io/mcp-operator/example-server:0.1.0"
T0 = time.monotonic()


def say(message: str) -> None:
    print(f"[{time.monotonic() - T0:7.2f}s] {message}", flush=True)


def manifest(cooldown: int) -> dict[str, Any]:
    return server_manifest(
        NAME,
        NS,
        IMAGE,
        primary={"replicas": 2},
        backup={"replicas": 1, "standby": "hot"},
        failover={"failback": "Automatic", "cooldownSeconds": cooldown},
    )


class Demo:
    def __init__(self, client: KubeClient, agent_log: Path) -> None:
        self.client = client
        self.agent_log = agent_log

    async def server(self) -> dict[str, Any]:
        obj = await self.client.get("mcp-operator.dev/v1alpha1", "MCPServer", NS, NAME)
        return obj or {}

    async def line(self) -> str:
        """What ``kubectl get mcps`` shows."""
        status = (await self.server()).get("status") or {}
        ready: dict[str, Any] = next(
            (c for c in status.get("conditions", []) if c["type"] == "Ready"), {}
        )
        tiers = status.get("tiers") or {}
        return (
            f"READY={ready.get('status', '-'):<5} ({ready.get('reason', '-')}) "
            f"ACTIVE={status.get('activeTier', '-'):<7} "
            f"PRIMARY={tiers.get('primary', {}).get('summary', '-')} "
            f"BACKUP={tiers.get('backup', {}).get('summary', '-')}"
        )

    async def selector_tier(self) -> str:
        svc = await self.client.get("v1", "Service", NS, NAME) or {}
        return str(((svc.get("spec") or {}).get("selector") or {}).get("mcp-operator.dev/tier"))

    async def wait(self, what: str, check: Any, timeout: float) -> float:
        start = time.monotonic()
        last = ""
        while time.monotonic() - start < timeout:
            if await check():
                return time.monotonic()
            line = await self.line()
            if line != last:
                say(f"  … {line}")
                last = line
            await asyncio.sleep(0.2)
        raise TimeoutError(f"timed out waiting for {what}")

    async def ready(self) -> bool:
        status = (await self.server()).get("status") or {}
        return any(
            c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions", [])
        )

    async def tier_pod_ips(self, tier: str) -> list[str]:
        pods = await self.client.list(
            "v1", "Pod", NS, f"mcp-operator.dev/server={NAME},mcp-operator.dev/tier={tier}"
        )
        return [p["status"]["podIP"] for p in pods if (p.get("status") or {}).get("podIP")]

    async def service_url(self, timeout: float = 30) -> str:
        """The stable Service's address (written on it by the node agent's proxy)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            url = service_address(await self.client.get("v1", "Service", NS, NAME) or {})
            if url:
                return url
            await asyncio.sleep(0.2)
        raise TimeoutError("no proxy address on the Service (is the node agent's proxy on?)")

    async def call_tool(self) -> str:
        """Call the ``add`` tool with the official SDK client, through the stable Service."""
        from mcp import Client

        url = f"{await self.service_url()}/mcp"
        async with Client(url) as mcp_client:
            result = await mcp_client.call_tool("add", {"a": 2, "b": 3})
        text = result.structured_content
        return f"add(2, 3) = {text} via {url}"


async def run_demo(cp: ControlPlane, agent_log: Path, agent_pid: int, cooldown: int) -> None:
    client = KubeClient(credentials_from_kubeconfig(str(cp.admin_kubeconfig)))
    demo = Demo(client, agent_log)
    caller: ToolTraffic | None = None
    try:
        say(f"applying MCPServer {NS}/{NAME} (2 primary, 1 hot backup)")
        await client.apply(manifest(cooldown))
        await demo.wait("Ready", demo.ready, timeout=90)
        say(f"Ready: {await demo.line()}")
        say(await demo.call_tool())
        caller = ToolTraffic(await demo.service_url()).start()
        say(f"a client now calls add() every 50 ms through the Service at {caller.url}")
        await asyncio.sleep(2)

        primary_ips = await demo.tier_pod_ips("primary")
        say(f"killing the primary ({', '.join(primary_ips)}) and keeping it dead")
        t_kill = time.monotonic()
        with kept_dead(agent_pid, set(primary_ips)):

            async def detected() -> bool:
                tiers = ((await demo.server()).get("status") or {}).get("tiers") or {}
                return (tiers.get("primary", {}).get("breaker") or {}).get("phase") == "open"

            async def switched() -> bool:
                return await demo.selector_tier() == "backup"

            t_detect = await demo.wait("detection", detected, timeout=60)
            t_switch = await demo.wait("switch", switched, timeout=60)
            say(f"PROMOTED: {await demo.line()}")
            say(await demo.call_tool())
            print_timeline(t_kill, t_detect, t_switch)
        say(f"primary may restart now; automatic failback after {cooldown}s of health")
        t_back = time.monotonic()

        async def failed_back() -> bool:
            return await demo.selector_tier() == "primary"

        t_done = await demo.wait("failback", failed_back, timeout=120 + cooldown)
        say(f"FAILED BACK after {t_done - t_back:.1f}s: {await demo.line()}")
        await asyncio.sleep(3)
        caller.stop()
        print_traffic(caller, t_kill, t_switch, t_back)
        await print_events(client)
    finally:
        if caller is not None:
            caller.stop()
        say("cleaning up")
        await client.delete("mcp-operator.dev/v1alpha1", "MCPServer", NS, NAME)
        await client.close()


def print_timeline(t_kill: float, t_detect: float, t_switch: float) -> None:
    print("\n  failover timeline          seconds after the kill")
    print(f"  breaker open (detection)   {t_detect - t_kill:6.2f}")
    print(f"  Service switched (total)   {t_switch - t_kill:6.2f}\n", flush=True)


def print_traffic(caller: ToolTraffic, t_kill: float, t_switch: float, t_back: float) -> None:
    """Requests and failed requests of the client, per phase of the demo."""
    phases = (
        ("before the kill", 0.0, t_kill),
        ("kill -> Service switched", t_kill, t_switch),
        ("on the backup", t_switch, t_back),
        ("primary back -> failback", t_back, float("inf")),
        ("total", 0.0, float("inf")),
    )
    print("\n  client through the Service (a call every 50 ms)")
    for label, since, until in phases:
        print(f"  {label:<26} {caller.summary(since, until).line()}")
    for detail, count in caller.summary().details.most_common(4):
        print(f"      {count:4d} x {detail}")
    print(flush=True)


async def print_events(client: KubeClient) -> None:
    events = await client.list("v1", "Event", NS)
    mine = [e for e in events if (e.get("involvedObject") or {}).get("kind") == "MCPServer"]
    say("events on the MCPServer:")
    for event in sorted(mine, key=lambda e: e.get("lastTimestamp") or ""):
        print(f"    {event.get('type'):<8} {event.get('reason'):<16} {event.get('message')}")


def start_agent(cp: ControlPlane, state: Path) -> subprocess.Popen[bytes]:
    log = open(state / "agent.log", "ab")  # noqa: SIM115 - lives as long as the agent
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mcp_devcluster.nodeagent",
            "--kubeconfig",
            str(cp.admin_kubeconfig),
            "--state-dir",
            str(state / "node"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--cooldown", type=int, default=10, help="failback cooldown seconds")
    args = parser.parse_args(argv)
    state = Path(tempfile.mkdtemp(prefix="mcp-demo-"))
    cp = ControlPlane(state / "cluster")
    say(f"starting the control plane in {state}")
    cp.up(timeout=90)
    kubectl = str(tools_bin_dir() / "kubectl")
    agent = None
    operator = None
    try:
        install_crd(kubectl, cp.admin_kubeconfig)
        install_operator_rbac(kubectl, cp.admin_kubeconfig)
        cp.restart_controller_manager()  # so the garbage collector knows MCPServers at once
        agent = start_agent(cp, state)
        operator = OperatorProcess(
            cp.operator_kubeconfig, state / "operator.log", extra_args=()
        ).start()
        operator.wait_live()
        say(f"operator running as the restricted identity (log: {state / 'operator.log'})")
        asyncio.run(run_demo(cp, state / "agent.log", agent.pid, args.cooldown))
        say(f"demo finished at {datetime.now(UTC):%H:%M:%S} UTC")
        return 0
    finally:
        if operator is not None:
            operator.stop()
        if agent is not None:
            agent.send_signal(signal.SIGTERM)
            agent.wait(timeout=30)
        cp.down()
        say("everything stopped")


if __name__ == "__main__":
    sys.exit(main())
