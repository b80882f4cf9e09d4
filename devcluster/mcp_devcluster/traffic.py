"""Client traffic through a Service: the measure of what the operator costs its users.

A ``ToolTraffic`` calls a tool every 50 ms (fixed rate: a hung server does not slow the
schedule down, its calls time out side by side) at the address the node agent's kube-proxy
stand-in wrote on the Service, and records every outcome. It is deliberately *not* the
operator's code: each call is one raw JSON-RPC ``tools/call`` POST at the session-less
2026-07-28 revision (what a 2.x SDK client sends after discovery), so one request is one
HTTP exchange and nothing is retried behind our back.

By default every call opens a new TCP connection, so each request is routed by the
Service's ready endpoints *of its moment* (the strictest measure: a pooled keep-alive
client keeps its backend, like conntrack, until that connection breaks).

Kinds of failure (what a user would see):

* ``refused`` -- the connection was refused or reset before any reply: no ready endpoint
  behind the Service, or a backend that is dead;
* ``timeout`` -- no reply within the timeout (a hung server, a backlog);
* ``error`` -- a reply that is not the tool's result (HTTP 4xx/5xx, a JSON-RPC error).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx

from mcp_devcluster.nodeagent.proxy import NO_ENDPOINT_LOG, PROXY_ANNOTATION, parse_proxy_address

PROTOCOL_VERSION = "2026-07-28"
KINDS = ("refused", "timeout", "error")


@dataclass(frozen=True)
class Outcome:
    """One call: when it started (monotonic), how long it took, and ``ok`` or a kind."""

    started: float
    took: float
    kind: str
    detail: str = ""


def service_address(service: dict[str, Any]) -> str | None:
    """``http://IP:PORT`` of the Service's first port, from the proxy annotation."""
    value = ((service.get("metadata") or {}).get("annotations") or {}).get(PROXY_ANNOTATION)
    addresses = parse_proxy_address(value or "")
    return f"http://{addresses[0][0]}:{addresses[0][1]}" if addresses else None


def no_endpoint_resets(agent_log: str, namespace: str, service: str) -> int:
    """How many connections the node agent's proxy reset for lack of a ready endpoint of
    ``namespace/service`` (the readiness gates' cost; a dying backend is not counted)."""
    needle = NO_ENDPOINT_LOG.format(key=f"{namespace}/{service}")
    return agent_log.count(needle)


def classify(exc: BaseException) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return "timeout"
    if isinstance(exc, httpx.ConnectError | httpx.ReadError | httpx.WriteError):
        return "refused"
    if isinstance(exc, httpx.RemoteProtocolError):  # closed before a response
        return "refused"
    return "error"


def tool_call_body(request_id: int, a: int, b: int) -> dict[str, Any]:
    meta = {
        "io.modelcontextprotocol/protocolVersion": PROTOCOL_VERSION,
        "io.modelcontextprotocol/clientCapabilities": {},
        "io.modelcontextprotocol/clientInfo": {"name": "traffic", "version": "1"},
    }
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "add", "arguments": {"a": a, "b": b}, "_meta": meta},
    }


def judge(resp: httpx.Response, want: int) -> str:
    """``ok`` or an error detail for a reply to ``add``."""
    if resp.status_code != 200:
        return f"HTTP {resp.status_code}"
    try:
        reply = resp.json()
    except ValueError:
        return "not JSON"
    result = reply.get("result") or {}
    if "error" in reply or result.get("isError"):
        return f"JSON-RPC error {str(reply.get('error') or result)[:80]}"
    if (result.get("structuredContent") or {}).get("result") != want:
        return f"wrong result {str(result)[:80]}"
    return "ok"


@dataclass
class Summary:
    """Counts of one run (or a slice of it); the error window runs from the first failed
    call's start to the last failed call's end (0 without failures)."""

    requests: int
    failed: Counter[str] = field(default_factory=Counter)
    window: float = 0.0
    details: Counter[str] = field(default_factory=Counter)
    no_endpoint: int = 0  # filled in by callers that read the proxy's log

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def line(self) -> str:
        kinds = " ".join(f"{k}={self.failed.get(k, 0)}" for k in KINDS)
        return (
            f"requests={self.requests} failed={self.failures} ({kinds}) window={self.window:.2f}s"
        )


def summarize(outcomes: list[Outcome]) -> Summary:
    failed = [o for o in outcomes if o.kind != "ok"]
    window = (
        max(o.started + o.took for o in failed) - min(o.started for o in failed) if failed else 0
    )
    return Summary(
        requests=len(outcomes),
        failed=Counter(o.kind for o in failed),
        window=window,
        details=Counter(f"{o.kind}: {o.detail}" for o in failed),
    )


class ToolTraffic:
    """Calls ``add`` at ``url`` every ``period`` seconds in a background thread.

    ``url`` may be a callable (e.g. reading the Service's proxy annotation): it is called
    again every ``follow`` seconds and calls go to its latest answer, as a client that
    follows the Service's address (a changed ``spec.port`` changes the Service's port).
    """

    def __init__(
        self,
        url: str | Callable[[], str | None],
        *,
        follow: float = 0.1,
        path: str = "/mcp",
        period: float = 0.05,
        timeout: float = 2.0,
        token: str | None = None,
        keepalive: bool = False,
    ) -> None:
        self.path = path
        self._resolve = url if callable(url) else None
        first = url() if callable(url) else url
        if not first:
            raise ValueError("no address to call")
        self.url = first.rstrip("/") + path
        self.follow = follow
        self.period, self.timeout, self.keepalive = period, timeout, keepalive
        self.headers = {
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
            "Mcp-Method": "tools/call",
            "Mcp-Name": "add",
        }
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="traffic", daemon=True)
        self._ids = itertools.count(1)

    def start(self) -> ToolTraffic:
        self._thread.start()
        return self

    def stop(self) -> Summary:
        self._stop.set()
        self._thread.join(timeout=self.timeout + 5)
        return self.summary()

    def summary(self, since: float = 0.0, until: float = float("inf")) -> Summary:
        """Calls started in ``[since, until)`` (monotonic)."""
        return summarize([o for o in list(self.outcomes) if since <= o.started < until])

    def _run(self) -> None:
        if self._resolve is not None:
            threading.Thread(target=self._follow, name="traffic-follow", daemon=True).start()
        asyncio.run(self._loop())

    def _follow(self) -> None:
        assert self._resolve is not None
        while not self._stop.wait(self.follow):
            with contextlib.suppress(Exception):  # a failed read keeps the last address
                if url := self._resolve():
                    self.url = url.rstrip("/") + self.path

    async def _loop(self) -> None:
        limits = httpx.Limits(max_keepalive_connections=10 if self.keepalive else 0)
        async with httpx.AsyncClient(timeout=self.timeout, limits=limits) as client:
            tasks: set[asyncio.Task[None]] = set()
            next_at = time.monotonic()
            while not self._stop.is_set():
                task = asyncio.create_task(self._call(client))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += self.period
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            if tasks:
                await asyncio.wait(tasks, timeout=self.timeout + 1)

    async def _call(self, client: httpx.AsyncClient) -> None:
        request_id = next(self._ids)
        a, b = request_id % 1000, 7
        started = time.monotonic()
        headers = self.headers if self.keepalive else {**self.headers, "Connection": "close"}
        try:
            resp = await client.post(
                self.url, json=tool_call_body(request_id, a, b), headers=headers
            )
            verdict = judge(resp, a + b)
            kind, detail = ("ok", "") if verdict == "ok" else ("error", verdict)
        except Exception as exc:
            kind, detail = classify(exc), type(exc).__name__
        self.outcomes.append(Outcome(started, time.monotonic() - started, kind, detail))


@contextlib.contextmanager
def traffic(url: str | Callable[[], str | None], **kwargs: Any) -> Iterator[ToolTraffic]:
    """``with traffic(url) as t: ...`` -- calls run for the block's duration."""
    caller = ToolTraffic(url, **kwargs).start()
    try:
        yield caller
    finally:
        caller.stop()
