"""Pod IP allocation from a loopback CIDR.

All pod processes share the host network namespace; on Linux the whole of 127.0.0.0/8 is
routed to ``lo``, so giving each pod its own 127.x.y.z and binding to it is what keeps
ports apart. Addresses are handed out round-robin so a freed IP is not immediately
reused (EndpointSlices and clients may still point at it for a moment), and an address
on which some process already listens (another agent's pod, a leftover) is skipped:
several agents for several dev clusters may share one host.
"""

from __future__ import annotations

import ipaddress
import socket
import struct
import threading
from collections.abc import Callable
from pathlib import Path

_TCP_LISTEN = "0A"


def listening_addresses(proc_net: Path = Path("/proc/net/tcp")) -> set[str]:
    """IPv4 addresses with a TCP socket in LISTEN state on this host (from /proc/net/tcp)."""
    out: set[str] = set()
    try:
        lines = proc_net.read_text().splitlines()[1:]
    except OSError:
        return out
    for line in lines:
        fields = line.split()
        if len(fields) > 3 and fields[3] == _TCP_LISTEN:
            hex_ip = fields[1].split(":")[0]
            out.add(socket.inet_ntoa(struct.pack("<I", int(hex_ip, 16))))
    return out


class IpAllocator:
    """Thread-safe round-robin allocator over a CIDR, skipping .0 and .255 host octets."""

    def __init__(
        self,
        cidr: str,
        busy: Callable[[], set[str]] = listening_addresses,
        exclude: str | None = None,
    ) -> None:
        self._net = ipaddress.IPv4Network(cidr, strict=False)
        self._exclude = ipaddress.IPv4Network(exclude, strict=False) if exclude else None
        if not self._net.is_loopback:
            raise ValueError(f"pod CIDR {cidr} must be inside 127.0.0.0/8")
        self._first = int(self._net.network_address) + 1
        self._size = self._net.num_addresses - 2
        self._next = 0
        self._used: set[str] = set()
        self._lock = threading.Lock()
        self._busy = busy

    def allocate(self) -> str:
        """Return a free address; raise RuntimeError when the CIDR is exhausted."""
        busy = self._busy()
        with self._lock:
            for _ in range(self._size):
                candidate = ipaddress.IPv4Address(self._first + self._next)
                self._next = (self._next + 1) % self._size
                ip = str(candidate)
                taken = ip in self._used or ip in busy or self._excluded(candidate)
                if not taken and ip.rsplit(".", 1)[1] not in ("0", "255"):
                    self._used.add(ip)
                    return ip
        raise RuntimeError(f"pod CIDR {self._net} exhausted")

    def _excluded(self, ip: ipaddress.IPv4Address) -> bool:
        return self._exclude is not None and ip in self._exclude

    def reserve(self, ip: str) -> bool:
        """Keep a pod's existing IP (a pod's IP never changes) if it is loopback and free.

        It may lie outside our CIDR (the pod was run by an agent with another CIDR).
        """
        if not ipaddress.IPv4Address(ip).is_loopback or ip in self._busy():
            return False
        with self._lock:
            if ip in self._used:
                return False
            self._used.add(ip)
            return True

    def release(self, ip: str) -> None:
        """Return ``ip`` to the pool."""
        with self._lock:
            self._used.discard(ip)

    def in_use(self) -> set[str]:
        """A snapshot of the allocated addresses."""
        with self._lock:
            return set(self._used)
