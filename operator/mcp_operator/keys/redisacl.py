"""Just enough of the Redis protocol (RESP2) to read and change an ACL user's passwords.

Why not a client library: the operator needs four commands (``AUTH``, ``ACL GETUSER``,
``ACL SETUSER``, ``PING``) on a connection it opens for a second; a dependency for that would
ship with every install. Passwords travel only inside ``AUTH`` on the socket; errors carry
Redis's error *code* only (``WRONGPASS``, ``NOPERM``, ``ERR``: the reply's text may echo an
``ACL SETUSER`` argument, a password hash) or the exception's type.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

TIMEOUT = 3.0
MAX_BULK = 1 << 20


class RedisError(Exception):
    """Redis refused a command, or the connection failed; the message has no secret."""


Reply = str | int | bytes | list[Any] | None


async def _read(reader: asyncio.StreamReader) -> Reply:
    line = (await reader.readline()).rstrip(b"\r\n")
    if not line:
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(f"Redis replied {error_code(rest)}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        if size < 0:
            return None
        if size > MAX_BULK:
            raise RedisError("reply too large")
        data = await reader.readexactly(size + 2)
        return data[:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await _read(reader) for _ in range(count)]
    raise RedisError("unexpected reply")


def error_code(reply: bytes) -> str:
    """The leading upper-case code of an error reply (``-WRONGPASS ...`` -> ``WRONGPASS``);
    never the rest, which may quote a command's arguments."""
    word = reply.split(b" ", 1)[0].decode(errors="replace")
    return word if word.isalpha() and word.isupper() and len(word) <= 32 else "an error"


def _encode(args: tuple[str, ...]) -> bytes:
    out = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


class Connection:
    """One authenticated connection; use as ``async with Connection(...) as redis``."""

    def __init__(self, host: str, port: int, user: str, password: str) -> None:
        self.host, self.port, self.user, self._password = host, port, user, password
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Connection:
        try:
            self._reader, self._writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port), TIMEOUT
            )
        except (OSError, TimeoutError) as exc:
            raise RedisError(
                f"cannot connect to {self.host}:{self.port}: {type(exc).__name__}"
            ) from None
        try:
            await self.command("AUTH", self.user, self._password)
        except RedisError:
            await self.__aexit__()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._writer is not None:
            self._writer.close()
            with contextlib.suppress(OSError):
                await self._writer.wait_closed()

    async def command(self, *args: str) -> Reply:
        assert self._reader is not None and self._writer is not None
        try:
            self._writer.write(_encode(args))
            await asyncio.wait_for(self._writer.drain(), TIMEOUT)
            return await asyncio.wait_for(_read(self._reader), TIMEOUT)
        except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
            raise RedisError(f"{args[0]} failed: {type(exc).__name__}") from None

    async def passwords(self, user: str) -> frozenset[str]:
        """The SHA-256 hex hashes of ``user``'s passwords (``ACL GETUSER``)."""
        reply = await self.command("ACL", "GETUSER", user)
        if not isinstance(reply, list):
            raise RedisError(f"user {user} does not exist")
        fields = dict(zip(reply[::2], reply[1::2], strict=False))
        hashes = fields.get(b"passwords") or []
        return frozenset(h.decode() if isinstance(h, bytes) else str(h) for h in hashes)

    async def converge(
        self, user: str, wanted: frozenset[str], may_change: Callable[[], bool] = lambda: True
    ) -> frozenset[str]:
        """Make ``user`` accept exactly ``wanted`` (hashes): add the missing ones first, then
        remove the others, each an idempotent ``ACL SETUSER`` (``#hash`` / ``!hash``), so no
        moment lacks a wanted password. Returns what Redis accepts afterwards.
        ``may_change`` (the leadership fence) is asked right before each change: a deposed
        leader only observes, so it cannot remove a password its successor switched to."""
        live = await self.passwords(user)
        missing = sorted(wanted - live)
        if missing and may_change():
            await self.command("ACL", "SETUSER", user, *(f"#{h}" for h in missing))
        extra = sorted(live - wanted)
        if extra and wanted and may_change():
            await self.command("ACL", "SETUSER", user, *(f"!{h}" for h in extra))
        return await self.passwords(user)


__all__ = ["Connection", "RedisError", "error_code"]
