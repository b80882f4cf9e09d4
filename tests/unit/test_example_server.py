"""The example MCP server: options, tools (in process), the token fault knob, no Host allowlist."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest

import mcp_example_server as ex


def _opts(**env: str) -> ex.Options:
    return ex.parse_options([], env)


def test_options_from_env_and_argv() -> None:
    opts = _opts(POD_IP="127.1.0.5", PORT="9000", MCP_PATH="/x", EXAMPLE_REQUIRE_TOKEN="t")
    assert (opts.host, opts.port, opts.path, opts.require_token) == ("127.1.0.5", 9000, "/x", "t")
    assert not opts.stateless and opts.cache_url is None
    assert _opts().host == "0.0.0.0"
    argv = ex.parse_options(["--host", "127.0.0.1", "--stateless"], {"POD_IP": "127.1.0.5"})
    assert argv.host == "127.0.0.1" and argv.stateless


def test_redact_url_drops_credentials() -> None:
    assert ex.redact_url("redis://user:secret@127.1.0.9:6379/0") == "redis://127.1.0.9:6379/0"


async def test_tools_in_process() -> None:
    from mcp import Client

    async with Client(ex.build_server(_opts())) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        assert names == {
            "echo",
            "add",
            "counter",
            "slow_square",
            "read_file",
            "write_home",
            "kube_get",
        }
        assert (await client.call_tool("add", {"a": 2, "b": 40})).structured_content == {
            "result": 42
        }
        first = await client.call_tool("counter", {})
        second = await client.call_tool("counter", {})
        texts = [r.content[0].text for r in (first, second)]  # type: ignore[union-attr]
        assert texts == ["counter=1 backend=memory", "counter=2 backend=memory"]
        square = await client.call_tool("slow_square", {"n": 7})
        assert json.loads(square.content[0].text) == {  # type: ignore[union-attr]
            "value": 49,
            "cached": False,
            "backend": "memory",
        }


def test_service_host_reads_the_node_agents_hosts_file(tmp_path: Any) -> None:
    hosts = tmp_path / "hosts.json"
    hosts.write_text(json.dumps({"w-cache.tools.svc": "10.96.0.7"}))
    env = {"NODEAGENT_HOSTS": str(hosts)}
    assert ex.service_host("w-cache.tools.svc", env) == "10.96.0.7"
    assert ex.service_host("other.tools.svc", env) == "other.tools.svc"
    assert ex.service_host("w-cache.tools.svc", {}) == "w-cache.tools.svc"


async def test_counter_falls_back_to_memory_when_redis_is_down() -> None:
    counter = ex.Counter(ex.Cache("redis://127.0.0.1:1/0", {}), "k")
    value, backend = await counter.increment()
    assert value == 1 and backend.startswith("memory (redis error")


async def _asgi(app: Any, headers: dict[str, str], path: str = "/mcp") -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.1.0.5:8080") as client:
        return await client.post(
            path, headers=headers, json={"jsonrpc": "2.0", "id": 1, "method": "ping"}
        )


@pytest.mark.parametrize("auth", [None, "Bearer wrong", "Basic x"])
async def test_token_knob_rejects_missing_or_wrong_bearer(auth: str | None) -> None:
    async def never(scope: Any, receive: Any, send: Any) -> None:
        raise AssertionError("the app must not be reached")

    app = ex.RequireToken(never, "s3cret", "/mcp")
    resp = await _asgi(app, {"Authorization": auth} if auth else {})
    assert resp.status_code == 401 and resp.headers["www-authenticate"].startswith("Bearer")


async def test_token_knob_passes_right_token_and_other_paths() -> None:
    reached: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    guarded = ex.RequireToken(app, "s3cret", "/mcp")
    assert (await _asgi(guarded, {"Authorization": "Bearer s3cret"})).status_code == 204
    assert (await _asgi(guarded, {}, path="/healthz")).status_code == 204
    assert reached == ["/mcp", "/healthz"]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_process_on_loopback_accepts_foreign_host_header_and_guards_token() -> None:
    """Bound to 127.0.0.1 the SDK would enable its Host allowlist (421): ours must not."""
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {"EXAMPLE_REQUIRE_TOKEN": "s3cret", "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "mcp_example_server", "--host", "127.0.0.1"]
    proc = subprocess.Popen([*argv, "--port", str(port)], env=env, stderr=subprocess.PIPE)
    init = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "initialize",
        "params": {
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": {"name": "t", "version": "1"},
        },
    }
    headers = {"Host": "10.1.2.3:8080", "Accept": "application/json, text/event-stream"}
    try:
        deadline = time.monotonic() + 60  # slow imports on a loaded 2-core machine
        while True:
            try:
                resp = httpx.post(f"http://127.0.0.1:{port}/mcp", json=init, headers=headers)
                break
            except httpx.ConnectError:
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert resp.status_code == 401
        authed = httpx.post(
            f"http://127.0.0.1:{port}/mcp",
            json=init,
            headers={**headers, "Authorization": "Bearer s3cret"},
        )
        assert authed.status_code == 200
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert b"s3cret" not in stderr  # the token is never logged


def test_pod_paths_map_through_node_agent_mounts(tmp_path: Path) -> None:
    from mcp_example_server import podfs

    env = {
        "NODEAGENT_MOUNTS": json.dumps(
            {"/etc/cfg": str(tmp_path / "cfg"), "/home/mcp": str(tmp_path / "home")}
        ),
        "HOME": "/home/mcp",
    }
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "app.toml").write_text("greeting = 'hi'\n")
    assert podfs.host_path("/etc/cfg/app.toml", env).read_text() == "greeting = 'hi'\n"
    assert podfs.host_path("/etc/cfgx", env) == Path("/etc/cfgx")  # not under the mount
    assert podfs.write_home("note.txt", "x", env) == "/home/mcp/note.txt"
    assert (tmp_path / "home" / "note.txt").read_text() == "x"
    with pytest.raises(ValueError):
        podfs.write_home("../escape", "x", env)


async def test_seal_and_unseal_tools_with_a_mounted_keyring(tmp_path: Path) -> None:
    """spec.dataEncryption in the example server: the keyring under a node-agent mount."""
    import base64 as b64

    from mcp import Client

    from mcp_operator.auth import datakeys
    from mcp_operator.keys import datastore
    from tests.unit.test_datakeys import ring_file

    key = datastore.generate()
    (tmp_path / "keys").mkdir()
    ring_file(tmp_path / "keys" / "keyring.json", [key], key.kid)
    mounts = json.dumps({datakeys.MOUNT_DIR: str(tmp_path / "keys")})
    opts = _opts(MCP_DATA_KEYS_PATH=f"{datakeys.MOUNT_DIR}/keyring.json", NODEAGENT_MOUNTS=mounts)
    async with Client(ex.build_server(opts)) as client:
        sealed = (await client.call_tool("seal", {"text": "hi", "context": "n1"})).content[0].text  # type: ignore[union-attr]
        assert datakeys.split(b64.urlsafe_b64decode(sealed))[0] == key.kid
        opened = await client.call_tool("unseal", {"sealed": sealed, "context": "n1"})
        assert opened.content[0].text == "hi"  # type: ignore[union-attr]
        refused = await client.call_tool("unseal", {"sealed": sealed, "context": "n2"})
        assert refused.is_error and "refused" in refused.content[0].text  # type: ignore[union-attr]


def test_missing_keyring_is_a_startup_error(tmp_path: Path) -> None:
    from mcp_operator.auth import datakeys

    opts = _opts(MCP_DATA_KEYS_PATH=str(tmp_path / "absent.json"))
    with pytest.raises(datakeys.MissingKeyMaterial):
        ex.build_server(opts)
