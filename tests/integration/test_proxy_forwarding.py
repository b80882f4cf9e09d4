"""The kube-proxy stand-in's data path on real loopback sockets (no API server): new
connections go to ready backends only, an empty table resets at once, and an existing
connection keeps its backend when the table changes (conntrack)."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator

import pytest

from mcp_devcluster.nodeagent.ipam import IpAllocator
from mcp_devcluster.nodeagent.proxy import Backend, Forwarder, ServicePort

KEY = "ns/weather"


class Named(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


def backend_server(ip: str) -> Named:
    """Answers every line with ``<ip>:<line>``: the reply names the backend."""

    class Handler(socketserver.StreamRequestHandler):
        def handle(self) -> None:
            for line in self.rfile:
                self.wfile.write(f"{ip}:{line.decode().strip()}\n".encode())

    server = Named((ip, 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def forwarder() -> Iterator[Forwarder]:
    fwd = Forwarder(IpAllocator("127.203.255.0/24"))
    fwd.start()
    try:
        yield fwd
    finally:
        fwd.stop()


def ask(conn: socket.socket, text: str) -> str:
    conn.sendall(f"{text}\n".encode())
    return conn.makefile().readline().strip()


def connect(address: tuple[str, int]) -> socket.socket:
    return socket.create_connection(address, timeout=3)


def refused(address: tuple[str, int]) -> None:
    """Raise OSError if the proxy refuses/resets the connection (before any reply)."""
    with connect(address) as conn:
        conn.sendall(b"x\n")
        if not conn.recv(1):
            raise ConnectionResetError("closed without a reply")


def wait_table(fwd: Forwarder, backends: list[Backend]) -> None:
    deadline = time.monotonic() + 2
    while fwd.backends(KEY, "mcp") != backends:
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_forwards_new_connections_to_ready_backends_only(forwarder: Forwarder) -> None:
    servers = [backend_server(f"127.203.0.{i}") for i in (1, 2)]
    try:
        port = servers[0].server_address[1]
        ip = forwarder.ensure(KEY, [ServicePort("mcp", port)])
        assert ip is not None and ip.startswith("127.203.255.")
        address = (ip, port)

        # No ready endpoint: the connection is reset at once, not queued.
        started = time.monotonic()
        with pytest.raises(OSError):
            refused(address)
        assert time.monotonic() - started < 1

        b1 = Backend("127.203.0.1", port)
        b2 = Backend("127.203.0.2", servers[1].server_address[1])
        forwarder.set_backends(KEY, "mcp", [b1, b2])
        wait_table(forwarder, [b1, b2])
        seen = set()
        for i in range(4):
            with connect(address) as conn:
                seen.add(ask(conn, str(i)).split(":")[0])
        assert seen == {"127.203.0.1", "127.203.0.2"}  # round-robin over both

        # Conntrack: an open connection keeps its backend after that backend leaves.
        kept = connect(address)
        first = ask(kept, "a").split(":")[0]
        other = b2 if first == b1.ip else b1
        forwarder.set_backends(KEY, "mcp", [other])
        wait_table(forwarder, [other])
        assert ask(kept, "b").split(":")[0] == first
        kept.close()
        for i in range(3):
            with connect(address) as conn:
                assert ask(conn, str(i)).split(":")[0] == other.ip
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def test_a_dead_backend_resets_the_client_and_removal_frees_the_address(
    forwarder: Forwarder,
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.203.0.5", 0))
        dead_port = probe.getsockname()[1]  # bound, never listening: connect is refused
        ip = forwarder.ensure(KEY, [ServicePort("mcp", dead_port)])
        assert ip is not None
        forwarder.set_backends(KEY, "mcp", [Backend("127.203.0.5", dead_port)])
        wait_table(forwarder, [Backend("127.203.0.5", dead_port)])
        with pytest.raises(OSError):
            refused((ip, dead_port))
    forwarder.remove(KEY)
    with pytest.raises(ConnectionRefusedError):
        connect((ip, dead_port)).close()


def test_a_changed_service_port_keeps_the_old_one_for_a_grace(forwarder: Forwarder) -> None:
    server = backend_server("127.203.0.7")
    try:
        backend = Backend("127.203.0.7", server.server_address[1])
        with socket.socket() as spare:  # two free port numbers on the service address
            spare.bind(("127.0.0.1", 0))
            old_port = spare.getsockname()[1]
        ip = forwarder.ensure(KEY, [ServicePort("mcp", old_port)])
        assert ip is not None
        forwarder.set_backends(KEY, "mcp", [backend])
        wait_table(forwarder, [backend])
        new_port = old_port + 1
        assert forwarder.ensure(KEY, [ServicePort("mcp", new_port)]) == ip  # same address
        for port in (new_port, old_port):  # clients still on the old port are served
            with connect((ip, port)) as conn:
                assert ask(conn, "hi") == "127.203.0.7:hi"
    finally:
        server.shutdown()
        server.server_close()
