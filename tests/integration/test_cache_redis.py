"""The rendered cache configuration, run by Debian's real ``redis-server`` the way the node
agent runs it (rendered files in "mounted" directories, paths mapped by
:func:`map_config_paths`), and used by the example server's cache client with the env
contract the operator injects. What a user would notice: the tools read and write the cache,
the default user and a wrong password are refused, dangerous commands are refused, and a fill
past ``maxMemory`` evicts by the policy instead of growing."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mcp_devcluster.nodeagent.images import ImageMap, build_argv, map_config_paths
from mcp_example_server import Cache, Counter, slow_square
from mcp_operator.api.validation import parse_server
from mcp_operator.keys.redisacl import Connection, RedisError
from mcp_operator.render import RenderContext, cache, render

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server not installed"
)
PASSWORD = "pw-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
MONITOR = "mon-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
OPERATOR = "op-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def rendered(max_memory: str, policy: str) -> tuple[Any, list[dict[str, Any]]]:
    srv = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools"},
            "spec": {
                "image": "x",
                "cache": {"enabled": True, "maxMemory": max_memory, "evictionPolicy": policy},
            },
        }
    )
    ctx = RenderContext(
        cache_password_hash=cache.password_hash(PASSWORD),
        cache_monitor_hash=cache.password_hash(MONITOR),
        cache_operator_hash=cache.password_hash(OPERATOR),
    )
    return srv, render(srv, ctx)


class Redis:
    def __init__(self, tmp: Path, max_memory: str = "4Mi", policy: str = "allkeys-lru") -> None:
        srv, objs = rendered(max_memory, policy)
        secret = next(o for o in objs if o["metadata"]["name"] == "weather-cache-config")
        dep = next(o for o in objs if o["metadata"]["name"] == "weather-cache")
        [container] = dep["spec"]["template"]["spec"]["containers"]
        config_dir, data_dir = tmp / "config", tmp / "data"
        config_dir.mkdir()
        data_dir.mkdir()
        for key, value in secret["data"].items():
            (config_dir / key).write_bytes(base64.b64decode(value))
        mounts = {"/etc/redis": str(config_dir), "/data": str(data_dir)}
        self.port = free_port()
        rule = ImageMap().lookup(container["image"])
        assert rule is not None
        argv = build_argv(rule, container["command"], container["args"], {"pod_ip": "127.0.0.1"})
        self.argv = [*map_config_paths(argv, rule, mounts), "--port", str(self.port)]
        self.proc = subprocess.Popen(
            self.argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=mounts[container["workingDir"]],  # as the node agent maps workingDir
        )
        self.srv = srv
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.05)
        raise TimeoutError("redis-server did not listen")

    def cli(self, *args: str, user: str = "mcp", password: str = PASSWORD) -> str:
        env = {**os.environ, "REDISCLI_AUTH": password}
        out = subprocess.run(
            ["redis-cli", "--no-auth-warning", "-p", str(self.port), "--user", user, *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout + out.stderr

    def env(self) -> dict[str, str]:
        """What the kubelet gives the MCP container (secretKeyRef values resolved)."""
        return {
            "MCP_CACHE_HOST": "127.0.0.1",
            "MCP_CACHE_PORT": str(self.port),
            "MCP_CACHE_USERNAME": cache.USERNAME,
            "MCP_CACHE_PASSWORD": PASSWORD,
        }

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[Redis]:
    r = Redis(tmp_path)
    yield r
    r.stop()


def test_password_is_never_on_the_command_line(redis: Redis) -> None:
    assert not any(PASSWORD in a for a in redis.argv)
    assert "--bind" in redis.argv and "--aclfile" in redis.argv
    assert redis.argv[1].endswith("config/redis.conf")


def test_tools_write_and_read_the_cache_with_the_injected_credentials(redis: Redis) -> None:
    async def scenario() -> tuple[Any, ...]:
        primary = Cache(None, redis.env())
        backup = Cache(None, redis.env())  # another pod, another tier: same cache
        one = await Counter(primary, "example-server:counter").increment()
        two = await Counter(backup, "example-server:counter").increment()
        first = await slow_square(primary, 12)
        second = await slow_square(backup, 12)
        return one, two, first, second

    one, two, first, second = asyncio.run(scenario())
    assert one == (1, "redis") and two == (2, "redis")
    assert first == {"value": 144, "cached": False, "backend": "redis"}
    assert second == {"value": 144, "cached": True, "backend": "redis"}


def test_default_user_wrong_password_and_dangerous_commands_are_refused(redis: Redis) -> None:
    assert "PONG" in redis.cli("PING")
    assert "WRONGPASS" in redis.cli("PING", user="default", password="")
    assert "WRONGPASS" in redis.cli("PING", password="wrong")
    assert "PONG" in redis.cli("PING", user="monitor", password=MONITOR)
    assert "NOPERM" in redis.cli("GET", "k", user="monitor", password=MONITOR)
    for command in (
        ["FLUSHALL"],
        ["CONFIG", "GET", "maxmemory"],
        ["KEYS", "*"],
        ["SHUTDOWN"],
        ["ACL", "LIST"],
        ["INFO"],
    ):
        assert "NOPERM" in redis.cli(*command), command

    async def wrong() -> tuple[Any, str]:
        return await Cache(None, {**redis.env(), "MCP_CACHE_PASSWORD": "wrong"}).run(
            lambda r: r.ping()
        )

    assert asyncio.run(wrong())[1].startswith("memory (redis error")


def test_maxmemory_is_honoured_by_eviction(tmp_path: Path) -> None:
    r = Redis(tmp_path, max_memory="2Mi", policy="allkeys-lru")
    try:
        value = "x" * 1024
        for start in range(0, 8000, 500):  # ~8 MiB written into a 2 MiB cache
            pairs = [a for i in range(start, start + 500) for a in (f"k{i}", value)]
            assert "OK" in r.cli("MSET", *pairs)
        info = dict(
            line.split(":", 1)
            for line in r.cli("INFO", "memory", user="monitor", password=MONITOR).splitlines()
            if ":" in line
        )
        stats = dict(
            line.split(":", 1)
            for line in r.cli("INFO", "stats", user="monitor", password=MONITOR).splitlines()
            if ":" in line
        )
        assert int(info["maxmemory"]) == 2 * 1024**2
        assert info["maxmemory_policy"].strip() == "allkeys-lru"
        assert int(stats["evicted_keys"]) > 0
        assert int(info["used_memory"]) <= 2 * 1024**2 * 1.1
        dbsize = int(r.cli("DBSIZE").strip())
        assert 0 < dbsize < 8000
        assert r.proc.poll() is None  # never died
        print(json.dumps({"evicted": stats["evicted_keys"].strip(), "keys": dbsize}))
    finally:
        r.stop()


def test_noeviction_refuses_writes_at_the_limit(tmp_path: Path) -> None:
    r = Redis(tmp_path, max_memory="2Mi", policy="noeviction")
    try:
        value = "x" * 1024
        answers = []
        for start in range(0, 4000, 500):
            answers.append(
                r.cli("MSET", *[a for i in range(start, start + 500) for a in (f"k{i}", value)])
            )
        assert any("OOM" in a for a in answers)
        assert r.proc.poll() is None
    finally:
        r.stop()


def test_the_operator_user_rotates_the_mcp_password_live_without_a_refused_client(
    redis: Redis,
) -> None:
    """Add the new password, move a client, remove the old one: each step an idempotent
    ACL SETUSER by the operator's user; Redis's ACL log shows only the deliberate refusal."""
    new = "new-" + base64.urlsafe_b64encode(os.urandom(24)).decode().rstrip("=")
    old_hash, new_hash = cache.password_hash(PASSWORD), cache.password_hash(new)

    async def scenario() -> None:
        async with Connection("127.0.0.1", redis.port, "mcp-operator", OPERATOR) as op:
            assert await op.passwords("mcp") == {old_hash}
            both = frozenset({old_hash, new_hash})
            assert await op.converge("mcp", both) == both
            assert await op.converge("mcp", both) == both  # idempotent
            async with Connection("127.0.0.1", redis.port, "mcp", PASSWORD) as held:
                async with Connection("127.0.0.1", redis.port, "mcp", new) as moved:
                    assert await moved.command("SET", "k", "v") == "OK"
                assert await op.converge("mcp", frozenset({new_hash})) == {new_hash}
                # a connection that logged in with the old password is not dropped
                assert await held.command("GET", "k") == b"v"
            with pytest.raises(RedisError, match="WRONGPASS"):
                async with Connection("127.0.0.1", redis.port, "mcp", PASSWORD):
                    pass
            # never converges to no password at all
            assert await op.converge("mcp", frozenset()) == {new_hash}

    asyncio.run(scenario())
    assert "PONG" in redis.cli("PING", password=new)
    # the operator's user changes passwords but touches no key and no config
    for command in (["GET", "k"], ["CONFIG", "GET", "maxmemory"], ["FLUSHALL"], ["ACL", "LIST"]):
        assert "NOPERM" in redis.cli(*command, user="mcp-operator", password=OPERATOR), command
    log = redis.cli("ACL", "LOG", user="mcp-operator", password=OPERATOR)
    assert log.count("\nauth\n") == 1, log  # the deliberate old-password login only
