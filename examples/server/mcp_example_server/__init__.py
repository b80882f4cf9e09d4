"""Example MCP server: the workload of every e2e test and of the demo.

It is deliberately small but exercises what the operator cares about:

* both MCP eras on one streamable-HTTP endpoint (the ``mcp`` 2.x SDK routes by the
  ``MCP-Protocol-Version`` header), stateful by default, ``--stateless`` on request;
* a ``counter`` tool and a cached ``slow_square`` tool backed by Redis when the operator's
  cache contract (``MCP_CACHE_HOST``/``PORT``/``USERNAME``/``PASSWORD``, or
  ``MCP_CACHE_URL``) is set, so that the operator-provisioned cache can be checked end to
  end (and its absence is visible);
* real token verification when the operator's ``spec.auth`` is on (env ``MCP_AUTH_*``):
  :mod:`mcp_operator.auth.verify` against the mounted JWKS, 401 with ``WWW-Authenticate``
  and RFC 9728 protected-resource metadata otherwise;
* a fault knob, ``EXAMPLE_REQUIRE_TOKEN``, that makes MCP requests without the right
  bearer token answer 401: a *misconfigured* server, which health checks must tell apart
  from a *failed* one;
* ``seal`` and ``unseal`` tools when the operator's ``spec.dataEncryption`` is on (env
  ``MCP_DATA_KEYS_PATH``): :mod:`mcp_operator.auth.datakeys` with the mounted keyring; a
  missing or unusable keyring stops the server at startup (exit code 2);
* ``read_file``, ``write_home`` and ``kube_get`` tools: a mounted config file, a writable
  ``HOME`` and the pod's ServiceAccount token, as real servers use them;
* no DNS-rebinding Host allowlist: pods are reached by pod IP and Service names, and
  the SDK's allowlist (enabled automatically on loopback binds) would answer 421.

Run: ``python -m mcp_example_server [--host H] [--port P] [--path /mcp]
[--stateless]``. Logs go to stderr; tokens and cache credentials are never logged.
"""

from __future__ import annotations

import argparse
import contextlib
import hmac
import json
import logging
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from mcp_operator.auth import datakeys
from mcp_operator.auth.verify import InvalidToken, Verifier, VerifierConfig, bearer

log = logging.getLogger("example_server")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

COUNTER_KEY_DEFAULT = "example-server:counter"


@dataclass(frozen=True)
class Options:
    """Command-line and environment settings of one server process."""

    host: str
    port: int
    path: str
    stateless: bool
    name: str
    require_token: str | None
    cache_url: str | None
    counter_key: str
    request_state_keys: tuple[str, ...]
    verifier: VerifierConfig | None = None
    data_keys_path: str | None = None  # the mounted keyring (spec.dataEncryption)


def parse_options(argv: Sequence[str] | None, env: MutableMapping[str, str]) -> Options:
    """Merge argv over the environment; the env defaults are what the node agent sets."""
    parser = argparse.ArgumentParser(prog="python -m mcp_example_server")
    parser.add_argument("--host", default=env.get("POD_IP") or env.get("HOST") or "0.0.0.0")
    parser.add_argument("--port", type=int, default=int(env.get("PORT", "8080")))
    parser.add_argument("--path", default=env.get("MCP_PATH", "/mcp"))
    parser.add_argument(
        "--stateless",
        action="store_true",
        default=env.get("MCP_STATELESS", "").lower() in ("1", "true", "yes"),
    )
    args = parser.parse_args(argv)
    keys = tuple(k for k in env.get("MCP_REQUEST_STATE_KEYS", "").split(",") if k)
    return Options(
        host=args.host,
        port=args.port,
        path=args.path,
        stateless=args.stateless,
        name=env.get("EXAMPLE_SERVER_NAME", "example-server"),
        require_token=env.get("EXAMPLE_REQUIRE_TOKEN") or None,
        cache_url=env.get("MCP_CACHE_URL") or None,
        counter_key=env.get("EXAMPLE_COUNTER_KEY", COUNTER_KEY_DEFAULT),
        request_state_keys=keys,
        verifier=VerifierConfig.from_env(env, resolve=lambda p: mounted_path(p, env)),
        data_keys_path=mounted_path(env[datakeys.ENV_PATH], env)
        if env.get(datakeys.ENV_PATH)
        else None,
    )


def mounted_path(path: str, env: MutableMapping[str, str]) -> str:
    """Where a container path really is. Under the dev node agent there is no mount
    namespace: it passes ``NODEAGENT_MOUNTS`` (``{mountPath: hostPath}``); elsewhere the
    path is used as is."""
    mounts: dict[str, str] = json.loads(env.get("NODEAGENT_MOUNTS") or "{}")
    best = max(
        (m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")),
        key=len,
        default=None,
    )
    return path if best is None else mounts[best] + path[len(best) :]


def redact_url(url: str) -> str:
    """Return ``scheme://host:port/db`` without userinfo, for logs."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def service_host(host: str, env: MutableMapping[str, str]) -> str:
    """A Service name as this pod can reach it. Under the dev node agent there is no cluster
    DNS: it writes the names its Service proxy answers for into the JSON file named by
    ``NODEAGENT_HOSTS`` (re-read on every connect: the Service may get its address later).
    Elsewhere the name is used as is."""
    path = env.get("NODEAGENT_HOSTS")
    if not path:
        return host
    try:
        hosts: dict[str, str] = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return host
    return hosts.get(host, host)


class Cache:
    """The operator's cache contract (``MCP_CACHE_HOST/PORT/USERNAME/PASSWORD``, or
    ``MCP_CACHE_URL``), with a process-memory fallback.

    Falling back on a Redis error keeps the tools answering, and the backend name they return
    makes the degradation visible to tests and humans alike. A failed client is dropped, so
    the next call reconnects (a recreated cache pod, a Service that got its address late).
    """

    def __init__(self, cache_url: str | None, env: MutableMapping[str, str]) -> None:
        self._url = cache_url
        self._env = env
        self._client: Any = None
        self.memory: dict[str, str] = {}

    @property
    def configured(self) -> bool:
        return bool(self._url or self._env.get("MCP_CACHE_HOST"))

    def _connect(self) -> Any:
        import redis.asyncio as aioredis

        env = self._env
        common: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 2}
        if env.get("MCP_CACHE_HOST"):
            return aioredis.Redis(
                host=service_host(env["MCP_CACHE_HOST"], env),
                port=int(env.get("MCP_CACHE_PORT") or 6379),
                username=env.get("MCP_CACHE_USERNAME") or None,
                password=env.get("MCP_CACHE_PASSWORD") or None,
                **common,
            )
        return aioredis.from_url(self._url or "", **common)

    async def run(self, op: Callable[[Any], Awaitable[Any]]) -> tuple[Any, str]:
        """``op(client)`` against Redis: ``(result, "redis")``, or ``(None, "memory (…)")``."""
        if not self.configured:
            return None, "memory"
        try:
            if self._client is None:
                self._client = self._connect()
            return await op(self._client), "redis"
        except Exception as exc:  # any client error means "cache unavailable"
            log.warning("redis call failed (%s); using memory", type(exc).__name__)
            client, self._client = self._client, None
            if client is not None:
                with contextlib.suppress(Exception):
                    await client.aclose()
            return None, f"memory (redis error: {type(exc).__name__})"


class Counter:
    """A counter in the cache when configured, otherwise in process memory."""

    def __init__(self, cache: Cache, key: str) -> None:
        self._cache = cache
        self._key = key
        self._memory = 0

    async def increment(self) -> tuple[int, str]:
        """Increment and return ``(value, backend)``."""
        value, backend = await self._cache.run(lambda r: r.incr(self._key))
        if backend == "redis":
            return int(value), backend
        self._memory += 1
        return self._memory, backend


SQUARE_DELAY_S = 0.2
SQUARE_TTL_S = 300


async def slow_square(cache: Cache, n: int) -> dict[str, Any]:
    """A deliberately slow computation, cached: the second call (on any pod of either tier)
    answers from the cache without the delay."""
    import asyncio

    key = f"example-server:square:{n}"
    hit, backend = await cache.run(lambda r: r.get(key))
    if hit is not None:
        return {"value": int(hit), "cached": True, "backend": backend}
    await asyncio.sleep(SQUARE_DELAY_S)
    value = n * n
    if backend == "redis":
        _, backend = await cache.run(lambda r: r.set(key, value, ex=SQUARE_TTL_S))
    return {"value": value, "cached": False, "backend": backend}


def build_server(opts: Options) -> Any:
    """Create the MCPServer with the example tools registered."""
    from mcp.server.mcpserver import MCPServer

    kwargs: dict[str, Any] = {}
    if opts.request_state_keys:
        from mcp.server.request_state import RequestStateSecurity

        kwargs["request_state_security"] = RequestStateSecurity(keys=list(opts.request_state_keys))
    server = MCPServer(opts.name, **kwargs)
    cache = Cache(opts.cache_url, os.environ)
    counter = Counter(cache, opts.counter_key)

    @server.tool(description="Return the given message unchanged.")
    def echo(message: str) -> str:
        return message

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> int:
        return a + b

    @server.tool(
        name="counter",
        description="Increment a shared counter; says whether Redis or memory was used.",
    )
    async def counter_tool() -> str:
        value, backend = await counter.increment()
        return f"counter={value} backend={backend}"

    @server.tool(
        name="slow_square",
        description="n*n after a 0.2 s delay, cached in Redis for 5 minutes (JSON: value, "
        "cached, backend).",
    )
    async def slow_square_tool(n: int) -> str:
        return json.dumps(await slow_square(cache, n))

    _add_pod_tools(server)
    if opts.data_keys_path:
        _add_sealing_tools(server, datakeys.DataKeys(opts.data_keys_path))
    _add_healthz(server)
    return server


SEAL_PURPOSE = "example-notes"


def _add_sealing_tools(server: Any, keys: datakeys.DataKeys) -> None:
    """``seal``/``unseal``: the data-encryption contract (docs/keys.md) in two tools. The
    envelope is returned base64url-encoded; ``context`` is the AAD (e.g. a record id)."""
    import base64

    from mcp.server.mcpserver.exceptions import ToolError

    def seal(text: str, context: str = "") -> str:
        blob = keys.encrypt(text.encode(), context.encode(), purpose=SEAL_PURPOSE)
        return base64.urlsafe_b64encode(blob).decode()

    def unseal(sealed: str, context: str = "") -> str:
        try:
            blob = base64.urlsafe_b64decode(sealed.encode())
            return keys.decrypt(blob, context.encode(), purpose=SEAL_PURPOSE).decode()
        except (ValueError, datakeys.DecryptError) as exc:
            raise ToolError(f"refused: {exc}") from None

    server.tool(description="Encrypt text with the active data key (AES-256-GCM envelope).")(seal)
    server.tool(description="Decrypt an envelope from seal, with any key still retained.")(unseal)


def _add_pod_tools(server: Any) -> None:
    """Tools that touch what a pod gives a server: mounted files, HOME, the API token."""
    from mcp_example_server import podfs

    def read_file(path: str) -> str:
        return podfs.host_path(path).read_text()

    def write_home(name: str, content: str) -> str:
        return podfs.write_home(name, content)

    async def kube_get(path: str) -> str:
        return await podfs.kube_get(path)

    server.tool(description="Read a text file, e.g. a config file mounted from a ConfigMap.")(
        read_file
    )
    server.tool(description="Write a file under $HOME (as npx/uvx caches do); returns its path.")(
        write_home
    )
    server.tool(description="GET a Kubernetes API path with the pod's ServiceAccount token.")(
        kube_get
    )


def _add_healthz(server: Any) -> None:
    """A plain GET endpoint for kubelet-style httpGet probes (which cannot speak MCP)."""
    from starlette.requests import Request
    from starlette.responses import PlainTextResponse

    async def healthz(_: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    server.custom_route("/healthz", methods=["GET"])(healthz)


class RequireToken:
    """ASGI middleware: MCP requests without ``Authorization: Bearer <token>`` get 401."""

    def __init__(self, app: ASGIApp, token: str, path: str) -> None:
        self._app = app
        self._expected = f"Bearer {token}".encode()
        self._path = path.rstrip("/")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._guards(scope["path"]) and not self._authorized(scope):
            await self._reject(send)
            return
        await self._app(scope, receive, send)

    def _guards(self, path: str) -> bool:
        return bool(path.rstrip("/") == self._path or path.startswith(self._path + "/"))

    def _authorized(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                return hmac.compare_digest(bytes(value), self._expected)
        return False

    @staticmethod
    async def _reject(send: Send) -> None:
        body = b'{"error":"invalid_token"}'
        headers = [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b'Bearer error="invalid_token"'),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})


class VerifyTokens:
    """ASGI middleware: MCP requests need a valid operator-issued token (else 401 with
    ``WWW-Authenticate: Bearer resource_metadata=…``); serves the RFC 9728 metadata."""

    def __init__(self, app: ASGIApp, verifier: Verifier, path: str) -> None:
        self._app = app
        self._verifier = verifier
        self._path = path.rstrip("/")
        audience = verifier.config.audience
        parts = urlsplit(audience)
        self._metadata_path = "/.well-known/oauth-protected-resource" + parts.path.rstrip("/")
        self._metadata_url = f"{parts.scheme}://{parts.netloc}{self._metadata_path}"
        self._metadata = json.dumps(
            {
                "resource": audience,
                "authorization_servers": [verifier.config.issuer],
                "bearer_methods_supported": ["header"],
            }
        ).encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == self._metadata_path:
            await _respond(send, 200, self._metadata, [])
            return
        if scope["type"] == "http" and _under(scope["path"], self._path):
            reason = self._refusal(scope)
            if reason is not None:
                challenge = (
                    f'Bearer error="invalid_token", resource_metadata="{self._metadata_url}"'
                )
                body = json.dumps({"error": "invalid_token", "error_description": reason})
                await _respond(
                    send, 401, body.encode(), [(b"www-authenticate", challenge.encode())]
                )
                return
        await self._app(scope, receive, send)

    def _refusal(self, scope: Scope) -> str | None:
        header = next((v for n, v in scope.get("headers", []) if n == b"authorization"), None)
        token = bearer(bytes(header).decode("latin-1") if header else None)
        if token is None:
            return "no bearer token"
        try:
            self._verifier.verify(token)
        except InvalidToken as exc:
            return str(exc)
        return None


def _under(path: str, prefix: str) -> bool:
    return path.rstrip("/") == prefix or path.startswith(prefix + "/")


async def _respond(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]]) -> None:
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def build_app(opts: Options) -> Any:
    """The ASGI app: SDK streamable HTTP, no Host allowlist, optional token guard."""
    from mcp.server.transport_security import TransportSecuritySettings

    app: Any = build_server(opts).streamable_http_app(
        streamable_http_path=opts.path,
        stateless_http=opts.stateless,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        host=opts.host,
    )
    if opts.require_token:
        app = RequireToken(app, opts.require_token, opts.path)
    if opts.verifier is not None:
        app = VerifyTokens(app, Verifier(opts.verifier), opts.path)
    return app


def _uvicorn_log_config() -> dict[str, Any]:
    """Uvicorn logs both error and access streams to stderr (its default puts access on stdout)."""
    handler = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr", "formatter": "f"}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"f": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
        "handlers": {"stderr": handler},
        "root": {"handlers": ["stderr"], "level": "INFO"},
        "loggers": {"uvicorn.access": {"level": "WARNING"}},
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m mcp_example_server``."""
    import uvicorn

    opts = parse_options(argv, os.environ)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    log.info(
        "serving %s on http://%s:%d%s stateless=%s token_required=%s jwt=%s cache=%s data_keys=%s",
        opts.name,
        opts.host,
        opts.port,
        opts.path,
        opts.stateless,
        bool(opts.require_token),
        opts.verifier is not None,
        redact_url(opts.cache_url) if opts.cache_url else "memory",
        opts.data_keys_path is not None,
    )
    try:
        app = build_app(opts)
    except datakeys.MissingKeyMaterial as exc:  # no fallback key: refuse to start
        log.error("cannot start: %s", exc)
        raise SystemExit(2) from None
    uvicorn.run(app, host=opts.host, port=opts.port, log_config=_uvicorn_log_config())


if __name__ == "__main__":  # pragma: no cover
    main()
