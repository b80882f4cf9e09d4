"""The probe against REAL MCP SDK servers (subprocesses on free 127.0.0.1 ports).

* mcp 2.3 (this venv) serves both eras on one endpoint: the probe must pick modern.
* mcp 1.x (a separate cached venv, ~/.cache/mcp-operator/mcp1-venv, built with uv on first
  use) is legacy-only: the probe must fall back to initialize/ping and DELETE its session.
* Faults: 401 (bearer check in front of the SDK app), wrong Host (the SDK's own loopback
  allowlist answers 421), SIGSTOP (timeout within the budget), a dead port, a 500.
* The leak test probes a legacy stateful server 1800 times (one hour at a 2 s interval, run
  back to back) and checks the SDK session manager holds zero sessions; its twin removes
  the DELETE and watches sessions pile up until the SDK's session cap answers 503.

A second part drives the probe through scripted exchanges for wire cases no real SDK server
produces on demand (version mismatch, interleaved SSE, bad ids): a handler written as
``httpx.Request -> httpx.Response`` answers on a real local socket (parsed by h11), so the
probe's own HTTP/1.1 client reads every reply off the wire, chunked or not.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import h11
import httpx
import pytest

from mcp_operator.health import probe as probe_module
from mcp_operator.health.http1 import ProbeClient
from mcp_operator.health.probe import Outcome, ProbeResult, ProbeSettings, ProbeTarget, probe

# The async fixtures live in the session loop (asyncio_default_fixture_loop_scope); so do the tests.
pytestmark = pytest.mark.asyncio(loop_scope="session")

MCP1_VENV = Path.home() / ".cache" / "mcp-operator" / "mcp1-venv"
TOKEN = "s3cr3t-probe-token-abcdef"

SERVER_SCRIPT = """'''A real MCP SDK server for probe tests: mcp 1.x (FastMCP) or 2.x (MCPServer).

argv: port [--stateless] [--json] [--token T] [--fail500] [--max-sessions N]
      [--allowed-host H]   (replaces the SDK's loopback Host allowlist)
      [--tls CERT KEY]     (serves https)
GET /debug/sessions answers the session manager's count of live sessions.
'''

import argparse
import json

import uvicorn
from mcp.server.transport_security import TransportSecuritySettings

parser = argparse.ArgumentParser()
parser.add_argument("port", type=int)
parser.add_argument("--stateless", action="store_true")
parser.add_argument("--json", action="store_true")
parser.add_argument("--token")
parser.add_argument("--fail500", action="store_true")
parser.add_argument("--max-sessions", type=int, default=10_000)
parser.add_argument("--allowed-host", action="append")
parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
args = parser.parse_args()

security = None
if args.allowed_host:
    security = TransportSecuritySettings(
        enable_dns_rebinding_protection=True, allowed_hosts=args.allowed_host
    )

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # mcp 1.x: legacy only
    from mcp.server.fastmcp import FastMCP

    server = FastMCP(
        "probe-target",
        host="127.0.0.1",
        port=args.port,
        stateless_http=args.stateless,
        json_response=args.json,
        max_sessions=args.max_sessions,
        transport_security=security,
    )
    inner = server.streamable_http_app()
else:
    server = MCPServer("probe-target")
    inner = server.streamable_http_app(
        stateless_http=args.stateless,
        json_response=args.json,
        max_sessions=args.max_sessions,
        transport_security=security,
        host="127.0.0.1",
    )


@server.tool()
def echo(text: str) -> str:
    return text


async def respond(send, status, body):
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})


async def app(scope, receive, send):
    if scope["type"] == "http":
        if scope["path"] == "/debug/sessions":
            count = len(server.session_manager._server_instances)
            return await respond(send, 200, {"sessions": count})
        if args.fail500:
            return await respond(send, 500, {"error": "boom"})
        if args.token is not None:
            headers = dict(scope["headers"])
            if headers.get(b"authorization") != f"Bearer {args.token}".encode():
                return await respond(send, 401, {"error": "unauthorized"})
    await inner(scope, receive, send)


tls = {"ssl_certfile": args.tls[0], "ssl_keyfile": args.tls[1]} if args.tls else {}
uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", **tls)
"""


# --------------------------------------------------------------------------------------
# Real servers
# --------------------------------------------------------------------------------------


@dataclass
class Server:
    port: int
    proc: subprocess.Popen[bytes]
    log: Path
    scheme: str = "http"

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/mcp"

    def sessions(self) -> int:
        url = f"{self.scheme}://127.0.0.1:{self.port}/debug/sessions"
        response = httpx.get(url, timeout=5, verify=False)
        return int(response.json()["sessions"])


Spawn = Callable[..., Server]


@pytest.fixture(scope="session")
def mcp1_python() -> Path:
    """Python of a cached venv with mcp<2 (legacy-only SDK), built with uv on first use."""
    python = MCP1_VENV / "bin" / "python"
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('mcp'))"]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    uv = shutil.which("uv") or str(Path(sys.executable).parent / "uv")
    if not Path(uv).exists() and shutil.which("uv") is None:
        pytest.skip("uv is not available to build the mcp 1.x venv")
    subprocess.run([uv, "venv", str(MCP1_VENV)], check=True, capture_output=True)
    subprocess.run(
        [uv, "pip", "install", "--python", str(python), "mcp<2"], check=True, capture_output=True
    )
    return python


@pytest.fixture(scope="session")
def server_script(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("mcp-server") / "mcp_server.py"
    path.write_text(SERVER_SCRIPT)
    return path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def spawn(server_script: Path, tmp_path: Path) -> Iterator[Spawn]:
    started: list[Server] = []

    def start(*args: str, python: Path | str = sys.executable) -> Server:
        port = _free_port()
        log = tmp_path / f"server-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [str(python), str(server_script), str(port), *args], stdout=out, stderr=out
            )
        server = Server(port, proc, log, "https" if "--tls" in args else "http")
        started.append(server)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.sessions()
                return server
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"server did not start:\n{log.read_text()}") from None
                time.sleep(0.1)

    yield start
    for server in started:
        if server.proc.poll() is None:
            os.kill(server.proc.pid, signal.SIGCONT)
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture
async def client() -> Any:
    async with probe_module.client_for(None) as http:
        yield http


FAST = ProbeSettings(step_timeout_s=1.0, budget_s=1.5, cleanup_timeout_s=0.5)


@pytest.mark.parametrize(
    "mode", [[], ["--json"], ["--stateless"]], ids=["sse", "json", "stateless"]
)
async def test_mcp23_server_is_probed_in_the_modern_era(
    spawn: Spawn, client: ProbeClient, mode: list[str]
) -> None:
    server = spawn(*mode)
    results = [await probe(client, ProbeTarget(server.url)) for _ in range(20)]
    assert {(r.outcome, r.era) for r in results} == {(Outcome.HEALTHY, "modern")}, results[0]
    assert server.sessions() == 0  # the modern era has no sessions to leak


@pytest.mark.parametrize(
    "mode", [[], ["--json"], ["--stateless"]], ids=["sse", "json", "stateless"]
)
async def test_mcp1_server_is_probed_in_the_legacy_era(
    spawn: Spawn, client: ProbeClient, mcp1_python: Path, mode: list[str]
) -> None:
    server = spawn(*mode, python=mcp1_python)
    result = await probe(client, ProbeTarget(server.url))
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "legacy"), result
    assert server.sessions() == 0


async def test_mcp23_server_also_serves_the_legacy_handshake(
    spawn: Spawn, client: ProbeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The legacy path (with its DELETE) against a 2.3 stateful server, skipping discover."""

    async def legacy_only(self: probe_module._Exchange) -> tuple[str, str]:
        return await self._legacy()

    monkeypatch.setattr(probe_module._Exchange, "run", legacy_only)
    server = spawn()
    results = [await probe(client, ProbeTarget(server.url)) for _ in range(20)]
    assert {(r.outcome, r.era) for r in results} == {(Outcome.HEALTHY, "legacy")}, results[0]
    assert server.sessions() == 0


async def test_real_server_with_no_common_version_is_unverified(
    spawn: Spawn, client: ProbeClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A probe that only spoke a future revision: the 2.3 server's -32022 names 2026-07-28."""
    monkeypatch.setattr(probe_module, "MODERN_VERSIONS", ("2099-01-01",))
    server = spawn()
    result = await probe(client, ProbeTarget(server.url))
    assert result.outcome is Outcome.UNVERIFIED, result
    assert "2026-07-28" in result.detail


@pytest.mark.parametrize("legacy", [False, True], ids=["mcp2.3", "mcp1"])
async def test_bearer_token(
    spawn: Spawn, client: ProbeClient, mcp1_python: Path, legacy: bool
) -> None:
    server = spawn("--token", TOKEN, python=mcp1_python if legacy else sys.executable)
    missing = await probe(client, ProbeTarget(server.url))
    wrong = await probe(client, ProbeTarget(server.url, bearer_token=TOKEN[::-1]))
    right = await probe(client, ProbeTarget(server.url, bearer_token=TOKEN))
    # 401 with a challenge: the process is up, MCP health just cannot be verified.
    assert missing.outcome is Outcome.UNVERIFIED and "401" in missing.detail, missing
    assert wrong.outcome is Outcome.UNVERIFIED
    assert right.outcome is Outcome.HEALTHY, right
    for result in (missing, wrong, right):
        assert TOKEN not in result.detail and TOKEN[::-1] not in result.detail
        assert TOKEN not in repr(result)
    assert TOKEN not in repr(ProbeTarget(server.url, bearer_token=TOKEN))


@pytest.mark.parametrize("legacy", [False, True], ids=["mcp2.3", "mcp1"])
async def test_wrong_host_is_unverified(
    spawn: Spawn, client: ProbeClient, mcp1_python: Path, legacy: bool
) -> None:
    """The SDK's loopback default allowlist answers 421 for any other Host."""
    server = spawn(python=mcp1_python if legacy else sys.executable)
    wrong = await probe(client, ProbeTarget(server.url, host_header="mcp.example.com"))
    assert wrong.outcome is Outcome.UNVERIFIED and "421" in wrong.detail, wrong
    allowed = await probe(client, ProbeTarget(server.url, host_header=f"localhost:{server.port}"))
    assert allowed.outcome is Outcome.HEALTHY, allowed
    assert server.sessions() == 0


async def test_host_override_reaches_a_configured_allowlist(
    spawn: Spawn, client: ProbeClient
) -> None:
    server = spawn("--allowed-host", "mcp.example.com")
    assert (await probe(client, ProbeTarget(server.url))).outcome is Outcome.UNVERIFIED
    target = ProbeTarget(server.url, host_header="mcp.example.com")
    assert (await probe(client, target)).outcome is Outcome.HEALTHY


@pytest.mark.parametrize("legacy", [False, True], ids=["mcp2.3", "mcp1"])
async def test_stopped_server_times_out_within_budget(
    spawn: Spawn, client: ProbeClient, mcp1_python: Path, legacy: bool
) -> None:
    server = spawn(python=mcp1_python if legacy else sys.executable)
    assert (await probe(client, ProbeTarget(server.url), FAST)).outcome is Outcome.HEALTHY
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        result = await probe(client, ProbeTarget(server.url), FAST)
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    assert result.outcome is Outcome.UNHEALTHY and "timeout" in result.detail, result
    assert result.duration_s <= FAST.budget_s + FAST.cleanup_timeout_s + 0.25


async def test_dead_port_is_unhealthy_and_refused(client: ProbeClient) -> None:
    result = await probe(client, ProbeTarget(f"http://127.0.0.1:{_free_port()}/mcp"), FAST)
    assert result.outcome is Outcome.UNHEALTHY and result.refused, result
    assert "ConnectionRefusedError" in result.detail, result  # decisive evidence for the gate
    assert result.duration_s < 1.0


async def test_probes_reuse_a_connection_for_seconds_not_longer(spawn: Spawn) -> None:
    """Every 2 s for 30 s on one connection; then a fresh one, so a pod that stops accepting
    new connections is seen within one connection age. (A legacy probe's SSE replies end
    the connection they came on: the probe stops reading at its reply.)"""
    server = spawn()
    now = [0.0]
    async with ProbeClient(clock=lambda: now[0]) as http:
        assert http.max_age_s == 30.0
        for _ in range(15):
            assert (await probe(http, ProbeTarget(server.url))).outcome is Outcome.HEALTHY
            now[0] += 2.0
        assert http.opened == 1
        assert (await probe(http, ProbeTarget(server.url))).outcome is Outcome.HEALTHY
        assert http.opened == 2


async def test_a_killed_server_is_refused_even_after_a_kept_alive_probe(
    spawn: Spawn, client: ProbeClient
) -> None:
    """The one decisive evidence (a refused connect) is not hidden by the pool."""
    server = spawn()
    assert (await probe(client, ProbeTarget(server.url), FAST)).outcome is Outcome.HEALTHY
    server.proc.kill()
    server.proc.wait()
    result = await probe(client, ProbeTarget(server.url), FAST)
    assert result.outcome is Outcome.UNHEALTHY and result.refused, result


async def test_server_error_is_unhealthy(spawn: Spawn, client: ProbeClient) -> None:
    server = spawn("--fail500")
    result = await probe(client, ProbeTarget(server.url))
    assert result.outcome is Outcome.UNHEALTHY and "HTTP 500" in result.detail, result


PROBES_PER_HOUR = 1800  # one probe every 2 s


@pytest.mark.slow
async def test_legacy_probes_leak_no_sessions(
    spawn: Spawn, client: ProbeClient, mcp1_python: Path
) -> None:
    """An hour of probes against a stateful legacy server capped at 100 sessions."""
    server = spawn("--max-sessions", "100", python=mcp1_python)
    outcomes: dict[tuple[Outcome, str | None], int] = {}
    for _ in range(PROBES_PER_HOUR):
        result = await probe(client, ProbeTarget(server.url))
        key = (result.outcome, result.era)
        outcomes[key] = outcomes.get(key, 0) + 1
    assert outcomes == {(Outcome.HEALTHY, "legacy"): PROBES_PER_HOUR}
    assert server.sessions() == 0


async def test_without_delete_sessions_accumulate_until_the_cap(
    spawn: Spawn, client: ProbeClient, mcp1_python: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The leak test's counterfactual: the same probe minus its DELETE exhausts the server."""

    async def no_delete(self: object, session_id: str) -> None:
        return None

    monkeypatch.setattr(probe_module._Exchange, "_delete", no_delete)
    server = spawn("--max-sessions", "100", python=mcp1_python)
    results = [await probe(client, ProbeTarget(server.url)) for _ in range(101)]
    assert all(r.outcome is Outcome.HEALTHY for r in results[:100])
    assert server.sessions() == 100
    assert results[100].outcome is Outcome.UNHEALTHY and "503" in results[100].detail


# --------------------------------------------------------------------------------------
# Scripted exchanges
# --------------------------------------------------------------------------------------

Handler = Callable[[httpx.Request], httpx.Response | None]
"""A scripted server: ``None`` closes the connection without a reply."""


def _rpc(request: httpx.Request) -> dict[str, Any]:
    return dict(json.loads(request.content)) if request.content else {}


def _legacy_handler(log: list[str], ping_result: object = None) -> Handler:
    """A scripted legacy server; records what it saw."""

    def handle(request: httpx.Request) -> httpx.Response:
        if request.method == "DELETE":
            log.append(f"DELETE {request.headers.get('mcp-session-id')}")
            return httpx.Response(200)
        body = _rpc(request)
        log.append(str(body.get("method")))
        if body.get("method") == "initialize":
            result = {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {}}
            return httpx.Response(
                200,
                json={"jsonrpc": "2.0", "id": body["id"], "result": result},
                headers={"mcp-session-id": "sess-1"},
            )
        if body.get("method") == "notifications/initialized":
            return httpx.Response(202)
        if body.get("method") == "ping":
            pong = {} if ping_result is None else ping_result
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": pong})
        return httpx.Response(400, json={"jsonrpc": "2.0", "id": None, "error": {"code": -32600}})

    return handle


async def _answer(
    handler: Handler, chunk: int, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Serve one connection: each request through ``handler``; replies chunked in pieces of
    ``chunk`` bytes when ``chunk`` > 0, else with a Content-Length."""
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await reader.read(65536)
                conn.receive_data(data)
                if not data:
                    return
                continue
            if not isinstance(event, h11.Request):
                return
            body = b""
            while not isinstance(part := conn.next_event(), h11.EndOfMessage):
                if part is h11.NEED_DATA:
                    conn.receive_data(await reader.read(65536))
                elif isinstance(part, h11.Data):
                    body += part.data
            headers = [(k.decode(), v.decode()) for k, v in event.headers]
            host = dict(headers).get("host", "pod")
            request = httpx.Request(
                event.method.decode(),
                f"http://{host}{event.target.decode()}",
                headers=headers,
                content=body,
            )
            reply = handler(request)
            if reply is None:  # the server's idle timer fired as the request arrived
                return
            out = [(k, v) for k, v in reply.headers.items() if k.lower() != "content-length"]
            content = reply.content
            if chunk:
                out.append(("transfer-encoding", "chunked"))
            else:
                out.append(("content-length", str(len(content))))
            writer.write(conn.send(h11.Response(status_code=reply.status_code, headers=out)))
            size = chunk or max(1, len(content))
            pieces = [content[i : i + size] for i in range(0, len(content), size)]
            for piece in pieces:
                writer.write(conn.send(h11.Data(data=piece)))
            writer.write(conn.send(h11.EndOfMessage()))
            await writer.drain()
            conn.start_next_cycle()
    except (h11.ProtocolError, ConnectionError):
        return
    finally:
        writer.close()


async def _scripted(
    handler: Handler, target: ProbeTarget | None = None, chunk: int = 0
) -> ProbeResult:
    """Probe ``target`` (its host stands for the scripted server's, which answers in its
    place on 127.0.0.1) through the probe's real client."""
    async with probe_module.client_for(None) as http:
        [result] = await _scripted_rounds(http, handler, 1, target, chunk)
        return result


async def _scripted_rounds(
    http: ProbeClient,
    handler: Handler,
    rounds: int,
    target: ProbeTarget | None = None,
    chunk: int = 0,
) -> list[ProbeResult]:
    target = target or ProbeTarget("http://pod:8080/mcp")
    server = await asyncio.start_server(lambda r, w: _answer(handler, chunk, r, w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    url = re.sub(r"^(\w+://(?:[^/@]*@)?)[^/:@]+(:\d+)?", rf"\g<1>127.0.0.1:{port}", target.url)
    try:
        return [await probe(http, replace(target, url=url), FAST) for _ in range(rounds)]
    finally:
        server.close()


def _discover_ok(request: httpx.Request) -> httpx.Response:
    result = {"supportedVersions": ["2026-07-28"], "capabilities": {}}
    return httpx.Response(200, json={"jsonrpc": "2.0", "id": _rpc(request)["id"], "result": result})


async def test_a_kept_alive_connection_closed_by_the_server_is_not_the_pods_fault() -> None:
    """A server may close an idle connection just as the next probe's request arrives (its
    keep-alive timer): the probe sends it again on a fresh connection, once."""
    seen: list[int] = []

    def handle(request: httpx.Request) -> httpx.Response | None:
        seen.append(len(seen))
        return None if len(seen) == 2 else _discover_ok(request)

    async with probe_module.client_for(None) as http:
        results = await _scripted_rounds(http, handle, 2)
        assert [r.outcome for r in results] == [Outcome.HEALTHY] * 2, results
        assert (len(seen), http.opened) == (3, 2)


async def test_a_fresh_connection_closed_without_a_reply_is_unhealthy() -> None:
    result = await _scripted(lambda request: None)
    assert result.outcome is Outcome.UNHEALTHY and "without a reply" in result.detail, result


def _unsupported(request: httpx.Request, supported: list[str]) -> httpx.Response:
    error = {
        "code": -32022,
        "message": "Unsupported protocol version",
        "data": {"supported": supported, "requested": "2026-07-28"},
    }
    return httpx.Response(400, json={"jsonrpc": "2.0", "id": _rpc(request)["id"], "error": error})


async def test_modern_request_format() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = _rpc(request)
        result = {"supportedVersions": ["2026-07-28"], "capabilities": {}}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    result = await _scripted(handle, ProbeTarget("http://pod/mcp", "svc.ns:80", TOKEN))
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "modern"), result
    [request] = seen
    assert request.method == "POST"
    assert request.headers["mcp-protocol-version"] == "2026-07-28"
    assert request.headers["mcp-method"] == "server/discover"
    assert request.headers["accept"] == "application/json, text/event-stream"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == "svc.ns:80"
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    meta = _rpc(request)["params"]["_meta"]
    assert meta["io.modelcontextprotocol/protocolVersion"] == "2026-07-28"
    assert meta["io.modelcontextprotocol/clientCapabilities"] == {}
    assert "name" in meta["io.modelcontextprotocol/clientInfo"]


async def test_no_common_version_is_unverified() -> None:
    result = await _scripted(lambda r: _unsupported(r, ["2099-01-01"]))
    assert result.outcome is Outcome.UNVERIFIED and "no common protocol version" in result.detail


async def test_jsonrpc_error_to_discover_falls_back_to_initialize() -> None:
    """A 200 carrying a JSON-RPC error (e.g. -32601 from a server that predates
    server/discover): the SDK falls back to initialize, so does the probe."""
    log: list[str] = []
    legacy = _legacy_handler(log)

    def handle(request: httpx.Request) -> httpx.Response:
        body = _rpc(request)
        if body.get("method") == "server/discover":
            error = {"code": -32601, "message": "Method not found"}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "error": error})
        return legacy(request)

    result = await _scripted(handle)
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "legacy"), result


async def test_custom_headers_are_sent_and_stay_out_of_repr() -> None:
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        body = _rpc(request)
        result = {"supportedVersions": ["2026-07-28"], "capabilities": {}}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})

    target = ProbeTarget("http://pod/mcp", headers={"X-Tenant": "blue", "X-Api-Key": TOKEN})
    assert (await _scripted(handle, target)).outcome is Outcome.HEALTHY
    assert seen[0].headers["x-tenant"] == "blue" and seen[0].headers["x-api-key"] == TOKEN
    assert TOKEN not in repr(target)


async def test_user_headers_cannot_break_the_requests_framing() -> None:
    """User headers are merged by name (the probe's own win), framing headers are the
    client's alone, and the path is percent-encoded: the server reads one well-formed
    request (h11 refuses duplicate Content-Length values and raw spaces in a target)."""
    seen: list[httpx.Request] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return _discover_ok(request)

    headers = {"content-length": "999", "Transfer-Encoding": "chunked", "accept": "text/plain"}
    target = ProbeTarget("http://pod:8080/mcp v2/x?q=a b", headers=headers)
    assert (await _scripted(handle, target)).outcome is Outcome.HEALTHY
    [request] = seen
    assert request.headers.get_list("content-length") == [str(len(request.content))]
    assert "transfer-encoding" not in request.headers
    assert request.headers.get_list("accept") == ["application/json, text/event-stream"]
    assert request.url.raw_path == b"/mcp%20v2/x?q=a%20b"


async def test_the_cached_request_head_keeps_no_token_or_session_id() -> None:
    """Heads are cached per pod; a rotated token or a new session id is sent as it is and
    never becomes a cache entry of its own (nor stays in memory after it changed)."""
    from mcp_operator.health.http1 import _build, _head

    _head.cache_clear()
    for token in ("one", "two", "three"):
        headers = {"Authorization": f"Bearer {token}", "Mcp-Session-Id": f"s-{token}"}
        request = _build("POST", "http://pod:8080/mcp", headers, b"{}", None)
        assert f"Bearer {token}".encode() in request.head
        assert f"Mcp-Session-Id: s-{token}".encode() in request.head
        assert request.head.endswith(b"\r\n\r\n") and request.head.count(b"\r\n\r\n") == 1
    info = _head.cache_info()
    assert (info.currsize, info.hits) == (1, 2)


async def test_handshake_only_supported_list_falls_back_to_legacy() -> None:
    log: list[str] = []
    legacy = _legacy_handler(log)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("mcp-method") == "server/discover":
            return _unsupported(request, ["2025-06-18"])
        return legacy(request)

    result = await _scripted(handle)
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "legacy"), result
    assert log == ["initialize", "notifications/initialized", "ping", "DELETE sess-1"]


async def test_discover_advertising_no_modern_version_falls_back_to_legacy() -> None:
    log: list[str] = []
    legacy = _legacy_handler(log)

    def handle(request: httpx.Request) -> httpx.Response:
        body = _rpc(request)
        if body.get("method") == "server/discover":
            result = {"supportedVersions": ["2025-06-18"]}
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": body["id"], "result": result})
        return legacy(request)

    assert (await _scripted(handle)).era == "legacy"


async def test_session_is_deleted_even_when_ping_fails() -> None:
    log: list[str] = []
    result = await _scripted(_legacy_handler(log, ping_result={"unexpected": True}))
    assert result.outcome is Outcome.UNHEALTHY and "ping" in result.detail
    assert log[-1] == "DELETE sess-1"


@pytest.mark.parametrize("chunk", [0, 1, 7], ids=["length", "chunked-1", "chunked-7"])
async def test_sse_reply_is_matched_by_id_past_notifications_and_comments(chunk: int) -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        body = _rpc(request)
        other = {"jsonrpc": "2.0", "id": 999, "result": {"supportedVersions": []}}
        note = {"jsonrpc": "2.0", "method": "notifications/message", "params": {}}
        mine = {"jsonrpc": "2.0", "id": body["id"], "result": {"supportedVersions": ["2026-07-28"]}}
        stream = (
            ": ping\r\n\r\n"
            f"event: message\r\ndata: {json.dumps(note)}\r\n\r\n"
            f"data: {json.dumps(other)}\n\n"
            f"event: message\ndata: {json.dumps(mine)}\n\n"
        )
        return httpx.Response(200, text=stream, headers={"content-type": "text/event-stream"})

    result = await _scripted(handle, chunk=chunk)
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "modern"), result


async def test_reply_with_another_id_is_unhealthy() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        result = {"supportedVersions": ["2026-07-28"]}
        return httpx.Response(200, json={"jsonrpc": "2.0", "id": 12345, "result": result})

    assert (await _scripted(handle)).outcome is Outcome.UNHEALTHY


async def test_secrets_never_reach_the_detail() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        echo = request.headers.get("authorization", "")
        error = {"code": -32020, "message": f"bad headers: {echo}"}
        return httpx.Response(
            400, json={"jsonrpc": "2.0", "id": _rpc(request)["id"], "error": error}
        )

    target = ProbeTarget("http://user:hunter2@pod/mcp", bearer_token=TOKEN)
    result = await _scripted(handle, target)
    assert result.outcome is Outcome.UNVERIFIED
    assert TOKEN not in result.detail and "hunter2" not in result.detail


@pytest.mark.parametrize(
    "target",
    [
        ProbeTarget("http://pod/mcp", bearer_token="tökén-ßecret"),
        ProbeTarget("http://pod/mcp", host_header="hôst"),
        ProbeTarget("::::"),
    ],
    ids=["non-ascii-token", "non-ascii-host", "bad-url"],
)
async def test_invalid_target_is_misconfigured_and_quiet(target: ProbeTarget) -> None:
    result = await _scripted(lambda r: httpx.Response(500), target)
    assert result.outcome is Outcome.MISCONFIGURED, result
    assert "ecret" not in result.detail


async def test_redirect_is_unverified_not_followed() -> None:
    seen: list[str] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(request.url.path)
        return httpx.Response(307, headers={"location": "http://elsewhere/mcp/"})

    result = await _scripted(handle)
    assert result.outcome is Outcome.UNVERIFIED and "'/mcp/'" in result.detail, result
    assert seen == ["/mcp"]


async def test_session_opened_by_a_refused_discover_is_deleted() -> None:
    log: list[str] = []
    legacy = _legacy_handler(log)

    def handle(request: httpx.Request) -> httpx.Response:
        if request.headers.get("mcp-method") == "server/discover":
            error = {"code": -32600, "message": "Bad Request: Missing session ID"}
            return httpx.Response(
                400,
                json={"jsonrpc": "2.0", "id": "server-error", "error": error},
                headers={"mcp-session-id": "stray"},
            )
        return legacy(request)

    result = await _scripted(handle)
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "legacy"), result
    assert log == [
        "DELETE stray",
        "initialize",
        "notifications/initialized",
        "ping",
        "DELETE sess-1",
    ]


# --------------------------------------------------------------------------------------
# https: real TLS (uvicorn) with a CA and certificates made here
# --------------------------------------------------------------------------------------

SERVICE_NAME = "weather.default.svc"


@dataclass(frozen=True)
class Pki:
    ca_pem: str
    other_ca_pem: str
    cert: Path
    key: Path
    wrong_name_cert: Path


def _issue(tmp: Path, stem: str, name: str, ca_key: Any, ca_name: Any) -> tuple[Path, Path]:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = tmp / f"{stem}.crt", tmp / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def _ca(common_name: str) -> tuple[Any, Any, str]:
    from datetime import UTC, datetime, timedelta

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, name, cert.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    tmp = tmp_path_factory.mktemp("pki")
    ca_key, ca_name, ca_pem = _ca("mcp test CA")
    _, _, other_ca_pem = _ca("someone else's CA")
    cert, key = _issue(tmp, "server", SERVICE_NAME, ca_key, ca_name)
    wrong, _ = _issue(tmp, "wrong-name", "other.default.svc", ca_key, ca_name)
    return Pki(ca_pem, other_ca_pem, cert, key, wrong)


def _tls_target(server: Server) -> ProbeTarget:
    """As the operator builds it: the pod's IP in the URL, the Service's name as Host/SNI."""
    host = f"{SERVICE_NAME}:{server.port}"
    return ProbeTarget(server.url, host_header=host, sni_hostname=SERVICE_NAME)


def _tls_server(spawn: Spawn, cert: Path, key: Path) -> Server:
    return spawn("--tls", str(cert), str(key), "--allowed-host", f"{SERVICE_NAME}:*")


async def test_https_with_the_right_ca_is_healthy(spawn: Spawn, pki: Pki) -> None:
    server = _tls_server(spawn, pki.cert, pki.key)
    async with probe_module.client_for(pki.ca_pem) as http:
        result = await probe(http, _tls_target(server), FAST)
    assert (result.outcome, result.era) == (Outcome.HEALTHY, "modern"), result


async def test_https_without_a_ca_is_encrypted_but_not_verified(spawn: Spawn, pki: Pki) -> None:
    """No caSecretRef: like the kubelet's https probes, any certificate is accepted."""
    server = _tls_server(spawn, pki.wrong_name_cert, pki.key.with_name("wrong-name.key"))
    async with probe_module.client_for(None) as http:
        result = await probe(http, _tls_target(server), FAST)
    assert result.outcome is Outcome.HEALTHY, result


@pytest.mark.parametrize("fault", ["other-ca", "wrong-name"])
async def test_an_untrusted_certificate_keeps_the_pod_serving(
    spawn: Spawn, pki: Pki, fault: str
) -> None:
    """A certificate the probe cannot trust is the probe's configuration (or the
    certificate), not the pod's health: unverified (keeps serving, never fails over), with
    the reason in the detail."""
    if fault == "other-ca":
        server, ca = _tls_server(spawn, pki.cert, pki.key), pki.other_ca_pem
    else:
        key = pki.key.with_name("wrong-name.key")
        server, ca = _tls_server(spawn, pki.wrong_name_cert, key), pki.ca_pem
    async with probe_module.client_for(ca) as http:
        result = await probe(http, _tls_target(server), FAST)
    assert result.outcome is Outcome.UNVERIFIED, result
    assert result.detail.startswith("TLS certificate not trusted"), result.detail
    expected = "unable to get local issuer" if fault == "other-ca" else "Hostname mismatch"
    assert expected in result.detail, result.detail


async def _raw_server(replies: list[bytes | None]) -> tuple[asyncio.Server, int]:
    """Answers the n-th request on a connection with ``replies[n]`` (None: never answers)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for reply in replies:
            head = await reader.readuntil(b"\r\n\r\n")
            length = re.search(rb"(?i)content-length: *(\d+)", head)
            await reader.readexactly(int(length.group(1)) if length else 0)
            if reply is None:
                await asyncio.sleep(3600)
            writer.write(reply)
            await writer.drain()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


def _json_reply(body: bytes) -> bytes:
    head = f"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}"
    return head.encode() + b"\r\n\r\n" + body


async def test_a_kept_alive_connection_that_times_out_is_closed_not_leaked() -> None:
    """A pod that froze after a good probe: the timed-out connection must be closed (a
    frozen or deleted pod may never close it), not left open outside the pool."""
    ok = _json_reply(
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2026-07-28"]}}
        ).encode()
    )
    server, port = await _raw_server([ok, None])
    target = ProbeTarget(f"http://127.0.0.1:{port}/mcp")
    try:
        async with probe_module.client_for(None) as http:
            assert (await probe(http, target, FAST)).outcome is Outcome.HEALTHY
            [[conn]] = http.idle.values()
            result = await probe(http, target, FAST)
            assert result.outcome is Outcome.UNHEALTHY and "timeout" in result.detail, result
            assert conn.writer.is_closing() and not http.idle
    finally:
        server.close()


async def test_an_idle_connection_holding_unsolicited_bytes_is_not_reused() -> None:
    """A server may write a 408 before its idle close: those bytes are not the next
    probe's reply. The connection is dropped and the probe goes out on a fresh one."""
    ok = _json_reply(
        json.dumps(
            {"jsonrpc": "2.0", "id": 1, "result": {"supportedVersions": ["2026-07-28"]}}
        ).encode()
    )
    late = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\n\r\n"
    server, port = await _raw_server([ok + late, ok])
    target = ProbeTarget(f"http://127.0.0.1:{port}/mcp")
    try:
        async with probe_module.client_for(None) as http:
            assert (await probe(http, target, FAST)).outcome is Outcome.HEALTHY
            await asyncio.sleep(0.05)
            result = await probe(http, target, FAST)
            assert result.outcome is Outcome.HEALTHY, result
            assert http.opened == 2
    finally:
        server.close()


@pytest.mark.parametrize("size", [b"-5", b"0x10", b"ffffffffff"], ids=["negative", "0x", "huge"])
async def test_a_malformed_chunk_size_is_the_pods_fault_not_the_probes(size: bytes) -> None:
    reply = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ncontent-type: application/json"
    server, port = await _raw_server([reply + b"\r\n\r\n" + size + b"\r\n" + b"x" * 70000])
    try:
        async with probe_module.client_for(None) as http:
            result = await probe(http, ProbeTarget(f"http://127.0.0.1:{port}/mcp"), FAST)
        assert result.outcome is Outcome.UNHEALTHY, result
    finally:
        server.close()
