"""Steady state at scale: what the operator costs once nothing changes.

    .venv/bin/python bench/steady.py [--count 1000] [--backup-replicas 2] [--window 60]
                                     [--wave 100] [--listener replay|sdk]

Starts its own control plane, one listener on 0.0.0.0:PORT (so it answers on every local
address), and the operator. Creates COUNT MCPServers, WAVE at a time, each wave once the
ones before are Ready (primary 2 pods, hot backup BACKUP_REPLICAS pods, default health
interval 2 s, every pod on PORT). **No node agent** (too heavy for thousands of pods on 2
cores): the bench registers one heartbeating Node (kube-scheduler binds every pod to it) and
plays the kubelet's part (pods from a filtered list+watch) by writing each bound pod's
status itself -- Running, Ready, and a distinct podIP 10.244.x.y --
so the operator's probes reach the listener through a real TCP connect per pod address.
Pods are written once; the operator's gate patches are its own.

The listener (``--listener``; the results header names it):

- ``replay`` (default): ``bench/replay.py``. The bench starts the real example server once,
  records its exact reply (status line, headers, body) to the operator's own probe request
  (``server/discover`` at 2026-07-28), stops it, and serves those bytes from a light asyncio
  listener in a separate process -- only to a request identical to the recorded one (request
  line and body; anything else gets 400 and is counted in the results). The operator's side of
  every probe is the same as against the real server: a new TCP connection, the same request,
  the same reply bytes to parse and judge. What is left out is the server's own work, which in
  a cluster runs on each pod's CPU, not the operator's. It costs ~0.45 ms CPU per probe
  (``bench/replay.py``), so at 2,000 probes/s it still takes ~0.9 of this machine's 2 cores.
- ``sdk``: one ``mcp_example_server`` process (the official ``mcp`` SDK under uvicorn)
  answering every pod address. Real end to end, but ~2.5 ms CPU per probe: at 500 servers x
  4 pods / 2 s it could not keep up on 2 cores and the run never settled
  (bench/results/steady-500-unsettled-2026-11-30.txt) -- it measured the listener.

Once every server is Ready (or after --settle-timeout), it waits --settle seconds, stops the
fake kubelet, then measures for --window seconds. With ``--own-core`` the operator runs
alone on one CPU from the settle on, and the control plane, listener and bench on the
others: as on a cluster, where the operator's pod does not share a node's CPU with the
kube-apiserver; the 1-core target is then a hard limit, and lateness shows whether it fits.
It measures:

- operator CPU (cores, from /proc utime+stime) and RSS (current and peak); the listener's CPU;
- probe-round lateness p50/p99 (``mcp_operator_probe_round_lateness_seconds``, the
  window's delta of the histogram's buckets);
- API writes per second by resource (``apiserver_request_total`` of kube-apiserver,
  verbs POST/PUT/PATCH/DELETE, window delta; every client, the kcm's and the Node's
  heartbeat included);
- what was written: MCPServers and pods whose resourceVersion moved (by status field that
  changed) and Events created or updated (by reason and source), from snapshots.

Prints a table and saves it under bench/results/.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from reconcile import bounded, create_namespace, proc_stats
from replay import record

from mcp_devcluster.controlplane import ControlPlane, tools_bin_dir
from mcp_devcluster.nodeagent.ipam import DEV_POD_RANGE, ensure_local_range
from mcp_devcluster.nodeagent.kubeapi import KubeClient as SyncClient
from mcp_devcluster.nodeagent.node import NodeHeartbeat
from mcp_devcluster.stack import free_port, install_crd, install_operator_rbac, server_manifest
from mcp_operator.api.models import API_VERSION
from mcp_operator.kube.client import ApiError, KubeClient, TransportError, load_credentials
from mcp_operator.kube.informer import Informer
from mcp_operator.render.meta import HEALTH_GATE

Obj = dict[str, Any]
NS = "steady"
WRITE_VERBS = ("POST", "PUT", "PATCH", "DELETE")


def manifest(name: str, port: int, backup_replicas: int) -> Obj:
    backup: Obj = (
        {"replicas": backup_replicas, "standby": "hot"} if backup_replicas else {"enabled": False}
    )
    # No requests: the bench's one Node (its capacity is this machine's) must fit every pod.
    resources = {"requests": {"cpu": "0", "memory": "0"}, "limits": {"memory": "64Mi"}}
    return server_manifest(
        name, NS, port=port, primary={"replicas": 2}, backup=backup, resources=resources
    )


def address(n: int) -> str:
    """Pod ``n``'s IP in the dev pod range (routed locally, so the example server on 0.0.0.0
    answers there). Not 127.x: EndpointSlices refuse loopback addresses, and the kcm's
    EndpointSlice controller would re-post a warning per Service all the time."""
    return f"10.244.{1 + n // 250}.{1 + n % 250}"


def _conditions(pod: Obj) -> dict[str, str]:
    return {c["type"]: c["status"] for c in (pod.get("status") or {}).get("conditions") or []}


class KubeletSink:
    """The fake kubelet's view of the pods: the operator's own :class:`Informer` (list, then
    watch, filtered by the API server) feeds it, and it keeps the latest body of each pod
    still to be looked at. Listing all pods every 2 s instead cost the API server a
    multi-megabyte LIST per 2 s at 4,000 pods, which starved the settling control plane."""

    def __init__(self) -> None:
        self.pending: dict[str, Obj] = {}
        self.wake = asyncio.Event()

    def observe_child(self, kind: str, body: Obj, deleted: bool) -> None:
        name = body["metadata"]["name"]
        if deleted:
            self.pending.pop(name, None)
        else:
            self.pending[name] = body
            self.wake.set()

    def sync_children(self, kind: str, namespace: str | None, bodies: list[Obj]) -> None:
        for body in bodies:
            self.observe_child(kind, body, deleted=False)


def kubelet_status(pod: Obj, ip: str | None) -> Obj | None:
    """The status patch a kubelet would write for ``pod`` (``ip`` when it has none yet):
    Running with an address, once; Ready following the readiness gate. None: nothing to do."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status: Obj = {}
    conditions: list[Obj] = []
    if ip is not None:
        status = {
            "phase": "Running",
            "podIP": ip,
            "podIPs": [{"ip": ip}],
            "hostIP": "127.0.0.1",
            "startTime": now,
        }
        base = ("Initialized", "ContainersReady", "PodScheduled")
        conditions = [{"type": t, "status": "True", "lastTransitionTime": now} for t in base]
    have = _conditions(pod)
    ready = "True" if have.get(HEALTH_GATE) == "True" else "False"
    if have.get("Ready") != ready:
        conditions.append({"type": "Ready", "status": ready, "lastTransitionTime": now})
    if not status and not conditions:
        return None
    status["conditions"] = conditions
    return status


async def fake_kubelet(admin: KubeClient, stop: asyncio.Event, written: Counter[str]) -> None:
    """The kubelet's part: every bound pod gets Running and a distinct address, once; a
    pod's Ready follows its readiness gate (the operator's probe verdict), written on change.
    Pods come from a filtered list+watch; 16 writers patch them."""
    sink = KubeletSink()
    informer = Informer(admin, "v1", "Pod", NS, sink)
    watching = asyncio.create_task(informer.run())
    addresses: dict[str, str] = {}

    async def one(pod: Obj) -> None:
        if not (pod.get("spec") or {}).get("nodeName"):
            return  # not scheduled yet: a kubelet only runs pods bound to its node
        uid = pod["metadata"]["uid"]
        new_ip = None
        if not (pod.get("status") or {}).get("podIP"):
            new_ip = addresses.setdefault(uid, address(len(addresses)))
        status = kubelet_status(pod, new_ip)
        if status is None:
            return
        name = pod["metadata"]["name"]
        try:
            await admin.patch(
                "v1",
                "Pod",
                NS,
                name,
                {"status": status},
                subresource="status",
                content_type="application/strategic-merge-patch+json",
            )
            written["pods"] += 1
        except ApiError as exc:
            if exc.status != 404:  # a busy API server (429, 5xx): try again next pass
                sink.observe_child("Pod", pod, deleted=False)
        except TransportError:
            sink.observe_child("Pod", pod, deleted=False)

    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(sink.wake.wait(), 1.0)
            sink.wake.clear()
            batch, sink.pending = list(sink.pending.values()), {}
            await bounded(16, [one(p) for p in batch])
            await asyncio.sleep(0.2)  # a refused patch is retried, not in a hot loop
    finally:
        watching.cancel()


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


def gc_share(before: str, after: str, elapsed: float) -> str:
    """The window's collector time per generation, in cores (``mcp_operator_gc_seconds``)."""

    def seconds(text: str) -> dict[str, float]:
        samples = metric_samples(text, "mcp_operator_gc_seconds_total")
        return {labels["generation"]: value for labels, value in samples}

    s0, s1 = seconds(before), seconds(after)
    return (
        " / ".join(f"{(s1.get(g, 0.0) - s0.get(g, 0.0)) / elapsed:.3f}" for g in ("0", "1", "2"))
        + " cores"
    )


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


async def snapshot(admin: KubeClient) -> dict[str, dict[str, Obj]]:
    """Every MCPServer, Event and pod in the namespace by name: the window's first and last
    snapshot are compared to say *what* was written, not only how much."""
    out: dict[str, dict[str, Obj]] = {}
    for kind, path in (
        ("mcpservers", f"/apis/{API_VERSION}/namespaces/{NS}/mcpservers"),
        ("events", f"/api/v1/namespaces/{NS}/events"),
        ("pods", f"/api/v1/namespaces/{NS}/pods"),
    ):
        items = (await admin.request("GET", path)).get("items") or []
        out[kind] = {o["metadata"]["name"]: o for o in items}
    return out


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list):
        out = {}
        for i, v in enumerate(obj):
            key = v.get("type", i) if isinstance(v, dict) else i
            out.update(_flat(v, f"{prefix}[{key}]"))
        return out
    return {prefix: obj}


def what_changed(before: dict[str, dict[str, Obj]], after: dict[str, dict[str, Obj]]) -> list[str]:
    """Lines naming the objects written in the window: status fields of MCPServers and pods
    that differ (counted by field path), Events created or updated (counted by reason)."""
    rows: list[str] = []
    for kind in ("mcpservers", "pods"):
        fields: Counter[str] = Counter()
        changed = 0
        for name, new in after[kind].items():
            old = before[kind].get(name)
            if (
                old is None
                or old["metadata"]["resourceVersion"] == new["metadata"]["resourceVersion"]
            ):
                continue
            changed += 1
            a, b = _flat(old.get("status") or {}), _flat(new.get("status") or {})
            for key in set(a) | set(b):
                if a.get(key) != b.get(key):
                    fields[key] += 1
        rows.append(f"  {kind} written in the window: {changed}")
        rows += [f"    {n} x {field}" for field, n in fields.most_common(12)]
    reasons: Counter[str] = Counter()
    for name, new in after["events"].items():
        old = before["events"].get(name)
        if old is None or old["metadata"]["resourceVersion"] != new["metadata"]["resourceVersion"]:
            source = new.get("reportingComponent") or (new.get("source") or {}).get("component")
            message = str(new.get("message"))[:200]
            text = f"{new.get('reason')} ({new.get('type')}, {source}): {message}"
            reasons[text] += 1
    rows.append(f"  events created or updated in the window: {sum(reasons.values())}")
    rows += [f"    {n} x {reason}" for reason, n in reasons.most_common(12)]
    return rows


async def create_in_waves(
    admin: KubeClient, args: argparse.Namespace, port: int
) -> tuple[int, float]:
    """Creates the servers ``--wave`` at a time, each wave once the ones before are Ready
    (a fleet grows; 4,000 pods created at once kept the kcm busy past 14 minutes on 2
    cores). Returns how many are Ready and the time since the first create."""
    t0 = time.monotonic()
    ready = 0
    for first in range(0, args.count, args.wave):
        last = min(args.count, first + args.wave)
        names = [f"s{i:04d}" for i in range(first, last)]
        await bounded(20, [admin.create(manifest(n, port, args.backup_replicas)) for n in names])
        left = args.settle_timeout - (time.monotonic() - t0)
        ready, _ = await wait_ready(admin, last, max(0.0, left))
        print(f"  wave to {last}: {ready} Ready at {time.monotonic() - t0:.0f}s", flush=True)
        if ready < last:
            break
    return ready, time.monotonic() - t0


async def wait_ready(admin: KubeClient, count: int, timeout: float) -> tuple[int, float]:
    t0 = time.monotonic()
    ready = 0
    while time.monotonic() - t0 < timeout:
        try:
            listed = await admin.request("GET", f"/apis/{API_VERSION}/namespaces/{NS}/mcpservers")
        except TransportError:  # a LIST of 1,000 servers on a loaded API server: retry
            await asyncio.sleep(5)
            continue
        items = listed["items"]
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


LISTENERS = {
    "replay": "replay of the example server's recorded server/discover reply (bench/replay.py, "
    "one asyncio process)",
    "sdk": "one mcp_example_server process (official mcp SDK, uvicorn)",
}


async def start_listener(kind: str, port: int, workdir: Path, log: Any) -> subprocess.Popen[bytes]:
    """The process answering every pod address on 0.0.0.0:``port`` (see the module doc)."""
    if kind == "sdk":
        argv = ["-m", "mcp_example_server", "--host", "0.0.0.0", "--port", str(port)]
    else:
        recording = workdir / "recording.json"
        (await record()).dump(recording)
        replay = str(Path(__file__).parent / "replay.py")
        argv = [replay, "serve", str(recording), "--host", "0.0.0.0", "--port", str(port)]
    return subprocess.Popen([sys.executable, *argv], stdout=log, stderr=subprocess.STDOUT)


def replay_counters(log: Path) -> str:
    """The replay listener's exit line (requests answered / refused), for the results."""
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.startswith("{")]
    if not lines:
        return "replay listener counters: none (it did not exit cleanly)"
    counters = json.loads(lines[-1])
    return (
        f"replay listener over the whole run: {counters['connections']} connections, "
        f"{counters['requests']} requests answered with the recording, "
        f"{counters['refused']} refused as different from it"
    )


async def scenario(cp: ControlPlane, args: argparse.Namespace, workdir: Path) -> list[str]:
    ensure_local_range(DEV_POD_RANGE)
    port = free_port()
    server_log_path = workdir / f"listener-{args.listener}.log"
    server_log = open(server_log_path, "ab")  # noqa: SIM115
    server = await start_listener(args.listener, port, workdir, server_log)
    metrics_port, live_port = free_port(), free_port()
    env = {**os.environ, "KUBECONFIG": str(cp.operator_kubeconfig), "PYTHONUNBUFFERED": "1"}
    op_log = open(workdir / "operator.log", "ab")  # noqa: SIM115
    profile = ["-m", "cProfile", "-o", args.profile] if args.profile else []
    argv = [sys.executable, *profile, "-m", "mcp_operator.cli", "run", "--all-namespaces"]
    argv += ["--metrics-port", str(metrics_port), "--liveness-port", str(live_port)]
    op = subprocess.Popen(argv, stdout=op_log, stderr=subprocess.STDOUT, env=env)
    admin = KubeClient(load_credentials(str(cp.admin_kubeconfig)))
    stop = asyncio.Event()
    written: Counter[str] = Counter()
    kubelet: asyncio.Task[None] | None = None
    pods = args.count * (2 + args.backup_replicas)
    # A real, heartbeating Node the scheduler binds every pod to: without one the pods stay
    # unscheduled and the kcm's EndpointSlice controller re-posts "Node not found" warnings
    # for every Service all the time (the 2 events/s of the first 20-server run).
    node = NodeHeartbeat(
        SyncClient(str(cp.admin_kubeconfig)), "steady-node", "127.0.0.1", max_pods=pods + 16
    )
    node.register()
    node.start()
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        await create_namespace(admin, NS)
        kubelet = asyncio.create_task(fake_kubelet(admin, stop, written))
        ready, took = await create_in_waves(admin, args, port)
        print(f"  {ready}/{args.count} Ready after {took:.0f}s; {written['pods']} pod writes")
        if ready < args.count:
            one = await admin.request(
                "GET", f"/apis/{API_VERSION}/namespaces/{NS}/mcpservers/s0000"
            )
            print(f"  s0000: {(one.get('status') or {}).get('conditions')}")
        pinned = give_own_core(op.pid) if args.own_core else "shared by every process"
        hogs += start_hogs(args.hogs, op.pid)
        if hogs:
            pinned += f"; {len(hogs)} busy-loop processes share the operator's CPU with it"
        await asyncio.sleep(args.settle)
        # The fake kubelet lists every pod every 2 s: stopped for the window, which measures
        # the operator alone (nothing changes any more; a real kubelet would write nothing).
        stop.set()
        async with httpx.AsyncClient(timeout=30) as http:
            api = cp.client(timeout=30)
            op_metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            load0 = os.getloadavg()
            snap0 = await snapshot(admin)
            m0, a0 = (await http.get(op_metrics)).text, api.get("/metrics").text
            _, cpu0 = proc_stats(op.pid)
            _, listener0 = proc_stats(server.pid)
            t0 = time.monotonic()
            await asyncio.sleep(args.window)
            m1, a1 = (await http.get(op_metrics)).text, api.get("/metrics").text
            peak, cpu1 = proc_stats(op.pid)
            _, listener1 = proc_stats(server.pid)
            elapsed = time.monotonic() - t0
            snap1 = await snapshot(admin)
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
        rows = [
            f"steady state: {args.count} MCPServers, {pods} pods ({ready} Ready), "
            f"interval 2 s, window {elapsed:.0f} s, kube-apiserver {cp.version}",
            f"load average at window start: {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}",
            f"CPUs: {pinned}",
            f"listener: {LISTENERS[args.listener]}",
            "",
            "| measure | value | target |",
            "|---|---|---|",
            f"| operator CPU | {(cpu1 - cpu0) / elapsed:.2f} cores | <= 1 core |",
            f"| operator RSS (now / peak) | {rss:.0f} / {peak:.0f} MB | <= 500 MB |",
            f"| of which in the garbage collector (gen 0 / 1 / 2) | "
            f"{gc_share(m0, m1, elapsed)} | |",
            f"| listener CPU ({args.listener}; not the operator's) | "
            f"{(listener1 - listener0) / elapsed:.2f} cores | |",
            f"| probe rounds in window | {rounds:.0f} ({rounds / elapsed:.0f}/s) | "
            f"{args.count / 2:.0f}/s |",
            f"| probe-round lateness p50 / p99 | <= {quantile(late0, late1, 0.5)} s / "
            f"<= {quantile(late0, late1, 0.99)} s | p99 <= 0.5 s |",
            f"| API writes/s (all clients) | {sum(delta.values()) / elapsed:.2f} | ~0 |",
        ]
        for resource, n in sorted(delta.items(), key=lambda kv: -kv[1]):
            rows.append(f"|   of which {resource} | {n / elapsed:.2f}/s ({n}) | |")
        rows += ["", "What was written in the window (snapshots before and after):"]
        rows += what_changed(snap0, snap1)
    finally:
        await teardown(stop, node, kubelet, admin, (op, server, *hogs))
        server_log.close()
        op_log.close()
    if args.listener == "replay":  # the counters are printed when the listener exits
        rows.insert(3, replay_counters(server_log_path))
    return rows


def give_own_core(operator: int) -> str:
    """Pin the operator to the last CPU and everything else this bench started (control
    plane, listener, the bench itself) to the others: the operator gets a core of its own,
    as on a worker node in a cluster, where it does not share CPU with the kube-apiserver."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return "shared (one CPU)"
    own, rest = {cpus[-1]}, set(cpus[:-1])
    tree = descendants(os.getpid())
    for pid in tree:
        for task in Path(f"/proc/{pid}/task").glob("*"):
            with contextlib.suppress(OSError, ValueError):
                os.sched_setaffinity(int(task.name), own if pid == operator else rest)
    return (
        f"the operator alone on CPU {cpus[-1]} from the settle on; the other "
        f"{len(tree) - 1} processes of the bench (control plane, listener, bench) on CPU "
        f"{','.join(map(str, sorted(rest)))}"
    )


def start_hogs(count: int, operator: int) -> list[subprocess.Popen[bytes]]:
    """``count`` busy loops on the operator's CPUs: an operator short of CPU (a node
    whose other pods burst, a CPU limit), with the rest of the bench untouched."""
    cpus = os.sched_getaffinity(operator)
    hogs = []
    for _ in range(count):
        hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
        os.sched_setaffinity(hog.pid, cpus)
        hogs.append(hog)
    return hogs


def descendants(root: int) -> list[int]:
    """``root`` and every process below it, from /proc."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            children.setdefault(parent, []).append(int(stat.parent.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo += children.get(pid, [])
    return out


async def teardown(
    stop: asyncio.Event,
    node: NodeHeartbeat,
    kubelet: asyncio.Task[None] | None,
    admin: KubeClient,
    procs: tuple[subprocess.Popen[bytes], ...],
) -> None:
    """Stop the fake kubelet, the Node's heartbeat, the client and the processes."""
    stop.set()
    node.stop()
    if kubelet is not None:
        kubelet.cancel()
    await admin.close()
    for proc in procs:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextlib.contextmanager
def bench_control_plane(prefix: str) -> Iterator[tuple[ControlPlane, Path]]:
    """A control plane in a temp dir with the CRD and the operator's RBAC installed (no node
    agent); taken down and removed on exit."""
    tmp = tempfile.TemporaryDirectory(prefix=prefix)
    cp = ControlPlane(Path(tmp.name) / "cp", die_with_parent=True)
    try:
        cp.up(timeout=120)
        kubectl = str(tools_bin_dir() / "kubectl")
        install_crd(kubectl, cp.admin_kubeconfig)
        install_operator_rbac(kubectl, cp.admin_kubeconfig)
        cp.restart_controller_manager()
        yield cp, Path(tmp.name)
    finally:
        cp.down()
        tmp.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=1000)
    parser.add_argument("--backup-replicas", type=int, default=2, help="0: no backup tier")
    parser.add_argument("--window", type=float, default=60.0)
    parser.add_argument("--settle", type=float, default=20.0)
    parser.add_argument("--wave", type=int, default=100, help="servers created at a time")
    parser.add_argument("--settle-timeout", type=float, default=900.0)
    parser.add_argument("--out", help="results file (default bench/results/steady-COUNT.txt)")
    parser.add_argument("--profile", help="run the operator under cProfile into this file")
    parser.add_argument(
        "--own-core",
        action="store_true",
        help="from the settle on, the operator alone on one CPU, all else on the others",
    )
    parser.add_argument(
        "--hogs",
        type=int,
        default=0,
        help="busy loops started on the operator's CPU for the settle and window "
        "(with --own-core: an operator short of CPU)",
    )
    parser.add_argument(
        "--listener",
        choices=sorted(LISTENERS),
        default="replay",
        help="what answers the probes (module doc): replay (default) or sdk",
    )
    args = parser.parse_args()
    with bench_control_plane("mcp-steady-") as (cp, workdir):
        rows = asyncio.run(scenario(cp, args, workdir))
    text = "\n".join(rows) + "\n"
    print("\n" + text)
    out = Path(args.out or Path(__file__).parent / "results" / f"steady-{args.count}.txt")
    out.write_text(text)
    print(f"saved to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
