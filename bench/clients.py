"""Which HTTP client should the operator use? The same server-side applies, every client,
one run, alternating order.

    .venv/bin/python bench/clients.py [--count 200] [--rounds 2] [--extra DIR]

Starts its own control plane, creates COUNT MCPServers per client (a fresh namespace each)
and applies exactly the children ``render()`` gives for them (7 per object), 20 requests in
flight (16 threads for http.client). Reports wall time and the CPU this process spent
(``time.process_time``: the client's own cost, what the operator pays per request; wall
time on a shared 2-core machine mostly measures the neighbours).

Clients: the project's ``KubeClient`` (httpx), raw ``aiohttp`` (kopf's dependency), the
independent ceiling's ``http.client`` threads, and -- when importable, e.g. installed with
``pip install --target DIR kubernetes-asyncio lightkube`` and passed as ``--extra DIR`` --
``kubernetes_asyncio`` (aiohttp underneath, generic ``call_api``) and ``lightkube``
(httpx underneath, its generic ``apply``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).parent))
from reconcile import (
    _independent_apply,
    bounded,
    create_namespace,
    create_servers,
    delete_namespace,
)

from mcp_devcluster.controlplane import ControlPlane, tools_bin_dir
from mcp_devcluster.stack import install_crd, install_operator_rbac
from mcp_operator.api.validation import parse_server
from mcp_operator.kube.client import (
    Credentials,
    KubeClient,
    load_credentials,
    resource_path,
    ssl_context,
)
from mcp_operator.render import Capabilities, RenderContext, render

Obj = dict[str, Any]
CONCURRENCY = 20
Run = Callable[[Credentials, str, list[Obj]], Awaitable[None]]


def _path(child: Obj) -> str:
    meta = child["metadata"]
    return resource_path(child["apiVersion"], child["kind"], meta["namespace"], meta["name"])


async def project(creds: Credentials, kubeconfig: str, children: list[Obj]) -> None:
    client = KubeClient(creds)
    try:
        await bounded(CONCURRENCY, [client.apply(c) for c in children])
    finally:
        await client.close()


async def raw_aiohttp(creds: Credentials, kubeconfig: str, children: list[Obj]) -> None:
    ctx = ssl_context(creds)
    headers = {"Content-Type": "application/apply-patch+yaml"}
    if creds.token:
        headers["Authorization"] = f"Bearer {creds.token}"
    connector = aiohttp.TCPConnector(limit=CONCURRENCY, ssl=ctx)
    params = {"fieldManager": "mcp-operator", "force": "true"}
    async with aiohttp.ClientSession(creds.server, connector=connector) as session:

        async def one(child: Obj) -> None:
            async with session.patch(
                _path(child), params=params, data=json.dumps(child), headers=headers
            ) as resp:
                body = await resp.read()
                if resp.status >= 400:
                    raise RuntimeError(body[:200])
                json.loads(body)

        await bounded(CONCURRENCY, [one(c) for c in children])


async def threads(creds: Credentials, kubeconfig: str, children: list[Obj]) -> None:
    work = [
        (
            "PATCH",
            _path(c) + "?fieldManager=mcp-operator&force=true",
            json.dumps(c).encode(),
            "application/apply-patch+yaml",
        )
        for c in children
    ]
    await asyncio.to_thread(_independent_apply, creds, work, 16)


async def k8s_asyncio(creds: Credentials, kubeconfig: str, children: list[Obj]) -> None:
    from kubernetes_asyncio import client, config  # type: ignore[import-not-found]

    cfg = client.Configuration()
    await config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    cfg.connection_pool_maxsize = CONCURRENCY
    async with client.ApiClient(cfg) as api:

        async def one(child: Obj) -> None:
            await api.call_api(
                _path(child),
                "PATCH",
                query_params=[("fieldManager", "mcp-operator"), ("force", "true")],
                header_params={
                    "Content-Type": "application/apply-patch+yaml",
                    "Accept": "application/json",
                },
                body=child,
                response_types_map={200: "object", 201: "object"},
                auth_settings=["BearerToken"],
                _return_http_data_only=True,
            )

        await bounded(CONCURRENCY, [one(c) for c in children])


async def lightkube(creds: Credentials, kubeconfig: str, children: list[Obj]) -> None:
    import lightkube  # type: ignore[import-not-found]
    from lightkube import codecs
    from lightkube.generic_resource import (  # type: ignore[import-not-found]
        create_namespaced_resource,
    )

    for version in {c["apiVersion"] for c in children if c["kind"] == "PodDisruptionBudget"}:
        if version == "policy/v1beta1":  # 1.20: not among lightkube's models
            create_namespaced_resource(
                "policy", "v1beta1", "PodDisruptionBudget", "poddisruptionbudgets"
            )
    client = lightkube.AsyncClient(lightkube.KubeConfig.from_file(kubeconfig))
    try:
        objs = [codecs.from_dict(c) for c in children]
        await bounded(
            CONCURRENCY, [client.apply(o, field_manager="mcp-operator", force=True) for o in objs]
        )
    finally:
        await client.close()


CLIENTS: dict[str, Run] = {
    "project KubeClient (httpx)": project,
    "aiohttp": raw_aiohttp,
    "http.client, 16 threads": threads,
    "kubernetes_asyncio (aiohttp)": k8s_asyncio,
    "lightkube (httpx)": lightkube,
}


async def one_round(cp: ControlPlane, name: str, run: Run, count: int, tag: str) -> Obj:
    admin = KubeClient(load_credentials(str(cp.admin_kubeconfig)))
    creds = load_credentials(str(cp.operator_kubeconfig))
    ns = f"clients-{tag}"
    try:
        caps = Capabilities(await admin.api_versions(), await admin.server_minor())
        await create_namespace(admin, ns)
        servers = await create_servers(admin, ns, count, CONCURRENCY)
        children: list[Obj] = []
        for body in servers:
            ctx = RenderContext(capabilities=caps, owner_uid=body["metadata"]["uid"])
            children += render(parse_server(body), ctx)
        load = os.getloadavg()[0]
        cpu0, t0 = time.process_time(), time.monotonic()
        await run(creds, str(cp.operator_kubeconfig), children)
        took, cpu = time.monotonic() - t0, time.process_time() - cpu0
        await delete_namespace(admin, ns)
        return {"client": name, "wall": took, "cpu": cpu, "n": len(children), "load": load}
    finally:
        await admin.close()


def importable(name: str) -> bool:
    module = {"kubernetes_asyncio": "kubernetes_asyncio", "lightkube": "lightkube"}
    for key, mod in module.items():
        if key in name:
            try:
                __import__(mod)
            except ImportError:
                return False
    return True


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--extra", help="a pip --target dir with kubernetes-asyncio/lightkube")
    args = parser.parse_args()
    if args.extra:
        sys.path.append(args.extra)  # after the venv: the project's own versions win
    clients = {k: v for k, v in CLIENTS.items() if importable(k)}
    tmp = tempfile.TemporaryDirectory(prefix="mcp-clients-")
    cp = ControlPlane(Path(tmp.name) / "cp", die_with_parent=True)
    rows: list[Obj] = []
    try:
        cp.up(timeout=120)
        kubectl = str(tools_bin_dir() / "kubectl")
        install_crd(kubectl, cp.admin_kubeconfig)
        install_operator_rbac(kubectl, cp.admin_kubeconfig)
        print(f"control plane {cp.version} ready; clients: {', '.join(clients)}")
        for r in range(args.rounds):
            order = list(clients.items())
            if r % 2:
                order.reverse()
            for i, (name, run) in enumerate(order):
                try:
                    row = asyncio.run(one_round(cp, name, run, args.count, f"{r}-{i}"))
                except Exception as exc:  # one client's failure must not lose the others
                    print(f"  round {r + 1} {name}: failed: {exc!r}"[:300])
                    continue
                print(
                    f"  round {r + 1} {name}: {row['wall']:.2f} s wall, {row['cpu']:.2f} s CPU "
                    f"(load {row['load']:.2f})"
                )
                rows.append(row)
    finally:
        cp.down()
        tmp.cleanup()
    print(f"\n{rows[0]['n']} server-side applies per client and round, {CONCURRENCY} in flight")
    print("| client | wall s (per round) | client CPU s (per round) | CPU ms / apply |")
    print("|---|---|---|---|")
    for name in clients:
        mine = [r for r in rows if r["client"] == name]
        if not mine:
            continue
        walls = " / ".join(f"{r['wall']:.1f}" for r in mine)
        cpus = " / ".join(f"{r['cpu']:.2f}" for r in mine)
        per = min(r["cpu"] for r in mine) / mine[0]["n"] * 1000
        print(f"| {name} | {walls} | {cpus} | {per:.2f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
