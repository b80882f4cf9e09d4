"""CPU per MCP probe in the probing process (what the operator pays per pod per round).

    .venv/bin/python bench/probe_cost.py [--probes 400] [--concurrency 8] [--profile]
                                         [--listener sdk|replay]

Starts one listener on 127.0.0.1 -- the example MCP server (``sdk``) or ``bench/replay.py``'s
replay of its recorded reply (``replay``) -- and runs the operator's own ``probe.probe``
(a new connection per probe, as the kubelet's probes) against it; prints the client's CPU
time per probe (``time.process_time``: user + system, so the loopback TCP work done in the
client's context counts too) and the listener process's CPU per probe (/proc utime+stime).
Independent of the machine's load, unlike wall times: the steady state's CPU at N servers x
P pods every I seconds is about N * P / I * this.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from reconcile import proc_stats
from replay import record

from mcp_devcluster.stack import free_port
from mcp_operator.health import probe


async def start_listener(listener: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    """The example server, or the replay of its recorded reply, on 127.0.0.1:``port``."""
    if listener == "sdk":
        argv = ["-m", "mcp_example_server", "--host", "127.0.0.1", "--port", str(port)]
    else:
        (await record()).dump(workdir / "recording.json")
        replay = str(Path(__file__).parent / "replay.py")
        argv = [replay, "serve", str(workdir / "recording.json"), "--host", "127.0.0.1"]
        argv += ["--port", str(port)]
    return subprocess.Popen(
        [sys.executable, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


async def run(probes: int, concurrency: int, profile: bool, listener: str) -> None:
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="mcp-probe-cost-")
    server = await start_listener(listener, port, Path(workdir.name))
    client = probe.client_for(None)
    try:
        target = probe.ProbeTarget(url=f"http://127.0.0.1:{port}/mcp")
        settings = probe.ProbeSettings(step_timeout_s=5, budget_s=10, cleanup_timeout_s=0.5)
        for _ in range(100):  # until the server answers
            if (await probe.probe(client, target, settings)).outcome is probe.Outcome.HEALTHY:
                break
            await asyncio.sleep(0.2)
        slots = asyncio.Semaphore(concurrency)

        async def one() -> probe.ProbeResult:
            async with slots:
                return await probe.probe(client, target, settings)

        profiler = cProfile.Profile() if profile else None
        cpu, wall = time.process_time(), time.monotonic()
        _, server_cpu = proc_stats(server.pid)
        if profiler:
            profiler.enable()
        results = await asyncio.gather(*(one() for _ in range(probes)))
        if profiler:
            profiler.disable()
        cpu, wall = time.process_time() - cpu, time.monotonic() - wall
        server_cpu = proc_stats(server.pid)[1] - server_cpu
        healthy = sum(1 for r in results if r.outcome is probe.Outcome.HEALTHY)
        print(
            f"{probes} probes ({healthy} healthy), concurrency {concurrency}, listener "
            f"{listener}: client CPU {1000 * cpu / probes:.2f} ms/probe, listener CPU "
            f"{1000 * server_cpu / probes:.2f} ms/probe, wall {wall:.1f} s"
            + (" (profiled)" if profiler else "")
        )
        if profiler:
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
    finally:
        await client.aclose()
        server.terminate()
        server.wait(timeout=20)
        workdir.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--listener", choices=("sdk", "replay"), default="sdk")
    args = parser.parse_args()
    asyncio.run(run(args.probes, args.concurrency, args.profile, args.listener))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
