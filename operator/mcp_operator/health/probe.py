"""An era-aware MCP health probe over Streamable HTTP.

Why not the SDK client: the operator probes hundreds of pods every few seconds and needs a
verdict (healthy / unhealthy / misconfigured), a hard time budget, and a guarantee that a
legacy probe never leaks a server session. The SDK client raises on the interesting cases
and hides the HTTP status that tells them apart, so the probe speaks the wire directly.

The exchange mirrors the SDK's own ``mode='auto'`` negotiation (``mcp.client._probe``):

1. ``POST server/discover`` at the 2026-07-28 revision ("modern": no session). The request
   carries the per-request ``_meta`` envelope (protocol version + client capabilities +
   client info) and the ``MCP-Protocol-Version`` / ``Mcp-Method`` routing headers, which a
   2.x server uses to route it to its single-exchange handler.
2. ``-32022`` (unsupported version) names the server's versions: retry once at a mutual
   modern one, fall back to legacy if it only lists handshake versions, else the server and
   the probe share no version (misconfigured).
3. Anything else that is not positive modern evidence falls back to the legacy handshake:
   ``initialize`` -> ``notifications/initialized`` -> ``ping`` -> ``DELETE`` of the session.
   The DELETE always runs (even after a failed ping or a timeout) because a stateful legacy
   server keeps every session in memory until it idles out after 30 minutes, and refuses new
   ones (503) at 10,000: a probe every 2 s without it would take a server down in 5.5 hours.
"""

from __future__ import annotations

import asyncio
import codecs
import enum
import functools
import itertools
import json
import re
import ssl
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

from mcp_operator.health.http1 import ProbeClient, ProtocolError, Response

__all__ = [
    "HANDSHAKE_VERSIONS",
    "MODERN_VERSIONS",
    "Outcome",
    "ProbeResult",
    "ProbeSettings",
    "ProbeTarget",
    "probe",
]

MODERN_VERSIONS: Final[tuple[str, ...]] = ("2026-07-28",)
"""Per-request-envelope revisions the probe speaks, oldest to newest."""

HANDSHAKE_VERSIONS: Final[tuple[str, ...]] = (
    "2024-11-05",
    "2025-03-26",
    "2025-06-18",
    "2025-11-25",
)
"""``initialize``-handshake revisions the probe accepts, oldest to newest."""

UNSUPPORTED_PROTOCOL_VERSION: Final = -32022
HEADER_MISMATCH: Final = -32020
MISSING_REQUIRED_CLIENT_CAPABILITY: Final = -32021

_META_PROTOCOL_VERSION: Final = "io.modelcontextprotocol/protocolVersion"
_META_CLIENT_INFO: Final = "io.modelcontextprotocol/clientInfo"
_META_CLIENT_CAPABILITIES: Final = "io.modelcontextprotocol/clientCapabilities"
_ACCEPT: Final = "application/json, text/event-stream"
_MAX_BODY_BYTES: Final = 1 << 20
_MAX_DETAIL: Final = 300


class Outcome(enum.StrEnum):
    """What a probe says about one pod.

    ``unverified``: the pod's process answered HTTP but the probe could not check MCP
    (401/403 -- an OAuth-protected server, 421 -- a Host allowlist, a redirect, no common
    protocol version, a TLS certificate the probe does not trust). The process is up and
    clients holding the right credentials are served, so the pod keeps serving; it says
    nothing about health, so it never moves a breaker and never triggers a failover.
    ``misconfigured`` is reserved for the operator's own probe errors (an invalid probe
    target, a token Secret that does not exist).
    """

    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNVERIFIED = "unverified"
    MISCONFIGURED = "misconfigured"


@dataclass(frozen=True)
class ProbeResult:
    """One probe's verdict. ``detail`` is for humans and never contains secrets."""

    outcome: Outcome
    era: str | None
    duration_s: float
    detail: str
    refused: bool = False
    """The TCP connection was refused: nothing listens on the pod's port (a dead process)."""
    challenge: bool = False
    """A 401/403 carried ``WWW-Authenticate``: the server wants OAuth credentials."""


@dataclass(frozen=True)
class ProbeTarget:
    """Where and as whom to probe. The token is kept out of ``repr`` on purpose."""

    url: str
    host_header: str | None = None
    bearer_token: str | None = field(default=None, repr=False)
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    """Extra request headers (user-set; may carry credentials, so kept out of ``repr``)."""
    sni_hostname: str | None = None
    """For https: the TLS server name to send and verify (the Host header's name)."""


@dataclass(frozen=True)
class ProbeSettings:
    """Time limits. Worst-case wall time is ``budget_s + cleanup_timeout_s``.

    The cleanup allowance is separate from the budget: a session DELETE is worth a little
    extra time even when the budget is spent, since skipping it leaks a server session.
    """

    step_timeout_s: float = 2.0
    budget_s: float = 5.0
    cleanup_timeout_s: float = 1.0
    client_name: str = "mcp-operator-probe"
    client_version: str = "0.1.0"


class _Verdict(Exception):
    """Ends a probe early with a classified outcome."""

    def __init__(
        self, outcome: Outcome, detail: str, era: str | None = None, *, challenge: bool = False
    ) -> None:
        super().__init__(detail)
        self.outcome = outcome
        self.detail = detail
        self.era = era
        self.challenge = challenge


@dataclass(frozen=True)
class _Reply:
    """One HTTP exchange: status, headers, the JSON-RPC reply matching our id (if any), and
    the error code of whatever JSON-RPC error the body carried (ids are not always echoed)."""

    status: int
    headers: Mapping[str, str]
    message: Mapping[str, Any] | None
    error_code: int | None
    error_data: Any
    error_message: str


def client_for(ca: str | None) -> ProbeClient:
    """The HTTP client probes use. With a CA bundle (PEM), https certificates must chain to
    it and name the Host header's name (sent as SNI); without one, https is encrypted but not
    verified, as the kubelet's own https probes. Connections are kept alive for seconds, not
    longer (see :mod:`mcp_operator.health.http1`), so a pod that stops accepting new ones
    is still noticed."""
    return ProbeClient(ssl.create_default_context(cadata=ca) if ca is not None else None)


async def probe(
    client: ProbeClient, target: ProbeTarget, settings: ProbeSettings | None = None
) -> ProbeResult:
    """Probe one MCP endpoint; never raises for anything the server or network does."""
    settings = settings or ProbeSettings()
    started = time.monotonic()
    exchange = _Exchange(client, target, settings, deadline=started + settings.budget_s)
    era: str | None
    refused = challenge = False
    try:
        era, detail = await exchange.run()
        outcome = Outcome.HEALTHY
    except _Verdict as verdict:
        outcome, era, detail = verdict.outcome, verdict.era, verdict.detail
        challenge = verdict.challenge
    except TimeoutError:
        outcome, era, detail = Outcome.UNHEALTHY, exchange.era, f"timeout during {exchange.step}"
    except (OSError, ProtocolError) as exc:
        outcome, era = Outcome.UNHEALTHY, exchange.era
        refused = _is_refused(exc)
        detail = f"{type(exc).__name__} during {exchange.step}: {exc}"
        untrusted = _cert_error(exc)
        if untrusted is not None:
            outcome, detail = Outcome.UNVERIFIED, f"TLS certificate not trusted: {untrusted}"
    except ValueError as exc:
        # A bad URL, or a header (token, Host) that is not ASCII. The message is left out:
        # a UnicodeEncodeError quotes the offending string, which may be the token.
        outcome, era = Outcome.MISCONFIGURED, None
        detail = f"invalid probe target ({type(exc).__name__})"
    detail = _redact(f"{detail}{exchange.cleanup_note}", target)
    return ProbeResult(outcome, era, time.monotonic() - started, detail, refused, challenge)


def _cert_error(exc: BaseException) -> str | None:
    """The verification failure when the pod's certificate is not trusted (wrong CA, wrong
    name, expired), or None. The process answered TLS, so this is the probe's configuration
    (``spec.health.caSecretRef``, ``hostHeader``) or the certificate, not the pod's health:
    a CA rotated ahead of the pods must not take a fleet out of service."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return None
        if isinstance(seen, ssl.SSLCertVerificationError):
            return str(seen.verify_message or seen.reason)
        seen = seen.__cause__ or seen.__context__
    return None


def _is_refused(exc: BaseException) -> bool:
    """A refused connect (ECONNREFUSED anywhere in the cause chain)."""
    seen: BaseException | None = exc
    for _ in range(6):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or "Connection refused" in str(seen):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


class _Exchange:
    """The state of one probe: which step it is on, the era it found, and its deadline."""

    def __init__(
        self,
        client: ProbeClient,
        target: ProbeTarget,
        settings: ProbeSettings,
        deadline: float,
    ) -> None:
        self.client = client
        self.target = target
        self.settings = settings
        self.deadline = deadline
        self.ids = itertools.count(1)
        self.step = "server/discover"
        self.era: str | None = None
        self.legacy_version: str | None = None
        self.cleanup_note = ""

    async def run(self) -> tuple[str, str]:
        """Try the modern era first; fall back to legacy when the server shows no sign of it."""
        version = MODERN_VERSIONS[-1]
        for attempt in range(2):
            retry = await self._modern(version, may_retry=attempt == 0)
            if retry is None:
                return await self._legacy()
            if retry == "":
                return "modern", f"server/discover ok at {version}"
            version = retry
        raise _Verdict(Outcome.UNHEALTHY, "server/discover: version negotiation did not settle")

    # -- modern ------------------------------------------------------------------------

    async def _modern(self, version: str, *, may_retry: bool) -> str | None:
        """One discover round: ``""`` = healthy, a version = retry at it, ``None`` = legacy."""
        self.step = "server/discover"
        request_id = next(self.ids)
        body = _discover_body(
            request_id, version, self.settings.client_name, self.settings.client_version
        )
        headers = {"MCP-Protocol-Version": version, "Mcp-Method": "server/discover"}
        reply = await self._post(body, headers, request_id)
        stray = reply.headers.get("mcp-session-id")
        if stray and reply.status != 200:
            # Older mcp 1.x servers open a session for any session-less POST and keep it
            # even when they refuse the request (seen with 1.9.4); end it like our own.
            await self._delete(stray)
        _raise_for_access(reply, era=None)
        if reply.status == 200:
            return _judge_discover(reply)
        if reply.status == 400 and reply.error_code == UNSUPPORTED_PROTOCOL_VERSION:
            return _negotiate(reply, version, may_retry=may_retry)
        if reply.status == 400 and reply.error_code in (
            HEADER_MISMATCH,
            MISSING_REQUIRED_CLIENT_CAPABILITY,
        ):
            self.era = "modern"
            raise _Verdict(
                Outcome.UNVERIFIED,
                f"server/discover rejected the probe's request: {_error_text(reply)}",
                "modern",
            )
        return None

    # -- legacy ------------------------------------------------------------------------

    async def _legacy(self) -> tuple[str, str]:
        """``initialize`` -> ``notifications/initialized`` -> ``ping``, then always DELETE."""
        self.era = "legacy"
        self.step = "initialize"
        request_id = next(self.ids)
        params = {
            "protocolVersion": HANDSHAKE_VERSIONS[-1],
            "capabilities": {},
            "clientInfo": {
                "name": self.settings.client_name,
                "version": self.settings.client_version,
            },
        }
        body = {"jsonrpc": "2.0", "id": request_id, "method": "initialize", "params": params}
        reply = await self._post(body, {}, request_id)
        session_id = reply.headers.get("mcp-session-id") if reply.status < 300 else None
        try:
            _raise_for_access(reply, era="legacy")
            version = self.legacy_version = _judge_initialize(reply)
            await self._initialized_and_ping(session_id, version)
        finally:
            if session_id:
                await self._delete(session_id)
        return "legacy", f"initialize+ping ok at {version}"

    async def _initialized_and_ping(self, session_id: str | None, version: str) -> None:
        headers = {"MCP-Protocol-Version": version}
        if session_id:
            headers["Mcp-Session-Id"] = session_id
        self.step = "notifications/initialized"
        note = {"jsonrpc": "2.0", "method": "notifications/initialized"}
        reply = await self._post(note, headers, None)
        _raise_for_access(reply, era="legacy")
        if not 200 <= reply.status < 300:
            raise _Verdict(
                Outcome.UNHEALTHY, _http_text("notifications/initialized", reply), "legacy"
            )
        self.step = "ping"
        request_id = next(self.ids)
        reply = await self._post(
            {"jsonrpc": "2.0", "id": request_id, "method": "ping"}, headers, request_id
        )
        _raise_for_access(reply, era="legacy")
        result = reply.message.get("result") if reply.message is not None else None
        if reply.status != 200 or result != {}:
            raise _Verdict(Outcome.UNHEALTHY, _http_text("ping", reply), "legacy")

    async def _delete(self, session_id: str) -> None:
        """End the session; failures are noted, never raised (the verdict is already made)."""
        headers = {**self._base_headers(), "Mcp-Session-Id": session_id}
        if self.legacy_version is not None:
            headers["MCP-Protocol-Version"] = self.legacy_version
        timeout = self.settings.cleanup_timeout_s
        try:
            async with asyncio.timeout(timeout):
                async with self.client.stream(
                    "DELETE", self.target.url, headers, sni=self.target.sni_hostname
                ) as response:
                    await _read_capped(response)
        except (TimeoutError, OSError, ProtocolError, _Verdict, ValueError) as exc:
            # ValueError: a session id the server sent that cannot be a header (not ASCII).
            self.cleanup_note = f"; session DELETE failed: {type(exc).__name__}"
            return
        if response.status not in (200, 202, 204, 404, 405):
            self.cleanup_note = f"; session DELETE answered HTTP {response.status}"

    # -- transport ---------------------------------------------------------------------

    def _base_headers(self) -> dict[str, str]:
        headers = {**self.target.headers, "Accept": _ACCEPT, "Content-Type": "application/json"}
        if self.target.host_header:
            headers["Host"] = self.target.host_header
        if self.target.bearer_token:
            headers["Authorization"] = f"Bearer {self.target.bearer_token}"
        return headers

    def _step_timeout(self) -> float:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        return min(self.settings.step_timeout_s, remaining)

    async def _post(
        self, body: Mapping[str, Any] | bytes, headers: Mapping[str, str], request_id: int | None
    ) -> _Reply:
        """POST one JSON-RPC message (or its encoding); parse a JSON or SSE reply; bounded
        in time and size."""
        timeout = self._step_timeout()
        async with asyncio.timeout(timeout):
            async with self.client.stream(
                "POST",
                self.target.url,
                {**self._base_headers(), **headers},
                body if isinstance(body, bytes) else json.dumps(body).encode(),
                sni=self.target.sni_hostname,
            ) as response:
                is_sse = response.headers.get("content-type", "").startswith("text/event-stream")
                if is_sse:
                    messages = [m async for m in _sse_messages(response, request_id)]
                else:
                    messages = _json_messages(await _read_capped(response))
        return _reply(response.status, response.headers, messages, request_id)


@functools.lru_cache(maxsize=64)
def _discover_body(request_id: int, version: str, client_name: str, client_version: str) -> bytes:
    """The ``server/discover`` request, encoded once: every modern probe sends the same
    bytes (request id 1, or 2 after a version retry)."""
    meta = {
        _META_PROTOCOL_VERSION: version,
        _META_CLIENT_CAPABILITIES: {},
        _META_CLIENT_INFO: {"name": client_name, "version": client_version},
    }
    body = {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "server/discover",
        "params": {"_meta": meta},
    }
    return json.dumps(body).encode()


def _reply(
    status: int,
    headers: Mapping[str, str],
    messages: list[Mapping[str, Any]],
    request_id: int | None,
) -> _Reply:
    matched = next(
        (m for m in messages if request_id is not None and m.get("id") == request_id), None
    )
    error: Any = next((m["error"] for m in messages if isinstance(m.get("error"), dict)), None)
    code = error.get("code") if error is not None else None
    return _Reply(
        status=status,
        headers=headers,
        message=matched,
        error_code=code if isinstance(code, int) else None,
        error_data=error.get("data") if error is not None else None,
        error_message=str(error.get("message", ""))[:120] if error is not None else "",
    )


async def _read_capped(response: Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.chunks():
        size += len(chunk)
        if size > _MAX_BODY_BYTES:
            raise _Verdict(Outcome.UNHEALTHY, "response body exceeds 1 MiB")
        chunks.append(chunk)
    return b"".join(chunks)


def _json_messages(raw: bytes) -> list[Mapping[str, Any]]:
    try:
        decoded = json.loads(raw) if raw.strip() else None
    except ValueError:
        return []
    items = decoded if isinstance(decoded, list) else [decoded]
    return [item for item in items if isinstance(item, dict)]


async def _lines(response: Response) -> AsyncIterator[str]:
    """The body's lines, split at CRLF, LF or CR as SSE allows (a CR at a chunk's end waits
    for the next chunk, which may start with its LF)."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    pending = ""
    async for chunk in response.chunks():
        new = decoder.decode(chunk)
        if not _LINE_END.search(new) and not pending.endswith("\r"):
            pending += new  # no line ends yet: nothing to split (bounded below)
            if len(pending) > _MAX_BODY_BYTES:
                raise _Verdict(Outcome.UNHEALTHY, "event stream line exceeds 1 MiB")
            continue
        text = pending + new
        held = "\r" if text.endswith("\r") else ""
        parts = _LINE_END.split(text[: len(text) - len(held)])
        pending = parts.pop() + held
        for part in parts:
            yield part
    if pending.rstrip("\r"):
        yield pending.rstrip("\r")


async def _sse_messages(
    response: Response, request_id: int | None
) -> AsyncIterator[Mapping[str, Any]]:
    """Yield the JSON-RPC messages of an SSE stream (``data:`` lines, comments skipped).

    Stops at the reply to ``request_id``, so a server that keeps the stream open after
    answering (keepalive pings) cannot hold the probe until its timeout.
    """
    data: list[str] = []
    size = 0
    async for line in _lines(response):
        size += len(line)
        if size > _MAX_BODY_BYTES:
            raise _Verdict(Outcome.UNHEALTHY, "event stream exceeds 1 MiB")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
        elif not line and data:
            for message in _json_messages("\n".join(data).encode()):
                yield message
                if request_id is not None and message.get("id") == request_id:
                    return
            data = []


# -- judgements ------------------------------------------------------------------------


def _raise_for_access(reply: _Reply, era: str | None) -> None:
    """HTTP statuses that decide the verdict whatever the step."""
    if reply.status in (401, 403):
        challenge = "www-authenticate" in reply.headers
        detail = (
            f"HTTP {reply.status} with an authentication challenge: the server requires "
            "credentials (set spec.health.bearerTokenSecretRef to a token it accepts)"
            if challenge
            else f"HTTP {reply.status}: credentials rejected"
        )
        raise _Verdict(Outcome.UNVERIFIED, detail, era, challenge=challenge)
    if reply.status == 421:
        raise _Verdict(
            Outcome.UNVERIFIED,
            "HTTP 421: server rejected the Host header (set spec.health.hostHeader)",
            era,
        )
    if 300 <= reply.status < 400:
        # Not followed: a redirect built from an overridden Host may lead anywhere, and
        # the fix (probe the final path, e.g. old FastMCP's "/mcp/") is the user's to make.
        where = urlsplit(reply.headers.get("location", "")).path[:80]
        detail = f"HTTP {reply.status} redirect to path {where!r}: probe that URL instead"
        raise _Verdict(Outcome.UNVERIFIED, detail, era)
    if reply.status >= 500:
        raise _Verdict(Outcome.UNHEALTHY, _http_text("server error", reply), era)


def _judge_discover(reply: _Reply) -> str | None:
    """A 200 discover reply: healthy if it names a modern version we speak, else legacy."""
    message = reply.message
    if message is None:
        raise _Verdict(Outcome.UNHEALTHY, "server/discover: no response with the request's id")
    result = message.get("result")
    if not isinstance(result, dict) and isinstance(message.get("error"), dict):
        # A JSON-RPC error (e.g. -32601 method not found from a server that predates
        # server/discover): the SDK's client falls back to ``initialize``, and so do we.
        return None
    if not isinstance(result, dict):
        raise _Verdict(Outcome.UNHEALTHY, f"server/discover failed: {_error_text(reply)}", "modern")
    supported = result.get("supportedVersions")
    if not isinstance(supported, list):
        raise _Verdict(
            Outcome.UNHEALTHY, "server/discover: result lacks supportedVersions", "modern"
        )
    if any(v in supported for v in MODERN_VERSIONS):
        return ""
    return None  # a discover-answering server that advertises only handshake versions


def _negotiate(reply: _Reply, version: str, *, may_retry: bool) -> str | None:
    """Act on -32022: a mutual modern version to retry at, legacy, or no common version."""
    data = reply.error_data if isinstance(reply.error_data, dict) else {}
    supported = [v for v in data.get("supported", []) if isinstance(v, str)]
    mutual = [v for v in MODERN_VERSIONS if v in supported]
    if mutual and may_retry and mutual[-1] != version:
        return mutual[-1]
    if any(v in HANDSHAKE_VERSIONS for v in supported):
        return None
    raise _Verdict(
        Outcome.UNVERIFIED,
        f"no common protocol version: server supports {supported[:8]}, probe speaks "
        f"{list(MODERN_VERSIONS + HANDSHAKE_VERSIONS)}",
        "modern",
    )


def _judge_initialize(reply: _Reply) -> str:
    result = reply.message.get("result") if reply.message is not None else None
    if reply.status != 200 or not isinstance(result, dict):
        raise _Verdict(Outcome.UNHEALTHY, _http_text("initialize", reply), "legacy")
    version = result.get("protocolVersion")
    if version not in HANDSHAKE_VERSIONS:
        raise _Verdict(
            Outcome.UNVERIFIED,
            f"initialize: server chose protocol version {str(version)[:40]!r}, which the probe "
            "does not speak",
            "legacy",
        )
    return str(version)


def _error_text(reply: _Reply) -> str:
    if reply.error_code is None:
        return f"HTTP {reply.status}"
    return f"HTTP {reply.status}, JSON-RPC error {reply.error_code} {reply.error_message!r}"


def _http_text(step: str, reply: _Reply) -> str:
    return f"{step}: {_error_text(reply)}"


_LINE_END: Final = re.compile(r"\r\n|\r|\n")
_USERINFO = re.compile(r"//[^/@\s]*@")


def _redact(detail: str, target: ProbeTarget) -> str:
    """Strip anything secret from a human-readable detail, and bound its length."""
    if target.bearer_token:
        detail = detail.replace(target.bearer_token, "***")
    for value in target.headers.values():  # user headers may carry API keys
        if len(value) >= 4:
            detail = detail.replace(value, "***")
    detail = _USERINFO.sub("//***@", detail)
    return detail[:_MAX_DETAIL]
