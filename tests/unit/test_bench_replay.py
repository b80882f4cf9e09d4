"""The steady bench's replay listener answers like HTTP/1.1 keep-alive, and only the
recorded request: a bench that replays a reply to a different question would report pods
healthy that the real server would not have answered."""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

BENCH = Path(__file__).parents[2] / "bench" / "replay.py"


def _replay() -> ModuleType:
    spec = importlib.util.spec_from_file_location("bench_replay", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_replay"] = module
    spec.loader.exec_module(module)
    return module


replay = _replay()
BODY = b'{"jsonrpc": "2.0", "id": 1, "method": "server/discover"}'
REPLY = b'HTTP/1.1 200 OK\r\ncontent-length: 11\r\ncontent-type: application/json\r\n\r\n{"id": 1 }'
RECORDING = replay.Recording(b"POST /mcp HTTP/1.1", BODY, REPLY)


def request(body: bytes = BODY, path: str = "/mcp") -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: 10.244.1.1:8080\r\nContent-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + body


async def _exchange(chunks: list[bytes], replies: int) -> tuple[bytes, object]:
    counters = replay.Counters()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: replay._Replay(RECORDING, counters), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for chunk in chunks:  # split anywhere, as TCP may deliver it
        writer.write(chunk)
        await writer.drain()
        await asyncio.sleep(0.01)
    got = b""
    while got.count(b"HTTP/1.1 ") < replies:
        got += await asyncio.wait_for(reader.read(65536), 5)
    writer.close()
    server.close()
    return got, counters


def test_each_request_on_one_connection_gets_the_recorded_reply() -> None:
    raw = request() + request()
    got, counters = asyncio.run(_exchange([raw[:20], raw[20:90], raw[90:]], replies=2))
    assert got == REPLY + REPLY
    assert counters == replay.Counters(connections=1, requests=2, refused=0)


def test_a_different_request_is_refused_not_replayed() -> None:
    other_id = BODY.replace(b'"id": 1', b'"id": 2')
    raw = request(other_id) + request(path="/other") + request()
    got, counters = asyncio.run(_exchange([raw], replies=3))
    assert got.startswith(b"HTTP/1.1 400") and got.endswith(REPLY)
    assert counters == replay.Counters(connections=1, requests=1, refused=2)


def test_split_message_waits_for_the_whole_body() -> None:
    buf = bytearray(request()[:-5])
    assert replay.split_message(buf) is None
    buf += request()[-5:]
    assert replay.split_message(buf) == (request().split(b"\r\n\r\n")[0], BODY)
    assert buf == b""
    assert (
        replay.split_message(bytearray(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"))
        is False
    )
