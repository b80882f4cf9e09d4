"""CPU per MCP probe in the probing process (what the operator pays per pod per round).

    .venv/bin/python bench/probe_cost.py [--probes 400] [--concurrency 8] [--profile]
                                         [--listener sdk|replay]

Starts one listener on 127.0.0.1 -- the example MCP server (``sdk``, the official SDK, the
default) or ``bench/replay.py``'s replay of its recorded reply (``replay``) -- and times, in
the same run, the same ``server/discover`` exchange made by:

- the operator's ``probe.probe`` as it runs (connections kept alive, ``max_age_s`` 30 s);
- the operator's ``probe.probe`` on a new connection every time (``max_age_s=0``);
- httpx with a new connection per request (the prober's transport before 2026-12-01);
- ``http.client`` from the standard library, new connection and kept alive (independent
  baselines: a raw client that shares nothing with the operator).

CPU is the client's ``time.process_time`` (user + system, so the loopback TCP work done in
the client's context counts), which does not depend on the machine's load as wall time
does. The listener process's CPU per probe (/proc utime+stime) is printed too. The steady
state's probing CPU at N servers x P pods every I seconds is about N * P / I * the first row.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import http.client
import json
import pstats
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))
from reconcile import proc_stats
from replay import record

from mcp_devcluster.stack import free_port
from mcp_operator.health import probe
from mcp_operator.health.http1 import ProbeClient

HEADERS = {
    "Accept": "application/json, text/event-stream",
    "Content-Type": "application/json",
    "MCP-Protocol-Version": "2026-07-28",
    "Mcp-Method": "server/discover",
}
BODY = json.dumps(
    {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "server/discover",
        "params": {
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                # the probe's own, byte for byte (the replay listener answers only that)
                "io.modelcontextprotocol/clientInfo": {
                    "name": "mcp-operator-probe",
                    "version": "0.1.0",
                },
            }
        },
    }
).encode()

Row = tuple[str, float, float, int]
Line = tuple[str, float, float, int, float]
"""A row plus the listener's CPU ms per probe during it."""


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


async def measure(
    label: str, one: Callable[[], Awaitable[bool]], probes: int, concurrency: int
) -> Row:
    slots = asyncio.Semaphore(concurrency)

    async def limited() -> bool:
        async with slots:
            return await one()

    cpu, wall = time.process_time(), time.monotonic()
    ok = sum(await asyncio.gather(*(limited() for _ in range(probes))))
    return label, 1000 * (time.process_time() - cpu) / probes, time.monotonic() - wall, ok


def blocking(port: int, probes: int, keep: bool) -> Row:
    cpu, wall, ok = time.process_time(), time.monotonic(), 0
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for _ in range(probes):
        if not keep:
            conn = http.client.HTTPConnection("127.0.0.1", port)
        conn.request("POST", "/mcp", body=BODY, headers=HEADERS)
        response = conn.getresponse()
        ok += response.status == 200 and b"supportedVersions" in response.read()
        if not keep:
            conn.close()
    conn.close()
    label = f"http.client, {'kept alive' if keep else 'new connection'} (independent, serial)"
    return label, 1000 * (time.process_time() - cpu) / probes, time.monotonic() - wall, ok


async def run(probes: int, concurrency: int, profile: bool, listener: str) -> list[Line]:
    port = free_port()
    workdir = tempfile.TemporaryDirectory(prefix="mcp-probe-cost-")
    server = await start_listener(listener, port, Path(workdir.name))
    target = probe.ProbeTarget(url=f"http://127.0.0.1:{port}/mcp")
    settings = probe.ProbeSettings(step_timeout_s=5, budget_s=10, cleanup_timeout_s=0.5)
    kept, fresh = ProbeClient(), ProbeClient(max_age_s=0.0)
    before = httpx.AsyncClient(limits=httpx.Limits(max_keepalive_connections=0))

    async def operator(client: ProbeClient) -> bool:
        result = await probe.probe(client, target, settings)
        return result.outcome is probe.Outcome.HEALTHY

    async def httpx_post() -> bool:
        response = await before.post(target.url, content=BODY, headers=HEADERS)
        return response.status_code == 200

    async def with_listener(row: Awaitable[Row]) -> Line:
        start = proc_stats(server.pid)[1]
        done = await row
        return (*done, 1000 * (proc_stats(server.pid)[1] - start) / probes)

    try:
        for _ in range(100):  # until the server answers
            if await operator(fresh):
                break
            await asyncio.sleep(0.2)
        profiler = cProfile.Profile() if profile else None
        if profiler:
            profiler.enable()
        label = "operator probe, kept alive (as run)"
        lines = [await with_listener(measure(label, lambda: operator(kept), probes, concurrency))]
        if profiler:
            profiler.disable()
            pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        label = "operator probe, new connection each"
        lines.append(
            await with_listener(measure(label, lambda: operator(fresh), probes, concurrency))
        )
        label = "httpx, new connection each (before)"
        lines.append(await with_listener(measure(label, httpx_post, probes, concurrency)))
        for keep in (False, True):
            lines.append(await with_listener(asyncio.to_thread(blocking, port, probes, keep)))
        return lines
    finally:
        kept.close_idle()
        fresh.close_idle()
        await before.aclose()
        server.terminate()
        server.wait(timeout=20)
        workdir.cleanup()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--probes", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--profile", action="store_true", help="profile the first row")
    parser.add_argument("--listener", choices=("sdk", "replay"), default="sdk")
    args = parser.parse_args()
    rows = asyncio.run(run(args.probes, args.concurrency, args.profile, args.listener))
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    with open("/proc/loadavg") as f:
        load = " ".join(f.read().split()[:3])
    print(f"bench/probe_cost.py --probes {args.probes} --concurrency {args.concurrency}, {stamp}")
    print(f"load average {load}; listener: {args.listener}, on 127.0.0.1\n")
    print("| client | client CPU ms / probe | listener CPU ms / probe | wall s | healthy |")
    print("|---|---|---|---|---|")
    for label, cpu, wall, ok, listener in rows:
        print(f"| {label} | {cpu:.2f} | {listener:.2f} | {wall:.1f} | {ok}/{args.probes} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
