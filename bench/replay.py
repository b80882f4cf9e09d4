"""A replay listener: the real example server's answer to the operator's probe, served cheaply.

    .venv/bin/python bench/replay.py record FILE          # real server -> FILE
    .venv/bin/python bench/replay.py serve FILE --port P  # answer on 0.0.0.0:P

Why: ``bench/steady.py`` probes real listeners, and at 1,000 servers x 4 pods every 2 s that is
2,000 probes/s. One example-server process (the official ``mcp`` SDK under uvicorn) answering
every pod address cannot keep up on this 2-core machine (the 500-server run never settled), so
the bench measured the listener, not the operator. In production every pod answers on its own
CPU; here the listener shares the operator's two cores, so it must cost as little as possible.

How it stays honest:

- ``record`` starts the real example server, runs the operator's own ``probe.probe`` through a
  recording proxy in front of it (one exchange: ``server/discover`` at 2026-07-28, answered
  with JSON), keeps the exact request (request line + body) and the server's exact reply bytes
  (status line, headers, body), requires the probe's verdict on that reply to be ``healthy``,
  and stops the server.
- ``serve`` answers only a request whose request line and body are byte-for-byte the recorded
  ones with the recorded reply; anything else gets ``400`` (and is counted), so a probe that
  asks something else -- another path, another JSON-RPC id, another protocol version -- is
  judged on a refusal, never on a reply the real server might not have given. Headers are not
  compared (Host differs per pod address; the SDK server accepts any Host when bound to
  0.0.0.0). The replayed ``date`` header is the recording's.
- Each request is parsed (headers + ``Content-Length`` body; chunked bodies are refused with
  501) and answered in order on its own connection (keep-alive HTTP/1.1; the operator's probe
  opens a new connection per probe anyway); the connection closes when the client closes it.

What it costs (``bench/probe_cost.py --listener replay|sdk``: the listener process's CPU from
/proc utime+stime while the operator's ``probe.probe`` runs 2,000 probes against it, a new
connection per probe, concurrency 8; 2026-12-01, load ~3 on 2 shared cores; figures in
bench/results/probe-cost-listeners-2026-12-01.txt): the replay listener **~0.45 ms CPU per
request** (about 3/4 user, 1/4 kernel: accept, recv, send, close), the SDK example server
2.3-2.7 ms (5-6x). At 2,000 probes/s that is ~0.9 core for the replay listener versus ~5 cores
for the SDK server -- still a large share of a 2-core machine, which the results must be read
with (``bench/steady.py`` reports the listener's CPU next to the operator's). asyncio's
per-connection machinery is about half of it: a plain ``selectors`` loop measured 0.21 ms.

On SIGTERM ``serve`` prints one JSON line of counters (connections, requests answered with
the recording, requests refused as different) and exits.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

_MAX_HEAD = 64 * 1024
_REFUSED = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n"
_UNSUPPORTED = b"HTTP/1.1 501 Not Implemented\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True)
class Recording:
    """The operator's probe request (request line, body) and the real server's reply bytes."""

    request_line: bytes
    request_body: bytes
    reply: bytes

    def dump(self, path: Path) -> None:
        fields = {k: base64.b64encode(v).decode() for k, v in self.__dict__.items()}
        path.write_text(json.dumps(fields, indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Recording:
        fields = json.loads(path.read_text())
        return cls(**{k: base64.b64decode(v) for k, v in fields.items()})


def _content_length(head: bytes) -> int | None:
    """The body length a request head announces; ``None`` for a chunked or malformed one."""
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"transfer-encoding":
            return None
        if name == b"content-length":
            try:
                length = int(value.strip())
            except ValueError:
                return None
    return length if length >= 0 else None


def split_message(buf: bytearray) -> tuple[bytes, bytes] | Literal[False] | None:
    """Take one complete HTTP message (head, body) off the front of ``buf``.

    ``None``: incomplete, wait for more bytes. ``False``: not parseable here (chunked body,
    bad length, oversized head): answer 501 and close.
    """
    end = buf.find(b"\r\n\r\n")
    if end < 0:
        return False if len(buf) > _MAX_HEAD else None
    head = bytes(buf[:end])
    length = _content_length(head)
    if length is None:
        return False
    total = end + 4 + length
    if len(buf) < total:
        return None
    body = bytes(buf[end + 4 : total])
    del buf[:total]
    return head, body


@dataclass
class Counters:
    connections: int = 0
    requests: int = 0
    refused: int = 0


class _Replay(asyncio.Protocol):
    """One client connection: answer each complete request in order, on the same connection."""

    def __init__(self, recording: Recording, counters: Counters) -> None:
        self.recording = recording
        self.counters = counters
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.counters.connections += 1

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        self.buf += data
        while True:
            message = split_message(self.buf)
            if message is None:
                return
            if message is False:
                self.transport.write(_UNSUPPORTED)
                self.transport.close()
                return
            head, body = message
            line = head.split(b"\r\n", 1)[0]
            if line == self.recording.request_line and body == self.recording.request_body:
                self.transport.write(self.recording.reply)
                self.counters.requests += 1
            else:
                self.transport.write(_REFUSED)
                self.counters.refused += 1


async def serve(recording: Recording, host: str, port: int) -> Counters:
    """Answer on ``host:port`` until SIGTERM/SIGINT; return the counters."""
    counters = Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: _Replay(recording, counters), host, port, backlog=4096, reuse_address=True
    )
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"replay listener on {host}:{port}", flush=True)
    async with server:
        await stop.wait()
    return counters


# -- recording ---------------------------------------------------------------------------


async def _read_message(reader: asyncio.StreamReader) -> bytes:
    """One whole HTTP message (head + Content-Length body) as raw bytes."""
    buf = bytearray()
    while True:
        message = split_message(bytearray(buf))
        if message is False:
            raise ValueError("message not replayable (chunked or malformed)")
        if message is not None:
            head, body = message
            return head + b"\r\n\r\n" + body
        chunk = await reader.read(65536)
        if not chunk:
            raise ConnectionError("closed before a whole message arrived")
        buf += chunk


def _wait_listening(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(f"example server did not listen on {port} within {timeout:.0f} s")


async def record() -> Recording:
    """Start the real example server, pass one operator probe through a recording proxy,
    stop the server; the probe must judge the recorded reply healthy."""
    # Imported here: ``serve`` stays a small process (no httpx, no operator code loaded).
    from mcp_devcluster.stack import free_port
    from mcp_operator.health import probe

    port = free_port()
    argv = [sys.executable, "-m", "mcp_example_server", "--host", "127.0.0.1", "--port", str(port)]
    server = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seen: list[tuple[bytes, bytes]] = []

    async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await _read_message(reader)
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
        up_writer.write(request)
        await up_writer.drain()
        reply = await _read_message(up_reader)
        up_writer.close()
        seen.append((request, reply))
        writer.write(reply)
        await writer.drain()
        writer.close()

    try:
        await asyncio.to_thread(_wait_listening, port)
        front = await asyncio.start_server(proxy, "127.0.0.1", 0)
        front_port = front.sockets[0].getsockname()[1]
        client = probe.client_for(None)
        try:
            target = probe.ProbeTarget(url=f"http://127.0.0.1:{front_port}/mcp")
            result = await probe.probe(client, target)
        finally:
            client.close_idle()
            front.close()
    finally:
        server.terminate()
        server.wait(timeout=20)
    if result.outcome is not probe.Outcome.HEALTHY or len(seen) != 1:
        raise RuntimeError(
            f"recording not usable: {len(seen)} exchanges, verdict {result.outcome} "
            f"({result.detail}); the replay listener serves single-exchange probes only"
        )
    request, reply = seen[0]
    head, _, body = request.partition(b"\r\n\r\n")
    return Recording(head.split(b"\r\n", 1)[0], body, reply)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record", help="record the real server's reply into FILE")
    rec.add_argument("file", type=Path)
    srv = sub.add_parser("serve", help="serve the recording in FILE")
    srv.add_argument("file", type=Path)
    srv.add_argument("--host", default="0.0.0.0")
    srv.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.command == "record":
        recording = asyncio.run(record())
        recording.dump(args.file)
        print(recording.request_line.decode(), "->", recording.reply.split(b"\r\n", 1)[0].decode())
        return 0
    counters = asyncio.run(serve(Recording.load(args.file), args.host, args.port))
    print(json.dumps(counters.__dict__), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
