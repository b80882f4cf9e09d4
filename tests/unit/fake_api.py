"""A scripted API server on loopback (aiohttp's test server): the client's real HTTP stack
runs, only the answers are canned."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from mcp_operator.kube.auth import Credentials


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str = ""
    user_agent: str = ""


Handler = Callable[[Seen], tuple[int, bytes]]


@asynccontextmanager
async def fake_api(handler: Handler, seen: list[Seen]) -> AsyncIterator[Credentials]:
    """Serve ``handler`` (request → status, body); yields credentials pointing at it."""

    async def any_request(request: web.Request) -> web.StreamResponse:
        await request.read()
        item = Seen(
            request.method,
            request.path,
            dict(request.query),
            request.headers.get("Authorization", ""),
            request.headers.get("User-Agent", ""),
        )
        seen.append(item)
        status, body = handler(item)
        return web.Response(status=status, body=body, content_type="application/json")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", any_request)
    server = TestServer(app)
    await server.start_server()
    try:
        yield Credentials(server=str(server.make_url("")).rstrip("/"))
    finally:
        await server.close()


def js(obj: Any) -> bytes:
    return json.dumps(obj).encode()
