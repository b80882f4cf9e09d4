"""Steady state at scale: what the operator costs once nothing changes.

    .venv/bin/python bench/steady.py [--count 1000] [--backup-replicas 2] [--window 60]

Starts its own control plane, one example MCP server process listening on 0.0.0.0:PORT
(so it answers on every loopback address), and the operator. Creates COUNT MCPServers
(primary 2 pods, hot backup BACKUP_REPLICAS pods, default health interval 2 s, every pod
on PORT). **No node agent** (too heavy for thousands of pods on 2 cores): the bench plays
the kubelet's part by writing each pod's status itself -- Running, Ready, and a distinct
podIP 127.x.y.z -- so the operator's probes reach the real example server through a real
TCP connect per pod address. Pods are written once; the operator's gate patches are its own.

Once every server is Ready (or after --settle-timeout), it waits --settle seconds, stops the
fake kubelet, then measures for --window seconds:

- operator CPU (cores, from /proc utime+stime) and RSS (current and peak);
- probe-round lateness p50/p99 (``mcp_operator_probe_round_lateness_seconds``, the
  window's delta of the histogram's buckets);
- API writes per second by resource (``apiserver_request_total`` of kube-apiserver,
  verbs POST/PUT/PATCH/DELETE, window delta; every client, the kcm's included).

Prints a table and saves it under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from reconcile import bounded, create_namespace, proc_stats

from mcp_devcluster.controlplane import ControlPlane, tools_bin_dir
from mcp_devcluster.stack import free_port, install_crd, install_operator_rbac, server_manifest
from mcp_operator.api.models import API_VERSION
from mcp_operator.kube.client import KubeClient, load_credentials
from mcp_operator.render.meta import HEALTH_GATE, MANAGED_BY

Obj = dict[str, Any]
NS = "steady"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def manifest(name: str, port: int, backup_replicas: int) -> Obj:
    backup: Obj = (
        {"replicas": backup_replicas, "standby": "hot"} if backup_replicas else {"enabled": False}
    )
    return server_manifest(name, NS, port=port, primary={"replicas": 2}, backup=backup)


def address(n: int) -> str:
    return f"127.{1 + n // 65536}.{(n // 256) % 256}.{n % 256}"


def _conditions(pod: Obj) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}


async def fake_kubelet(admin: KubeClient, stop: asyncio.Event, written: Counter[str]) -> None:
    """The kubelet's part: every new pod gets Running and a loopback address, once; a pod's
    Ready follows its readiness gate (the operator's probe verdict), written on change."""
    path = f"/api/v1/namespaces/{NS}/pods"
    done: set[str] = set()
    while not stop.is_set():
        pods = await admin.request(
            "GET", path, params={"labelSelector": f"app.kubernetes.io/managed-by={MANAGED_BY}"}
        )

        async def one(pod: Obj) -> None:
            now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            status: Obj = {}
            if not (pod.get("status") or {}).get("podIP"):
                ip = address(len(done))
                done.add(pod["metadata"]["uid"])
                status = {
                    "phase": "Running",
                    "podIP": ip,
                    "podIPs": [{"ip": ip}],
                    "hostIP": "127.0.0.1",
                    "startTime": now,
                }
                base = ("Initialized", "ContainersReady", "PodScheduled")
                conditions = [
                    {"type": t, "status": "True", "lastTransitionTime": now} for t in base
                ]
            else:
                conditions = []
            have = _conditions(pod)
            ready = "True" if have.get(HEALTH_GATE) == "True" else "False"
            if have.get("Ready") != ready:
                conditions.append({"type": "Ready", "status": ready, "lastTransitionTime": now})
            if not status and not conditions:
                return
            status["conditions"] = conditions
            await admin.patch(
                "v1",
                "Pod",
                NS,
                pod["metadata"]["name"],
                {"status": status},
                subresource="status",
                content_type="application/strategic-merge-patch+json",
            )
            written["pods"] += 1

        await bounded(20, [one(p) for p in pods.get("items") or []])
        await asyncio.sleep(2)


def metric_samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{(.*)\}})? (\S+)$", line)
        if match:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            out.append((labels, float(match.group(3))))
    return out


def writes(text: str) -> Counter[str]:
    counts: Counter[str] = Counter()
    for labels, value in metric_samples(text, "apiserver_request_total"):
        if labels.get("verb") in WRITE_VERBS:
            resource = labels.get("resource", "?")
            if labels.get("subresource"):
                resource += "/" + labels["subresource"]
            counts[resource] += int(value)
    return counts


def lateness_buckets(text: str) -> dict[float, float]:
    return {
        float(labels["le"]): value
        for labels, value in metric_samples(
            text, "mcp_operator_probe_round_lateness_seconds_bucket"
        )
    }


def quantile(before: dict[float, float], after: dict[float, float], q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` of the window's observations."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    total = delta[-1][1] if delta else 0.0
    if total <= 0:
        return float("nan")
    for le, count in delta:
        if count >= q * total:
            return le
    return float("inf")


async def wait_ready(admin: KubeClient, count: int, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    ready = 0
    while time.monotonic() - t0 < timeout:
        items = (await admin.request("GET", f"/apis/{API_VERSION}/namespaces/{NS}/mcpservers"))[
            "items"
        ]
        ready = sum(
            1
            for o in items
            for c in (o.get("status") or {}).get("conditions") or []
            if c.get("type") == "Ready" and c.get("status") == "True"
        )
        if ready >= count:
            break
        await asyncio.sleep(5)
    return ready, time.monotonic() - t0


async def scenario(cp: ControlPlane, args: argparse.Namespace, workdir: Path) -> list[str]:
    port = free_port()
    server_log = open(workdir / "example-server.log", "ab")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "mcp_example_server", "--host", "0.0.0.0", "--port", str(port)],
        stdout=server_log,
        stderr=subprocess.STDOUT,
    )
    metrics_port, live_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(cp.operator_kubeconfig), "PYTHONUNBUFFERED": "1"}
    op_log = open(workdir / "operator.log", "ab")  # noqa: SIM115
    argv = [sys.executable, "-m", "mcp_operator.cli", "run", "--all-namespaces"]
    argv += ["--metrics-port", str(metrics_port), "--liveness-port", str(live_port)]
    op = subprocess.Popen(argv, stdout=op_log, stderr=subprocess.STDOUT, env=env)
    admin = KubeClient(load_credentials(str(cp.admin_kubeconfig)))
    stop = asyncio.Event()
    written: Counter[str] = Counter()
    kubelet: asyncio.Task[None] | None = None
    try:
        await create_namespace(admin, NS)
        kubelet = asyncio.create_task(fake_kubelet(admin, stop, written))
        t0 = time.monotonic()
        await bounded(
            20,
            [
                admin.create(manifest(f"s{i:04d}", port, args.backup_replicas))
                for i in range(args.count)
            ],
        )
        print(f"  {args.count} created in {time.monotonic() - t0:.1f}s")
        ready, took = await wait_ready(admin, args.count, args.settle_timeout)
        print(f"  {ready}/{args.count} Ready after {took:.0f}s; {written['pods']} pod writes")
        if ready < args.count:
            one = await admin.request(
                "GET", f"/apis/{API_VERSION}/namespaces/{NS}/mcpservers/s0000"
            )
            print(f"  s0000: {(one.get('status') or {}).get('conditions')}")
        await asyncio.sleep(args.settle)
        # The fake kubelet lists every pod every 2 s: stopped for the window, which measures
        # the operator alone (nothing changes any more; a real kubelet would write nothing).
        stop.set()
        async with httpx.AsyncClient(timeout=30) as http:
            api = cp.client(timeout=30)
            op_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            load0 = os.getloadavg()
            m0, a0 = (await http.get(op_metrics)).text, api.get("/metrics").text
            _, cpu0 = proc_stats(op.pid)
            t0 = time.monotonic()
            await asyncio.sleep(args.window)
            m1, a1 = (await http.get(op_metrics)).text, api.get("/metrics").text
            peak, cpu1 = proc_stats(op.pid)
            elapsed = time.monotonic() - t0
            api.close()
        rss = next(
            int(line.split()[1]) / 1024
            for line in Path(f"/proc/{op.pid}/status").read_text().splitlines()
            if line.startswith("VmRSS:")
        )
        w0, w1 = writes(a0), writes(a1)
        delta = {k: w1[k] - w0.get(k, 0) for k in w1 if w1[k] - w0.get(k, 0) > 0}
        late0, late1 = lateness_buckets(m0), lateness_buckets(m1)
        rounds = max(late1.values(), default=0) - max(late0.values(), default=0)
        pods = args.count * (2 + args.backup_replicas)
        rows = [
            f"steady state: {args.count} MCPServers, {pods} pods ({ready} Ready), "
            f"interval 2 s, window {elapsed:.0f} s, kube-apiserver {cp.version}",
            f"load average at window start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| operator CPU | {(cpu1 - cpu0) / elapsed:.2f} cores | <= 1 core |",
            f"| operator RSS (now / peak) | {rss:.0f} / {peak:.0f} MB | <= 500 MB |",
            f"| probe rounds in window | {rounds:.0f} ({rounds / elapsed:.0f}/s) | "
            f"{args.count / 2:.0f}/s |",
            f"| probe-round lateness p50 / p99 | <= {quantile(late0, late1, 0.5)} s / "
            f"<= {quantile(late0, late1, 0.99)} s | p99 <= 0.5 s |",
            f"| API writes/s (all clients) | {sum(delta.values()) / elapsed:.2f} | ~0 |",
        ]
        for resource, n in sorted(delta.items(), key=lambda kv: -kv[1]):
            rows.append(f"|   of which {resource} | {n / elapsed:.2f}/s ({n}) | |")
        return rows
    finally:
        stop.set()
        if kubelet is not None:
            kubelet.cancel()
        await admin.close()
        for proc in (op, server):
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
        server_log.close()
        op_log.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--backup-replicas", type=int, default=2, help="0: no backup tier")
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--settle-timeout", type=float, default=900.0)
    parser.add_argument("--out", help="results file (default bench/results/steady-COUNT.txt)")
    args = parser.parse_args()
    tmp = tempfile.TemporaryDirectory(prefix="mcp-steady-")
    cp = ControlPlane(Path(tmp.name) / "cp", die_with_parent=True)
    try:
        cp.up(timeout=120)
        kubectl = str(tools_bin_dir() / "kubectl")
        install_crd(kubectl, cp.admin_kubeconfig)
        install_operator_rbac(kubectl, cp.admin_kubeconfig)
        cp.restart_controller_manager()
        rows = asyncio.run(scenario(cp, args, Path(tmp.name)))
    finally:
        cp.down()
        tmp.cleanup()
    text = "\n".join(rows) + "\n"
    print("\n" + text)
    out = Path(args.out or Path(__file__).parent / "results" / f"steady-{args.count}.txt")
    out.write_text(text)
    print(f"saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
