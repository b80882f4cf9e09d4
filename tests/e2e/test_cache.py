"""The per-server cache end to end (issue 13): real control plane, the node agent running
Debian's ``redis-server`` on exactly the rendered files (the config Secret as mounted), the
example MCP server using the injected ``MCP_CACHE_*`` contract, and the operator.

One server (primary 1, hot backup 1, fast health) walks the whole story, because a cache is
slow to set up and what matters is the sequence a user lives through: tools write and read
the cache; Redis refuses the default user, a wrong password and dangerous commands;
``maxMemory`` evicts instead of growing; the backup tier reads what the primary wrote after a
failover; a deleted cache pod comes back (``CacheReady`` False then True) while the server
stays ``Ready``; the NetworkPolicy selects exactly this server's pods; no password shows up
in status, Events or the operator's log.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_devcluster import faults
from mcp_devcluster.faults import kept_dead
from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from mcp_devcluster.traffic import service_address
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply, get_server, stable_selector_tier, wait_condition

pytestmark = pytest.mark.e2e

NAME = "cached"
SERVER_LABEL = "mcp-operator.dev/server"
TIER_LABEL = "mcp-operator.dev/tier"
CACHE_LABEL = "mcp-operator.dev/cache"
MAX_MEMORY = 4 * 1024**2
FAST_HEALTH = {
    "intervalSeconds": 1,
    "failureThreshold": 2,
    "successThreshold": 1,
    "recoveryTimeoutSeconds": 2,
}


def call(url: str, tool: str, args: dict[str, Any] | None = None) -> str:
    async def go() -> str:
        from mcp import Client

        async with Client(url) as client:
            result = await client.call_tool(tool, args or {})
            return str(result.content[0].text)  # type: ignore[union-attr]

    return asyncio.run(go())


def running_pods(kubectl: Kubectl, ns: str, selector: str) -> list[dict[str, Any]]:
    pods = get_json(kubectl, "pods", "-n", ns, "-l", selector)["items"]
    return [
        p
        for p in pods
        if p["status"].get("podIP")
        and p["status"].get("phase") == "Running"
        and not p["metadata"].get("deletionTimestamp")
    ]


def tier_url(kubectl: Kubectl, ns: str, tier: str) -> str:
    def find() -> str | None:
        pods = running_pods(kubectl, ns, f"{SERVER_LABEL}={NAME},{TIER_LABEL}={tier}")
        return f"http://{pods[0]['status']['podIP']}:8080/mcp" if pods else None

    return str(wait_for(find, timeout=30, what=f"{tier} pod"))


def stable_url(kubectl: Kubectl, ns: str) -> str:
    def find() -> str | None:
        return service_address(get_json(kubectl, "service", NAME, "-n", ns))

    return f"{wait_for(find, timeout=30, what='stable Service proxy address')}/mcp"


def cache_pod(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return dict(wait_for(lambda: _cache_pod_or_none(kubectl, ns), timeout=60, what="cache pod"))


def _cache_pod_or_none(kubectl: Kubectl, ns: str) -> dict[str, Any] | None:
    pods = running_pods(kubectl, ns, f"{CACHE_LABEL}={NAME}")
    return pods[0] if pods else None


def _pod_ready(pod: dict[str, Any]) -> bool:
    conditions = pod["status"].get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def secret_values(kubectl: Kubectl, ns: str) -> dict[str, str]:
    secret = get_json(kubectl, "secret", f"{NAME}-cache-auth", "-n", ns)
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def redis_cli(ip: str, user: str, password: str, *args: str) -> str:
    """The password travels in REDISCLI_AUTH, as in the pod's readiness probe."""
    out = subprocess.run(
        ["redis-cli", "--no-auth-warning", "-h", ip, "-p", "6379", "--user", user, *args],
        env={**os.environ, "REDISCLI_AUTH": password},
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    return out.stdout + out.stderr


def info(ip: str, monitor: str, section: str) -> dict[str, str]:
    text = redis_cli(ip, "monitor", monitor, "INFO", section)
    return {
        k: v.strip() for k, v in (line.split(":", 1) for line in text.splitlines() if ":" in line)
    }


def cache_ready_metric(op: OperatorProcess, ns: str) -> float | None:
    for line in op.metrics().splitlines():
        labels = f'namespace="{ns}"' in line and f'server="{NAME}"' in line
        if line.startswith("mcp_operator_cache_ready{") and labels:
            return float(line.rsplit(None, 1)[1])
    return None


@pytest.mark.skipif(
    subprocess.run(["which", "redis-server"], capture_output=True).returncode != 0,
    reason="redis-server not installed",
)
def test_cache_end_to_end(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    try:
        _scenario(operator, node_agent, kubectl, unique_ns)
    except BaseException:
        _dump(operator, node_agent, kubectl, unique_ns)
        raise


def _dump(op: OperatorProcess, agent: NodeAgentProcess, kubectl: Kubectl, ns: str) -> None:
    """What a failure needs to be understood (the tmp dirs do not outlive the session)."""
    print("\n--- status:", json.dumps(get_server(kubectl, ns, NAME).get("status"), indent=1))
    for pod in get_json(kubectl, "pods", "-n", ns)["items"]:
        print("--- pod", pod["metadata"]["name"], json.dumps(pod.get("status"))[:1500])
    for event in get_json(kubectl, "events", "-n", ns)["items"][-30:]:
        print("--- event", event.get("reason"), event.get("message"))
    log = op.log_path.read_text(errors="replace").splitlines()
    print(
        "--- operator log:\n"
        + "\n".join(line for line in log if ns in line or "Error" in line)[-6000:]
    )
    print(
        "--- node agent:\n"
        + "\n".join(
            line for line in agent.log_tail(4000).splitlines() if ns in line or "cache" in line
        )[-6000:]
    )
    for pod in get_json(kubectl, "pods", "-n", ns, "-l", f"{CACHE_LABEL}={NAME}")["items"]:
        for path in agent.state_dir.rglob(f"*{pod['metadata']['name']}*/logs/*.log"):
            print("--- cache log", path, path.read_text(errors="replace")[-3000:])


def _scenario(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, ns: str
) -> None:
    apply(
        kubectl,
        server_manifest(
            NAME,
            ns,
            primary={"replicas": 1},
            health=FAST_HEALTH,
            failover={"cooldownSeconds": 600},
            cache={"enabled": True, "maxMemory": "4Mi", "evictionPolicy": "allkeys-lru"},
        ),
    )
    wait_condition(kubectl, ns, NAME, "Ready", "True", timeout=90)
    obj = wait_condition(kubectl, ns, NAME, "CacheReady", "True", timeout=90)
    wait_condition(kubectl, ns, NAME, "BackupHealthy", "True", timeout=30)
    shown = dict(obj["status"]["cache"])
    assert shown.pop("credential", {}).get("phase") in (None, "Stable")  # test_cache_rotation
    assert shown == {
        "ready": True,
        "endpoint": f"redis://{NAME}-cache.{ns}.svc:6379",
        "secretName": f"{NAME}-cache-auth",
    }
    creds = secret_values(kubectl, ns)
    password, monitor = creds["password"], creds["monitorPassword"]
    assert creds["username"] == "mcp" and len(password) >= 40
    secret_version = get_json(kubectl, "secret", f"{NAME}-cache-auth", "-n", ns)["metadata"][
        "resourceVersion"
    ]
    wait_for(lambda: cache_ready_metric(operator, ns) == 1.0, timeout=15, what="cache_ready 1")

    # -- tools write and read the cache with the injected credentials ------------------------
    primary, backup = tier_url(kubectl, ns, "primary"), tier_url(kubectl, ns, "backup")
    assert (
        wait_for(
            lambda: (t := call(primary, "counter")).endswith("backend=redis") and t,
            timeout=30,
            what="counter via redis on the primary",
        )
        == "counter=1 backend=redis"
    )
    first = json.loads(call(primary, "slow_square", {"n": 21}))
    assert first == {"value": 441, "cached": False, "backend": "redis"}
    # The other tier's pod shares the same cache.
    assert json.loads(call(backup, "slow_square", {"n": 21}))["cached"] is True
    assert call(backup, "counter") == "counter=2 backend=redis"

    # -- Redis refuses the default user, a wrong password, dangerous commands ---------------
    ip = cache_pod(kubectl, ns)["status"]["podIP"]
    assert redis_cli(ip, "mcp", password, "GET", "example-server:counter").strip() == "2"
    assert "WRONGPASS" in redis_cli(ip, "default", "", "PING")
    assert "WRONGPASS" in redis_cli(ip, "mcp", "wrong-password", "PING")
    assert (
        "NOAUTH"
        in subprocess.run(
            ["redis-cli", "-h", ip, "-p", "6379", "PING"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    )
    for command in (["FLUSHALL"], ["CONFIG", "SET", "maxmemory", "0"], ["KEYS", "*"]):
        assert "NOPERM" in redis_cli(ip, "mcp", password, *command), command
    memory = info(ip, monitor, "memory")
    assert int(memory["maxmemory"]) == MAX_MEMORY
    assert memory["maxmemory_policy"] == "allkeys-lru"

    # -- maxMemory honoured: a fill past it evicts by the policy, Redis never dies ----------
    value = "v" * 1024
    for start in range(0, 12000, 500):  # ~12 MiB into a 4 MiB cache
        pairs = [a for i in range(start, start + 500) for a in (f"fill:{i}", value)]
        assert "OK" in redis_cli(ip, "mcp", password, "MSET", *pairs)
    memory, stats = info(ip, monitor, "memory"), info(ip, monitor, "stats")
    evicted = int(stats["evicted_keys"])
    assert evicted > 0
    assert int(memory["used_memory"]) <= MAX_MEMORY * 1.1
    keys = int(redis_cli(ip, "mcp", password, "DBSIZE").strip())
    assert 0 < keys < 12000
    pod = cache_pod(kubectl, ns)
    assert pod["status"]["podIP"] == ip
    assert pod["status"]["containerStatuses"][0]["restartCount"] == 0
    print(f"\nfill: 12000 x 1 KiB into 4 MiB: {evicted} evicted, {keys} kept")

    # -- after a failover the backup tier reads what the primary wrote ----------------------
    stable = stable_url(kubectl, ns)
    written = json.loads(call(stable, "slow_square", {"n": 33}))  # served by the primary
    assert written == {"value": 1089, "cached": False, "backend": "redis"}
    counter_before = int(call(stable, "counter").split()[0].split("=")[1])
    primary_ips = {
        p["status"]["podIP"]
        for p in running_pods(kubectl, ns, f"{SERVER_LABEL}={NAME},{TIER_LABEL}=primary")
    }
    with kept_dead(node_agent.pid, primary_ips):
        wait_for(
            lambda: stable_selector_tier(kubectl, ns, NAME) == "backup",
            timeout=30,
            interval=0.2,
            what="failover to backup",
        )
        read = wait_for(
            lambda: _try_call(stable, "slow_square", {"n": 33}), timeout=20, what="call on backup"
        )
        assert json.loads(read) == {"value": 1089, "cached": True, "backend": "redis"}
        after = _try_call(stable, "counter")
        assert after == f"counter={counter_before + 1} backend=redis"

    # -- a cache outage (Redis hung): CacheReady False and the gauge 0, the server serves ----
    redis_pids = _redis_pids(node_agent.pid, cache_pod(kubectl, ns)["status"]["podIP"])
    assert redis_pids, "redis-server process of the cache pod not found"
    _signal(redis_pids, signal.SIGSTOP)
    try:
        obj = wait_condition(kubectl, ns, NAME, "CacheReady", "False", timeout=30)
        assert condition(obj, "Ready")["status"] == "True"  # type: ignore[index]
        assert obj["status"]["cache"]["ready"] is False
        wait_for(lambda: cache_ready_metric(operator, ns) == 0.0, timeout=15, what="gauge 0")
        # Serving does not need the cache: the tool answers, from memory.
        answer = wait_for(lambda: _try_call(stable, "counter"), timeout=30, what="call")
        assert "backend=memory (redis error" in answer, answer
        assert condition(get_server(kubectl, ns, NAME), "Ready")["status"] == "True"  # type: ignore[index]
    finally:
        _signal(redis_pids, signal.SIGCONT)
    wait_condition(kubectl, ns, NAME, "CacheReady", "True", timeout=30)
    wait_for(lambda: cache_ready_metric(operator, ns) == 1.0, timeout=15, what="gauge 1")

    # -- the cache pod deleted: recreated, Ready stays True throughout, CacheReady True again --
    # (False-then-True is proven by the hung Redis above. Here the replacement Redis starts
    # in milliseconds under the node agent, so the operator may never see the Deployment
    # without a ready pod: the flip is reported when seen, not required.)
    old = cache_pod(kubectl, ns)["metadata"]["name"]
    before = condition(get_server(kubectl, ns, NAME), "CacheReady")
    assert before is not None
    kubectl("delete", "pod", old, "-n", ns, "--wait=false")
    seen_false = flipped = False
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        status = get_server(kubectl, ns, NAME)
        ready, cache_cond = condition(status, "Ready"), condition(status, "CacheReady")
        assert ready is not None and ready["status"] == "True", ready
        assert cache_cond is not None
        seen_false = seen_false or cache_cond["status"] == "False"
        flipped = flipped or cache_cond["lastTransitionTime"] != before["lastTransitionTime"]
        replaced = _cache_pod_or_none(kubectl, ns)
        if (
            cache_cond["status"] == "True"
            and replaced is not None
            and replaced["metadata"]["name"] != old
            and _pod_ready(replaced)
        ):
            break
        time.sleep(0.1)
    else:
        raise AssertionError(f"the cache pod was not replaced and ready (seen False: {seen_false})")
    print(f"cache pod deleted: CacheReady seen False={seen_false}, flipped={flipped}")
    new = cache_pod(kubectl, ns)
    assert new["metadata"]["name"] != old
    # The credential survived: same Secret, and clients reconnect with it.
    assert (
        get_json(kubectl, "secret", f"{NAME}-cache-auth", "-n", ns)["metadata"]["resourceVersion"]
        == secret_version
    )
    assert (
        wait_for(
            lambda: (t := _try_call(stable, "counter")) and t.endswith("backend=redis") and t,
            timeout=20,
            what="counter via redis after the cache came back",
        )
        == "counter=1 backend=redis"
    )  # no persistence: a recreated cache starts empty

    # -- the NetworkPolicy selects exactly this server's pods (object test) ------------------
    kubectl(
        "run", "intruder", "-n", ns, "--image=ghcr.io/none/none:1", "--restart=Never",
        f"--labels={SERVER_LABEL}=other,{TIER_LABEL}=primary",
    )  # fmt: skip
    policy = get_json(kubectl, "networkpolicy", f"{NAME}-cache", "-n", ns)["spec"]
    assert policy["policyTypes"] == ["Ingress"]
    protected = _select(kubectl, ns, policy["podSelector"])
    assert protected == {cache_pod(kubectl, ns)["metadata"]["name"]}
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    mcp_peer = next(p for p in rule["from"] if "namespaceSelector" not in p)
    admitted = _select(kubectl, ns, mcp_peer["podSelector"])
    ours = {
        p["metadata"]["name"]
        for p in get_json(kubectl, "pods", "-n", ns, "-l", f"{SERVER_LABEL}={NAME}")["items"]
    }
    assert admitted == ours and "intruder" not in admitted and protected.isdisjoint(admitted)

    # -- no password in status, Events or the operator's log --------------------------------
    texts = [
        json.dumps(get_server(kubectl, ns, NAME)),
        json.dumps(get_json(kubectl, "events", "-n", ns)),
        operator.log_path.read_text(errors="replace"),
        operator.metrics(),
    ]
    for secret in (password, monitor, creds["operatorPassword"]):
        assert not any(secret in t for t in texts)

    # -- the cache turned off: its objects, CacheReady and the gauge go; the credential stays -
    kubectl(
        "patch", "mcpserver", NAME, "-n", ns, "--type=merge",
        "-p", json.dumps({"spec": {"cache": {"enabled": False}}}),
    )  # fmt: skip

    def cache_gone() -> bool:
        left = [
            kind
            for kind, name in (
                ("deployment", f"{NAME}-cache"),
                ("service", f"{NAME}-cache"),
                ("networkpolicy", f"{NAME}-cache"),
                ("secret", f"{NAME}-cache-config"),
            )
            if kubectl("get", kind, name, "-n", ns, "--ignore-not-found", "-o", "name").stdout
        ]
        status = get_server(kubectl, ns, NAME)
        return not left and condition(status, "CacheReady") is None

    wait_for(cache_gone, timeout=60, what="cache objects and CacheReady removed")
    assert cache_ready_metric(operator, ns) is None
    assert not (get_server(kubectl, ns, NAME)["status"].get("cache") or {}).get("ready")
    for tier in ("primary", "backup"):
        dep = get_json(kubectl, "deployment", f"{NAME}-{tier}", "-n", ns)
        env = dep["spec"]["template"]["spec"]["containers"][0].get("env") or []
        assert not [e for e in env if e["name"].startswith("MCP_CACHE_")], tier
    assert secret_values(kubectl, ns)["password"] == password  # kept for a re-enable
    wait_condition(kubectl, ns, NAME, "Ready", "True", timeout=60)


def _redis_pids(agent_pid: int, ip: str) -> list[int]:
    """redis-server under the node agent serving ``ip`` (Redis rewrites its process title to
    ``redis-server IP:PORT``, so the --host lookup of ``faults`` does not apply)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        ours = "redis-server" in cmdline and f"{ip}:6379" in cmdline
        if ours and faults._descends_from(int(entry), agent_pid):
            found.append(int(entry))
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def _try_call(url: str, tool: str, args: dict[str, Any] | None = None) -> str | None:
    try:
        return call(url, tool, args)
    except Exception:
        return None


def _select(kubectl: Kubectl, ns: str, selector: dict[str, Any]) -> set[str]:
    """The pods the API server itself selects with ``selector`` (label-selector syntax)."""
    parts = [f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()]
    for expr in selector.get("matchExpressions") or []:
        assert expr["operator"] == "In"
        parts.append(f"{expr['key']} in ({','.join(expr['values'])})")
    pods = get_json(kubectl, "pods", "-n", ns, "-l", ",".join(parts))["items"]
    return {p["metadata"]["name"] for p in pods}
