"""Pod IP allocation from a locally routed CIDR.

All pod processes share the host network namespace; giving each pod its own address and
binding to it is what keeps ports apart. The addresses must be *local* (bindable) but not
loopback: a current API server refuses EndpointSlice addresses in 127.0.0.0/8 ("may not be in
the loopback range"), so Services would never get endpoints. ``ensure_local_range`` makes a
private range local with one ``ip route add local CIDR dev lo`` (Linux "AnyIP": every address
of the range is bindable and reachable from this host, nothing else changes); pods get
addresses from ``DEV_POD_RANGE`` (the conventional pod range 10.244.0.0/16), and one route
for the whole range serves every agent on the host. A local route hijacks every address of
its range, so it is never added over a range this host already reaches otherwise (a
nameserver, an address, a gateway or a route in it: e.g. a CI runner whose own network is
10.244.x); the agent then stops with the reason. It needs root (CAP_NET_ADMIN); without it a
127.x pod CIDR still runs pods, but Services get no endpoints on a current control plane.

Addresses are handed out round-robin so a freed IP is not immediately reused (EndpointSlices
and clients may still point at it for a moment), and an address on which some process already
listens (another agent's pod, a leftover) is skipped: several agents for several dev clusters
may share one host.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import random
import re
import shutil
import socket
import struct
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("nodeagent.ipam")

_TCP_LISTEN = "0A"
#: The private range the harness makes local once per host; pod CIDRs are carved from it.
DEV_POD_RANGE = "10.244.0.0/16"
#: The node agent's default pod CIDR (all of ``DEV_POD_RANGE``).
DEFAULT_POD_CIDR = DEV_POD_RANGE
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?:/(\d{1,2}))?(?![\d.])")


class LocalRangeError(RuntimeError):
    """The pod CIDR is not local and could not be made local (not root, no ``ip``)."""


def is_local_address(ip: str) -> bool:
    """True when this host can bind ``ip`` (a loopback address, or in a local route)."""
    with contextlib.suppress(OSError), socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((ip, 0))
        return True
    return False


def local_route_for(cidr: str) -> str:
    """The range to route locally for pod CIDR ``cidr``: ``DEV_POD_RANGE`` when it holds it
    (one route serves every agent on the host), else ``cidr`` itself."""
    net = ipaddress.IPv4Network(cidr, strict=False)
    dev = ipaddress.IPv4Network(DEV_POD_RANGE)
    return DEV_POD_RANGE if net.subnet_of(dev) else str(net)


def random_pod_cidr() -> str:
    """A random /22 of ``DEV_POD_RANGE`` (64 choices, 768 pod IPs each): agents of several
    engineers' dev clusters may share this host, and the allocator skips only *listening*
    addresses."""
    base = ipaddress.IPv4Network(DEV_POD_RANGE).network_address
    return f"{base + (random.randrange(64) << 10)}/22"


def _in_use_networks(ip_cmd: str) -> list[ipaddress.IPv4Network]:
    """What this host already reaches: its nameservers, addresses, gateways and routes
    (``/etc/resolv.conf``, ``ip -4 addr``, ``ip -4 route``; the default route's 0.0.0.0/0
    itself is skipped, its gateway is not)."""
    texts = []
    with contextlib.suppress(OSError):
        texts.append(
            "\n".join(
                line
                for line in Path("/etc/resolv.conf").read_text().splitlines()
                if line.split()[:1] == ["nameserver"]
            )
        )
    for args in (["-4", "-o", "addr", "show"], ["-4", "route", "show", "table", "all"]):
        done = subprocess.run([ip_cmd, *args], capture_output=True, text=True, check=False)
        texts.append("\n".join(ln for ln in done.stdout.splitlines() if "dev lo" not in ln))
    found = []
    for text in texts:
        for addr, prefix in _IPV4.findall(text):
            with contextlib.suppress(ValueError):
                net = ipaddress.IPv4Network(f"{addr}/{prefix or 32}", strict=False)
                if net.prefixlen > 0:
                    found.append(net)
    return found


def ensure_local_range(cidr: str) -> None:
    """Make every address of pod CIDR ``cidr`` bindable on this host, or raise.

    A loopback CIDR is local already. Otherwise, unless an earlier agent did it, add
    ``ip route add local RANGE dev lo`` (table local; left in place: other agents on the host
    may use it, and it only makes otherwise unused private addresses answer locally).
    """
    net = ipaddress.IPv4Network(cidr, strict=False)
    probe = str(net.network_address + 1)
    if net.is_loopback or is_local_address(probe):
        return
    route = local_route_for(cidr)
    ip_cmd = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip") if Path(p).exists()), None
    )
    if ip_cmd is None:
        raise LocalRangeError(
            f"pod CIDR {cidr} is not local and the `ip` command (iproute2) is missing: "
            f"install it, or run `ip route add local {route} dev lo` as root"
        )
    clash = [n for n in _in_use_networks(ip_cmd) if n.overlaps(ipaddress.IPv4Network(route))]
    if clash:
        raise LocalRangeError(
            f"pod CIDR {cidr}: this host already uses {', '.join(map(str, clash))}, inside "
            f"{route}; making {route} local would cut it off. Pass another --pod-cidr "
            "(a private range this host does not use)"
        )
    done = subprocess.run(
        [ip_cmd, "route", "add", "local", route, "dev", "lo"],
        capture_output=True,
        text=True,
        check=False,
    )
    if not is_local_address(probe):
        raise LocalRangeError(
            f"pod CIDR {cidr} is not local and `ip route add local {route} dev lo` failed "
            f"({done.stderr.strip() or done.returncode}): run it as root once, or give the "
            "agent a 127.x --pod-cidr (pods run, but a current API server refuses loopback "
            "EndpointSlice addresses, so Services get no endpoints)"
        )
    log.info("made %s local (ip route add local %s dev lo)", cidr, route)


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
        """Keep a pod's existing IP (a pod's IP never changes) if it is local and free.

        It may lie outside our CIDR (the pod was run by an agent with another CIDR).
        """
        if not is_local_address(ip) or ip in self._busy():
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
