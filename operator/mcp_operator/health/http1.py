"""A small HTTP/1.1 client for MCP probes, on asyncio streams.

Why not httpx: the operator sends one probe per pod every interval (2,000 a second at
1,000 servers of 4 pods) and httpx + httpcore + anyio cost ~3.4 ms of CPU per probe on a
new connection; a plain asyncio exchange costs ~0.5 ms on a new connection and ~0.2 ms on
a kept-alive one (``bench/probe_cost.py`` measures all of them against ``http.client``).
A probe needs very little of HTTP: one request at a time per connection, a JSON or SSE
reply, no redirects, cookies, proxies, compression or HTTP/2.

Connections are kept alive per origin, but only for a while (``max_age_s``, 30 s by
default, and ``max_idle_s``, 4 s, below the 5 s idle timeout of uvicorn and Node), so a pod
that stops accepting new connections while serving an old one is noticed within one
connection age: 30 s, the kubelet's own default detection (period 10 s, 3 failures). A
new connection costs about twice a kept-alive probe; at 10 s a fifth of the probes paid it.
A request on a reused connection that the server closed before answering is sent once more
on a fresh one (the server never saw it); a fresh connection's failure is the pod's.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import re
import ssl
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final
from urllib.parse import quote, urlsplit

__all__ = ["ProbeClient", "ProtocolError", "Response", "insecure_context"]

_HEAD_LIMIT: Final = 64 * 1024
_USER_AGENT: Final = "mcp-operator-probe"
_NO_BODY: Final = frozenset({204, 304})
_CHUNK_SIZE: Final = re.compile(rb"[0-9A-Fa-f]{1,8}")
_DIGITS: Final = re.compile(r"[0-9]{1,15}")
_FRAMING: Final = frozenset({"content-length", "transfer-encoding"})
# Added to the cached head per request: credentials rotate and sessions are one-use.
_VOLATILE: Final = frozenset({"authorization", "mcp-session-id"})
# RFC 3986 pchar and query characters, plus '%' so that an already escaped path is kept.
_PATH_SAFE: Final = "/:@!$&'()*+,;=-._~%"
_QUERY_SAFE: Final = _PATH_SAFE + "?"


class ProtocolError(Exception):
    """The server's reply was not HTTP/1.1 the client can read (or ended early)."""


class _Stale(Exception):
    """A reused connection was closed by the server before any byte of the reply."""


@dataclass(frozen=True)
class _Origin:
    scheme: str
    host: str
    port: int
    sni: str | None


@dataclass(frozen=True)
class _Request:
    origin: _Origin
    method: str
    head: bytes
    body: bytes


@functools.cache
def insecure_context() -> ssl.SSLContext:
    """TLS without verification, as the kubelet's https probes: encrypted, not trusted.
    One for the process (a context holds ~14 kB of native memory; 1,000 servers' clients
    share it: it is never changed after it is made)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def _build(
    method: str, url: str, headers: Mapping[str, str], body: bytes, sni: str | None
) -> _Request:
    """The request's bytes; ``ValueError`` for a URL or header the probe cannot send (a
    non-ASCII token, a CR/LF in a value: never sent, and never quoted in the error)."""
    stable: dict[str, str] = {}
    volatile: dict[str, str] = {}
    for name, value in headers.items():
        (volatile if name.lower() in _VOLATILE else stable)[name] = value
    origin, head = _head(method, url, tuple(stable.items()), len(body), sni)
    if volatile:
        lines = [f"{name}: {value}" for name, value in _one_per_name(volatile).values()]
        head = head[:-2] + "".join(f"{line}\r\n" for line in _sendable(lines)).encode("ascii")
        head += b"\r\n"
    return _Request(origin, method, head, body)


@functools.lru_cache(maxsize=16384)
def _head(
    method: str, url: str, header_items: tuple[tuple[str, str], ...], length: int, sni: str | None
) -> tuple[_Origin, bytes]:
    """A request head, built once per pod and request: each pod gets the same probe every
    round, and building it (URL parsing, header merging, encoding) was ~7 % of the
    operator's CPU at 300 servers. 16,384 heads cover 4 requests for each of 4,000 pods.
    Tokens and session ids are never part of it (:data:`_VOLATILE`): they change, and a
    cache must not keep old credentials."""
    headers = dict(header_items)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("the probe URL needs an http or https scheme and a host")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    origin = _Origin(parts.scheme, parts.hostname, port, sni if parts.scheme == "https" else None)
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    target += f"?{quote(parts.query, safe=_QUERY_SAFE)}" if parts.query else ""
    given = _one_per_name(headers)
    lines = [f"{method} {target} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {parts.netloc.rsplit('@', 1)[-1]}")
    if "user-agent" not in given:
        lines.append(f"User-Agent: {_USER_AGENT}")
    lines.extend(f"{name}: {value}" for name, value in given.values())
    if length or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {length}")
    return origin, ("\r\n".join(_sendable(lines)) + "\r\n\r\n").encode("ascii")


def _sendable(lines: list[str]) -> list[str]:
    """``lines``, unless one would split or end the head (a CR, LF or NUL in a value)."""
    if any(c in line for line in lines for c in "\r\n\0"):
        raise ValueError("a probe header contains a line break or NUL")
    return lines


def _one_per_name(headers: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Header lines by lower-case name, the last given winning (the probe's own come after
    the user's), without the framing headers this client writes itself: a second
    ``Content-Length`` or a ``Transfer-Encoding`` would make the request ambiguous."""
    out: dict[str, tuple[str, str]] = {}
    for name, value in headers.items():
        lower = name.lower()
        if lower not in _FRAMING:
            out.pop(lower, None)
            out[lower] = (name, value)
    return out


@dataclass
class _Connection:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    opened: float
    used: float

    def close(self) -> None:
        self.writer.close()


@dataclass
class Response:
    """A reply whose body is read through :meth:`chunks` (at most once)."""

    status: int
    headers: dict[str, str]
    """Lower-cased names; repeated headers joined with ``", "``."""
    _conn: _Connection = field(repr=False)
    _framing: str = "close"
    _length: int = 0
    keep_alive: bool = False
    complete: bool = False

    async def chunks(self) -> AsyncIterator[bytes]:
        reader = self._conn.reader
        try:
            if self._framing == "none":
                pass
            elif self._framing == "length":
                left = self._length
                while left > 0:
                    piece = await reader.read(min(left, 65536))
                    if not piece:
                        raise ProtocolError("the server closed the connection mid-body")
                    left -= len(piece)
                    yield piece
            elif self._framing == "chunked":
                async for piece in _dechunk(reader):
                    yield piece
            else:
                while piece := await reader.read(65536):
                    yield piece
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise ProtocolError(f"malformed body: {type(exc).__name__}") from exc
        self.complete = True

    async def read(self) -> bytes:
        return b"".join([piece async for piece in self.chunks()])


async def _dechunk(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Chunks as they come, in pieces of at most 64 KiB: a pod announcing a huge chunk is
    cut off by the caller's size cap, not buffered whole first."""
    while True:
        line = await reader.readuntil(b"\r\n")
        digits = line.split(b";", 1)[0].strip()
        if not _CHUNK_SIZE.fullmatch(digits):
            raise ProtocolError("malformed chunk size")
        left = int(digits, 16)
        if left == 0:
            while (await reader.readuntil(b"\r\n")) != b"\r\n":  # trailers
                pass
            return
        while left:
            piece = await reader.readexactly(min(left, 65536))
            left -= len(piece)
            yield piece
        if await reader.readexactly(2) != b"\r\n":
            raise ProtocolError("malformed chunk end")


def _parse_head(raw: bytes, method: str) -> tuple[int, dict[str, str], str, int, bool]:
    """Status, headers, body framing, length, and whether the connection may be reused."""
    lines = raw.decode("latin-1").split("\r\n")
    version, _, rest = lines[0].partition(" ")
    code = rest[:3]
    if not version.startswith("HTTP/1.") or not _DIGITS.fullmatch(code):
        raise ProtocolError("not an HTTP/1.x status line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise ProtocolError("malformed response header")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    status = int(code)
    keep = version == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
    if method == "HEAD" or status in _NO_BODY or status < 200:
        return status, headers, "none", 0, keep
    if "chunked" in headers.get("transfer-encoding", "").lower():
        return status, headers, "chunked", 0, keep
    length = headers.get("content-length")
    if length is not None:
        if not _DIGITS.fullmatch(length.strip()):
            raise ProtocolError("malformed Content-Length")
        return status, headers, "length", int(length), keep
    return status, headers, "close", 0, False


class ProbeClient:
    """Kept-alive HTTP/1.1 connections per origin, each used by one request at a time."""

    def __init__(
        self,
        context: ssl.SSLContext | None = None,
        *,
        max_age_s: float = 30.0,
        max_idle_s: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.context = context or insecure_context()
        self.max_age_s = max_age_s
        self.max_idle_s = max_idle_s
        self.clock = clock
        self.idle: dict[_Origin, list[_Connection]] = {}
        self.opened = 0
        """Connections opened so far (for tests and benchmarks)."""

    @asynccontextmanager
    async def stream(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        content: bytes = b"",
        sni: str | None = None,
    ) -> AsyncIterator[Response]:
        """Send one request; the reply's body is read inside the ``async with``. The
        connection goes back to the pool only when its body was read to the end. ``sni``:
        the TLS server name to send and verify (https only; default the URL's host)."""
        request = _build(method, url, headers, content, sni)
        response = await self._send(request)
        try:
            yield response
        finally:
            if response.complete and response.keep_alive:
                response._conn.used = self.clock()
                self.idle.setdefault(request.origin, []).append(response._conn)
            else:
                response._conn.close()

    async def _send(self, request: _Request) -> Response:
        conn = self._reuse(request.origin)
        if conn is not None:
            with contextlib.suppress(_Stale):  # sent again, once, on a fresh connection
                return await self._exchange(conn, request)
        try:
            return await self._exchange(await self._open(request.origin), request)
        except _Stale as exc:
            raise ProtocolError("the server closed the connection without a reply") from exc

    async def _exchange(self, conn: _Connection, request: _Request) -> Response:
        """One request and its reply's head; on any failure (a timeout, a cancel, a bad
        reply) the connection is closed, never left open outside the pool."""
        try:
            return await self._request(conn, request)
        except BaseException:
            conn.close()
            raise

    @staticmethod
    async def _request(conn: _Connection, request: _Request) -> Response:
        try:
            conn.writer.write(request.head + request.body)
            await conn.writer.drain()
            while True:
                raw = await conn.reader.readuntil(b"\r\n\r\n")
                status, headers, framing, length, keep = _parse_head(raw, request.method)
                if not 100 <= status < 200:
                    return Response(status, headers, conn, framing, length, keep)
        except asyncio.IncompleteReadError as exc:
            if not exc.partial:
                raise _Stale from exc
            raise ProtocolError("the reply's head ended early") from exc
        except asyncio.LimitOverrunError as exc:
            raise ProtocolError("the reply's head exceeds 64 KiB") from exc
        except (ConnectionResetError, BrokenPipeError) as exc:
            raise _Stale from exc

    def _reuse(self, origin: _Origin) -> _Connection | None:
        now = self.clock()
        pool = self.idle.get(origin, [])
        found = None
        while pool and found is None:
            conn = pool.pop()
            if self._fresh(conn, now):
                found = conn
            else:
                conn.close()
        if not pool:
            self.idle.pop(origin, None)
        return found

    def _fresh(self, conn: _Connection, now: float) -> bool:
        young = now - conn.opened < self.max_age_s and now - conn.used < self.max_idle_s
        # Bytes that arrived while idle (a 408 before an idle close) are no reply of ours.
        # StreamReader has no public count of buffered bytes; _buffer has been there since
        # 3.4, and without it the check is skipped rather than failing.
        unsolicited = getattr(conn.reader, "_buffer", b"")
        return young and not conn.reader.at_eof() and not unsolicited

    async def _open(self, origin: _Origin) -> _Connection:
        context = self.context if origin.scheme == "https" else None
        reader, writer = await asyncio.open_connection(
            origin.host,
            origin.port,
            ssl=context,
            server_hostname=(origin.sni or origin.host) if context else None,
            limit=_HEAD_LIMIT,
        )
        self.opened += 1
        now = self.clock()
        return _Connection(reader, writer, now, now)

    def prune(self) -> None:
        """Close connections too old or idle to reuse (those of pods that are gone)."""
        now = self.clock()
        for origin, pool in list(self.idle.items()):
            keep = []
            for conn in pool:
                if self._fresh(conn, now):
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self.idle[origin] = keep
            else:
                del self.idle[origin]

    def close_idle(self) -> None:
        """Close every pooled connection (requests in flight keep theirs until done)."""
        for pool in self.idle.values():
            for conn in pool:
                conn.close()
        self.idle.clear()

    async def __aenter__(self) -> ProbeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close_idle()
