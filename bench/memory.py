"""Where the operator's memory goes, per MCPServer.

    .venv/bin/python bench/memory.py [--counts 100 300] [--interval 10]

Starts its own control plane, one example MCP server, one heartbeating Node and the fake
kubelet of ``bench/steady.py`` (pods Running with a routable address, Ready following the
operator's gate), and the real operator (``mcp-operator run``) inside a small wrapper. It
creates the servers in steps (``--counts``, cumulative, in one operator process); once every
pod of a step is indexed and has an address, it waits ``--settle`` seconds and asks the
operator (SIGUSR1) for a memory report:

- RSS (``/proc``, after a ``gc.collect()``);
- deep sizes of the parts that grow per server: the child index by kind (and how much of it
  is ``managedFields``), the workers' bodies and status, the health loops, the metric
  series, asyncio tasks.

Allocation tracing (tracemalloc) was tried here and dropped: with it, the report did not
finish within 600 s even at 5 servers on the shared 2 cores.

The difference between two steps divided by the servers added is the cost per server;
the projection for 1,000 servers is ``RSS(last step) + per-server x (1000 - last count)``.
Health interval ``--interval`` (default 10 s, to keep CPU for the measurement on 2
shared cores: what a server holds does not depend on how often it is probed).
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import signal
import subprocess
import sys
import time
import types
from collections import Counter
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
REPORT_DIR_ENV = "MCP_MEMORY_DIR"
SKIP = (
    type,
    types.ModuleType,
    types.FunctionType,
    types.BuiltinFunctionType,
    types.MethodType,
    types.CoroutineType,
    types.FrameType,
    types.GeneratorType,
    asyncio.AbstractEventLoop,
    asyncio.Future,
)


# -- inside the operator process ----------------------------------------------------------


FOLLOW = ("mcp_operator", "pydantic", "httpx", "httpcore", "ssl", "datetime", "prometheus_client")


def deep_size(root: Any, seen: set[int] | None = None) -> int:
    """Bytes of ``root`` and everything it reaches: containers, and the attributes of objects
    of the operator's own classes and a few data-holding packages (not event loops, tasks,
    functions or modules, which would lead into the whole heap). ``seen`` shared between
    calls counts shared objects once."""
    seen = set() if seen is None else seen
    total, stack = 0, [root]
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, SKIP):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        if isinstance(obj, dict):
            stack.extend(obj.keys())
            stack.extend(obj.values())
        elif isinstance(obj, list | tuple | set | frozenset):
            stack.extend(obj)
        elif type(obj).__module__.startswith(FOLLOW) or dataclasses.is_dataclass(obj):
            if hasattr(obj, "__dict__"):
                stack.append(obj.__dict__)
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    if slot != "__dict__" and hasattr(obj, slot):
                        stack.append(getattr(obj, slot))
    return total


def _instances(name: str) -> list[Any]:
    return [o for o in gc.get_objects() if type(o).__name__ == name]


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _index_report(index: Any) -> Obj:
    """Per kind: count, deep size, of which managedFields, and the JSON size. Objects
    shared between objects of a kind (interned keys) are counted once per kind."""
    out: dict[str, dict[str, float]] = {}
    seen: dict[str, set[int]] = {}
    tables = [(k, o) for table in index._children.values() for (k, _), o in table.items()]
    tables += [("Pod", o) for table in index._pods.values() for o in table.values()]
    for kind, obj in tables:
        row = out.setdefault(kind, {"count": 0, "bytes": 0, "managedFields": 0, "json": 0})
        row["count"] += 1
        managed = (obj.get("metadata") or {}).get("managedFields")
        row["managedFields"] += deep_size(managed, seen.setdefault(kind + "/mf", set()))
        row["bytes"] += deep_size(obj, seen.setdefault(kind, set()))
        row["json"] += len(json.dumps(obj))
    return out


def memory_report() -> Obj:
    gc.collect()
    report: Obj = {"rss_mb": _rss_mb(), "gc_objects": len(gc.get_objects())}
    supervisors = _instances("Supervisor")
    if supervisors:
        sup = supervisors[0]
        report["servers"] = len(sup.workers)
        report["index"] = _index_report(sup.shared.index)
        report["index_total"] = deep_size(sup.shared.index)
        seen: set[int] = set()
        workers = list(sup.workers.values())
        report["workers"] = {
            attr: sum(deep_size(getattr(w, attr), seen) for w in workers)
            for attr in ("body", "status", "_written", "server")
        }
    loops = _instances("HealthLoop")
    seen = set()
    report["health_loops"] = {
        attr: sum(deep_size(getattr(h, attr), seen) for h in loops)
        for attr in ("memory", "clients", "tokens", "_settings", "slots")
    }
    report["health_clients"] = sum(len(h.clients) for h in loops)
    from prometheus_client import REGISTRY

    collectors = list(REGISTRY._collector_to_names)
    report["metrics"] = {
        "series": sum(len(getattr(c, "_metrics", {}) or {}) for c in collectors),
        "bytes": deep_size([getattr(c, "_metrics", None) for c in collectors]),
    }
    tasks = [o for o in gc.get_objects() if isinstance(o, asyncio.Task) and not o.done()]
    report["tasks"] = Counter(t.get_name().split(":")[0] for t in tasks).most_common(12)
    report["types"] = Counter(type(o).__name__ for o in gc.get_objects()).most_common(25)
    return report


def child(argv: list[str]) -> int:
    """Run the operator, answering SIGUSR1 with a report (label read from ``request``)."""
    out = Path(os.environ[REPORT_DIR_ENV])

    def dump(*_: Any) -> None:
        label = (out / "request").read_text().strip()
        report = memory_report()
        (out / f"{label}.tmp").write_text(json.dumps(report, default=str))
        (out / f"{label}.tmp").rename(out / f"{label}.json")

    signal.signal(signal.SIGUSR1, dump)
    from mcp_operator.cli import main as operator_main

    return operator_main(argv)


# -- the harness --------------------------------------------------------------------------


async def ask(pid: int, out: Path, label: str, timeout: float = 600) -> Obj:
    (out / "request").write_text(label)
    os.kill(pid, signal.SIGUSR1)
    path = out / f"{label}.json"
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no memory report {label}")
        await asyncio.sleep(1)
    report: Obj = json.loads(path.read_text())
    return report


def indexed(metrics_text: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for line in metrics_text.splitlines():
        if line.startswith("mcp_operator_indexed_objects{"):
            kind = line.split('kind="', 1)[1].split('"', 1)[0]
            out[kind] = float(line.rsplit(" ", 1)[1])
    return out


async def scenario(cp: Any, args: argparse.Namespace, workdir: Path) -> list[Obj]:
    import httpx
    from reconcile import bounded, create_namespace
    from steady import NS, fake_kubelet, manifest, teardown

    from mcp_devcluster.nodeagent.ipam import DEV_POD_RANGE, ensure_local_range
    from mcp_devcluster.nodeagent.kubeapi import KubeClient as SyncClient
    from mcp_devcluster.nodeagent.node import NodeHeartbeat
    from mcp_devcluster.stack import free_port
    from mcp_operator.kube.client import KubeClient, load_credentials

    ensure_local_range(DEV_POD_RANGE)
    port = free_port()
    logs = open(workdir / "processes.log", "ab")  # noqa: SIM115
    server = subprocess.Popen(
        [sys.executable, "-m", "mcp_example_server", "--host", "0.0.0.0", "--port", str(port)],
        stdout=logs,
        stderr=subprocess.STDOUT,
    )
    reports = workdir / "reports"
    reports.mkdir()
    metrics_port, live_port = free_port(), free_port()
    env = {
        **os.environ,
        "KUBECONFIG": str(cp.operator_kubeconfig),
        "PYTHONUNBUFFERED": "1",
        REPORT_DIR_ENV: str(reports),
    }
    argv = [sys.executable, __file__, "--operator-child", "run", "--all-namespaces"]
    argv += ["--metrics-port", str(metrics_port), "--liveness-port", str(live_port)]
    op = subprocess.Popen(argv, stdout=logs, stderr=subprocess.STDOUT, env=env)
    admin = KubeClient(load_credentials(str(cp.admin_kubeconfig)))
    stop = asyncio.Event()
    written: Counter[str] = Counter()
    per_server = 2 + args.backup_replicas
    node = NodeHeartbeat(
        SyncClient(str(cp.admin_kubeconfig)),
        "steady-node",
        "127.0.0.1",
        max_pods=max(args.counts) * per_server + 16,
    )
    node.register()
    node.start()
    kubelet: asyncio.Task[None] | None = None
    results: list[Obj] = []
    try:
        await create_namespace(admin, NS)
        kubelet = asyncio.create_task(fake_kubelet(admin, stop, written))
        made = 0
        async with httpx.AsyncClient(timeout=30) as http:
            for count in args.counts:
                objs = []
                for i in range(made, count):
                    obj = manifest(f"s{i:04d}", port, args.backup_replicas)
                    obj["spec"]["health"] = {"intervalSeconds": args.interval}
                    objs.append(obj)
                t0 = time.monotonic()
                await bounded(20, [admin.create(o) for o in objs])
                made = count
                pods = count * per_server
                while time.monotonic() - t0 < args.settle_timeout:
                    try:
                        text = (await http.get(f"http://127.0.0.1:{metrics_port}/metrics")).text
                    except httpx.HTTPError:
                        text = ""
                    have = indexed(text)
                    addressed = len(
                        [
                            p
                            for p in (await admin.request("GET", f"/api/v1/namespaces/{NS}/pods"))[
                                "items"
                            ]
                            if (p.get("status") or {}).get("podIP")
                        ]
                    )
                    if have.get("Pod", 0) >= pods and addressed >= pods:
                        break
                    await asyncio.sleep(5)
                took = time.monotonic() - t0
                print(f"  {count} servers: {have} indexed, {addressed} addressed after {took:.0f}s")
                await asyncio.sleep(args.settle)
                report = await ask(op.pid, reports, f"n{count}")
                report["count"] = count
                print(f"  {count}: RSS {report['rss_mb']:.0f} MB")
                results.append(report)
        return results
    finally:
        await teardown(stop, node, kubelet, admin, (op, server))
        logs.close()


def _mb(n: float) -> str:
    return f"{n / 1e6:.1f}"


def table(results: list[Obj], args: argparse.Namespace, version: str) -> list[str]:
    """Per step, and per server between the first and the last step."""
    first, last = results[0], results[-1]
    added = max(1, last["count"] - first["count"])
    rows = [
        f"memory: {', '.join(str(r['count']) for r in results)} MCPServers "
        f"({2 + args.backup_replicas} pods each), health interval {args.interval} s, "
        f"kube-apiserver {version}",
        "",
        "| part | " + " | ".join(f"{r['count']} servers" for r in results) + " | per server |",
        "|---|" + "---|" * (len(results) + 1),
    ]

    def row(name: str, values: list[float], unit: float = 1e6, suffix: str = "MB") -> None:
        per = (values[-1] - values[0]) / added
        cells = " | ".join(f"{v / unit:.1f}" for v in values)
        rows.append(f"| {name} ({suffix}) | {cells} | {per / 1e3:.1f} kB |")

    row("RSS", [r["rss_mb"] * 1e6 for r in results])
    row("child index, total", [r["index_total"] for r in results])
    kinds = sorted({k for r in results for k in r["index"]})
    for kind in kinds:
        row(f"  {kind}", [r["index"].get(kind, {}).get("bytes", 0) for r in results])
        row(
            "    of which managedFields",
            [r["index"].get(kind, {}).get("managedFields", 0) for r in results],
        )
    for attr in ("body", "status", "_written", "server"):
        row(f"workers: {attr}", [r["workers"][attr] for r in results])
    for attr in ("memory", "clients", "tokens", "_settings", "slots"):
        row(f"health loops: {attr}", [r["health_loops"][attr] for r in results])
    row("metric series", [r["metrics"]["bytes"] for r in results])
    per_rss = (last["rss_mb"] - first["rss_mb"]) / added
    projected = last["rss_mb"] + per_rss * (1000 - last["count"])
    rows += [
        "",
        f"RSS per server: {per_rss * 1000:.0f} kB; projected RSS at 1,000 servers: "
        f"{projected:.0f} MB (target <= 500 MB)",
        f"metric series: {', '.join(str(r['metrics']['series']) for r in results)}; "
        f"gc objects: {', '.join(str(r['gc_objects']) for r in results)}",
        "JSON bytes per indexed object: "
        + ", ".join(
            f"{k} {last['index'][k]['json'] / max(1, last['index'][k]['count']) / 1e3:.1f} kB"
            for k in kinds
        ),
        f"asyncio tasks at {last['count']}: {last['tasks']}",
    ]
    growth = Counter(dict(last["types"])) - Counter(dict(first["types"]))
    rows += ["", "object types grown per server (count):"]
    rows += [f"  {t}: {n / added:.0f}" for t, n in growth.most_common(15)]
    return rows


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--operator-child":
        return child(sys.argv[2:])
    sys.path.insert(0, str(Path(__file__).parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--counts", type=int, nargs="+", default=[100, 300])
    parser.add_argument("--backup-replicas", type=int, default=2)
    parser.add_argument("--interval", type=int, default=10)
    parser.add_argument("--settle", type=float, default=30.0)
    parser.add_argument("--settle-timeout", type=float, default=600.0)
    parser.add_argument("--out", help="results file (default: print only)")
    parser.add_argument("--json", help="also save the raw reports here")
    args = parser.parse_args()
    from steady import bench_control_plane

    with bench_control_plane("mcp-memory-") as (cp, workdir):
        results = asyncio.run(scenario(cp, args, workdir))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    text = "\n".join(table(results, args, cp.version)) + "\n"
    print("\n" + text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
