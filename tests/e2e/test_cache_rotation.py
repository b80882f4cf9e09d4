"""The cache password rotates under continuous traffic with zero refused logins (issue 12,
deliverable 7): real control plane, the node agent running Debian's ``redis-server`` on the
rendered configuration and the example MCP server, the operator killed with ``kill -9``
mid-rotation.

The clients are the MCP pods' own: every ~50 ms a client thread reads the environment of
every MCP server process the node agent runs (``/proc/PID/environ``: exactly the
``MCP_CACHE_PASSWORD`` the kubelet stand-in resolved when the pod started) and opens a *new*
authenticated connection with it to the cache, plus the pods' own tool calls through the
stable Service (the example server's Redis pool). The verdict is Redis's own: ``ACL LOG``
must hold no ``auth`` entry, and the password must really have changed (the first one is
refused at the end) without Redis restarting.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mcp_devcluster import faults
from mcp_devcluster.stack import OperatorProcess, server_manifest
from tests.e2e.conftest import NodeAgentProcess, get_json
from tests.e2e.ops import Kubectl, apply, get_server, wait_condition
from tests.e2e.test_cache import (
    CACHE_LABEL,
    FAST_HEALTH,
    _try_call,
    cache_pod,
    redis_cli,
    stable_url,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server not installed"),
]

NAME = "cached"  # test_cache's helpers address this server name


def secret(kubectl: Kubectl, ns: str) -> dict[str, str]:
    obj = get_json(kubectl, "secret", f"{NAME}-cache-auth", "-n", ns)
    return {k: base64.b64decode(v).decode() for k, v in obj["data"].items()}


def credential(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return dict(
        (get_server(kubectl, ns, NAME).get("status") or {}).get("cache", {}).get("credential") or {}
    )


def held_passwords(agent_pid: int, ns: str) -> list[str]:
    """MCP_CACHE_PASSWORD of every live MCP server process of *this* server (its
    ``MCP_CACHE_HOST`` names this namespace's cache) under the node agent: in the full suite
    the same agent runs other modules' cache-enabled servers, whose passwords this Redis
    rightly refuses."""
    host = f"{NAME}-cache.{ns}.svc".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"MCP_CACHE_PASSWORD=" not in environ or not faults._descends_from(
            int(entry), agent_pid
        ):
            continue
        variables = dict(item.split(b"=", 1) for item in environ.split(b"\0") if b"=" in item)
        if variables.get(b"MCP_CACHE_HOST") == host:
            found.append(variables[b"MCP_CACHE_PASSWORD"].decode())
    return found


class Clients(threading.Thread):
    """Logs in with every password the MCP pods hold, over and over; counts refusals."""

    def __init__(self, agent_pid: int, ip: str, ns: str) -> None:
        super().__init__(daemon=True)
        self.agent_pid, self.ip, self.ns = agent_pid, ip, ns
        self.stop = threading.Event()
        self.logins = self.refused = 0
        self.errors: list[str] = []
        self.passwords: set[str] = set()
        self.crashed = ""

    def run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # a dead client thread must fail the test, not hide
            self.crashed = repr(exc)
            raise

    def _loop(self) -> None:
        import redis

        while not self.stop.is_set():
            for password in held_passwords(self.agent_pid, self.ns):
                self.passwords.add(password)
                try:  # a new connection each time: AUTH with what the pod holds
                    with redis.Redis(
                        host=self.ip, port=6379, username="mcp", password=password,
                        socket_timeout=3,
                    ) as client:  # fmt: skip
                        client.set("rotation:probe", "x")
                    self.logins += 1
                except redis.AuthenticationError as exc:
                    self.refused += 1
                    self.errors.append(type(exc).__name__)
                except redis.RedisError as exc:  # not a refusal: e.g. a pod's process exiting
                    self.errors.append(type(exc).__name__)
            time.sleep(0.05)


class ToolCalls(threading.Thread):
    """The MCP pods' own use of the cache: the counter tool through the stable Service."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[str] = []
        self.unanswered = 0

    def run(self) -> None:
        while not self.stop.is_set():
            answer = _try_call(self.url, "counter")
            if answer is None:
                self.unanswered += 1
            else:
                self.answers.append(answer)
            time.sleep(0.2)


def acl_auth_failures(ip: str, operator_password: str) -> int:
    """Redis's own record of refused logins: ``ACL LOG`` entries with reason ``auth`` (each
    with its count: Redis groups repeats)."""
    out = redis_cli(ip, "mcp-operator", operator_password, "ACL", "LOG").splitlines()
    assert "NOPERM" not in "".join(out) and "WRONGPASS" not in "".join(out), out
    total = 0
    for entry in _entries(out):
        if entry.get("reason") == "auth":
            total += int(entry.get("count") or 1)
    return total


def _entries(lines: list[str]) -> list[dict[str, str]]:
    """redis-cli's flat rendering of ACL LOG (key, value, key, value ... per entry)."""
    entries: list[dict[str, str]] = []
    for key, value in zip(lines[::2], lines[1::2], strict=False):
        if key == "count":
            entries.append({})
        if entries:
            entries[-1][key] = value
    return entries


def test_cache_password_rotates_twice_under_traffic_without_a_refused_login(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    try:
        _scenario(operator, node_agent, kubectl, unique_ns)
    except BaseException:
        _dump(operator, kubectl, unique_ns)
        raise


def _dump(op: OperatorProcess, kubectl: Kubectl, ns: str) -> None:
    status = get_server(kubectl, ns, NAME).get("status") or {}
    print("\n--- status.cache:", json.dumps(status.get("cache")))
    for cond in status.get("conditions") or []:
        print("--- condition", cond["type"], cond["status"], cond.get("reason"), cond["message"])
    for dep in get_json(kubectl, "deployments", "-n", ns)["items"]:
        annotations = dep["spec"]["template"]["metadata"].get("annotations")
        print("--- deployment", dep["metadata"]["name"], annotations, json.dumps(dep["status"]))
    for pod in get_json(kubectl, "pods", "-n", ns)["items"]:
        print(
            "--- pod", pod["metadata"]["name"], pod["metadata"].get("annotations"),
            pod["metadata"].get("deletionTimestamp"), pod["status"].get("phase"),
            [c["status"] for c in pod["status"].get("conditions") or [] if c["type"] == "Ready"],
        )  # fmt: skip
    log = op.log_path.read_text(errors="replace").splitlines()
    print("--- operator log:\n" + "\n".join(line for line in log if ns in line)[-5000:])


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
            pod={"drainSeconds": 1},  # rolls are what a rotation waits for
            cache={
                "enabled": True,
                "maxMemory": "4Mi",
                "credentialRotation": {"every": "15s", "propagation": "2s"},
            },
        ),
    )
    wait_condition(kubectl, ns, NAME, "Ready", "True", timeout=90)
    wait_condition(kubectl, ns, NAME, "CacheReady", "True", timeout=90)
    first = secret(kubectl, ns)
    redis_pod = cache_pod(kubectl, ns)
    ip = redis_pod["status"]["podIP"]
    start_rotations = int(credential(kubectl, ns).get("rotations") or 0)

    clients = Clients(node_agent.pid, ip, ns)
    tools = ToolCalls(stable_url(kubectl, ns))
    clients.start()
    tools.start()
    seen_phases: list[str] = []
    timeline: list[str] = []
    began = time.monotonic()
    passwords = {first["password"]}
    killed_in: str | None = None
    try:
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            now = credential(kubectl, ns)
            phase = now.get("phase")
            if phase and (not seen_phases or seen_phases[-1] != phase):
                seen_phases.append(phase)
                timeline.append(f"{phase}@{time.monotonic() - began:.0f}s")
            with contextlib.suppress(Exception):
                passwords.add(secret(kubectl, ns)["password"])
            done = int(now.get("rotations") or 0) - start_rotations
            # kill -9 in the middle of the second rotation, while a tier rolls
            if done == 1 and killed_in is None and phase in ("RollingBackup", "RollingPrimary"):
                operator.kill9()
                killed_in = phase
                time.sleep(1.5)
                operator.start()
                operator.wait_live(timeout=60)
            if done >= 2 and phase == "Stable":
                break
            time.sleep(0.3)
        else:
            raise AssertionError(f"two rotations not done in time: {timeline}")
        time.sleep(1.0)  # clients log in with what the pods hold after the last step
    finally:
        clients.stop.set()
        tools.stop.set()
        clients.join(10)
        tools.join(30)

    last = secret(kubectl, ns)
    print(
        f"\nrotation: {timeline}; killed in {killed_in}; {clients.logins} logins with "
        f"{len(clients.passwords)} distinct pod-held passwords, {clients.refused} refused; "
        f"{len(tools.answers)} tool calls ({tools.unanswered} unanswered); other client errors "
        f"{sorted(set(clients.errors))}"
    )
    # -- zero refused logins: by the clients and by Redis's own ACL log ----------------------
    assert killed_in is not None
    assert not clients.crashed and clients.refused == 0, (clients.crashed, clients.errors[:5])
    assert clients.logins > 200 and len(clients.passwords) >= 3
    assert acl_auth_failures(ip, last["operatorPassword"]) == 0
    redis_errors = [a for a in tools.answers if not a.endswith("backend=redis")]
    assert not redis_errors and len(tools.answers) > 50, redis_errors[:3]
    # -- the password really changed; the first one is refused now; Redis never restarted ----
    assert len(passwords) >= 3 and last["password"] != first["password"]
    assert "nextPassword" not in last
    assert "WRONGPASS" in redis_cli(ip, "mcp", first["password"], "PING")
    assert "PONG" in redis_cli(ip, "mcp", last["password"], "PING")
    again = cache_pod(kubectl, ns)
    assert again["metadata"]["uid"] == redis_pod["metadata"]["uid"]
    assert again["status"]["containerStatuses"][0]["restartCount"] == 0
    assert set(held_passwords(node_agent.pid, ns)) == {last["password"]}
    for step in ("Adding", "RollingBackup", "RollingPrimary", "Stable"):
        assert step in seen_phases, seen_phases
    events = get_json(kubectl, "events", "-n", ns)["items"]
    rotated = sum(e.get("count") or 1 for e in events if e["reason"] == "CachePasswordRotated")
    assert rotated >= 2
    obj = wait_condition(kubectl, ns, NAME, "CacheCredentialReady", "True", timeout=15)
    assert obj["status"]["cache"]["credential"]["phase"] == "Stable"
    series = {
        line.split("{", 1)[0]: float(line.rsplit(None, 1)[1])
        for line in operator.metrics().splitlines()
        if line.startswith("mcp_operator_cache_password_") and f'namespace="{ns}"' in line
    }
    assert series["mcp_operator_cache_password_rotating"] == 0.0
    assert series["mcp_operator_cache_password_rotations_total"] >= 1  # counted since the kill
    assert 0 <= series["mcp_operator_cache_password_age_seconds"] < 60

    # -- no password in status, Events, the operator's log or metrics ------------------------
    texts = [
        json.dumps(get_server(kubectl, ns, NAME)),
        json.dumps(events),
        operator.log_path.read_text(errors="replace"),
        operator.metrics(),
    ]
    secrets = passwords | clients.passwords | {first["monitorPassword"], first["operatorPassword"]}
    leaked = [s for s in secrets if len(s) > 16 and any(s in t for t in texts)]
    assert not leaked, "a cache password appears in the operator's output"
    pods = get_json(kubectl, "pods", "-n", ns, "-l", f"{CACHE_LABEL}={NAME}")["items"]
    assert len(pods) == 1
