"""Kubelet-style probes (httpGet, tcpSocket, exec) and their threshold bookkeeping.

Probes run from the host, against the pod's own (local) IP. ``exec`` commands run as
local processes with the container's environment; unlike the kubelet, ``$(VAR)`` is
expanded in them so a probe can reach ``$(POD_IP)`` (there is no shared network
namespace to make ``localhost`` mean the pod). gRPC probes are not supported and fail.
"""

from __future__ import annotations

import http.client
import socket
import ssl
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .envvars import expand


@dataclass(frozen=True)
class ProbeContext:
    """What a probe needs to know about its container."""

    pod_ip: str
    ports: Mapping[str, int]
    env: Mapping[str, str]
    cwd: str
    started: float = 0.0  # which process run this context belongs to


def _port(value: Any, ctx: ProbeContext) -> int:
    """A probe port is a number or the name of a container port."""
    if isinstance(value, int) or (isinstance(value, str) and value.isdigit()):
        return int(value)
    if value in ctx.ports:
        return ctx.ports[value]
    raise ValueError(f"unknown named port {value!r}")


def http_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    """GET; 200-399 is success (redirects are not followed, as a 3xx already counts)."""
    host = spec.get("host") or ctx.pod_ip
    port = _port(spec.get("port"), ctx)
    path = spec.get("path") or "/"
    headers = {h["name"]: h["value"] for h in spec.get("httpHeaders") or []}
    headers.setdefault("User-Agent", "kube-probe/nodeagent")
    conn: http.client.HTTPConnection
    if str(spec.get("scheme", "HTTP")).upper() == "HTTPS":
        context = ssl._create_unverified_context()  # the kubelet does not verify either
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=context)
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers=headers)
        status = conn.getresponse().status
    finally:
        conn.close()
    ok = 200 <= status < 400
    return ok, "" if ok else f"HTTP probe failed with statuscode: {status}"


def tcp_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    """Success when a TCP connection can be opened."""
    host = spec.get("host") or ctx.pod_ip
    with socket.create_connection((host, _port(spec.get("port"), ctx)), timeout=timeout):
        return True, ""


def exec_probe(spec: Mapping[str, Any], ctx: ProbeContext, timeout: float) -> tuple[bool, str]:
    """Run the command locally; exit status 0 is success."""
    argv = [expand(a, ctx.env) for a in spec.get("command") or []]
    done = subprocess.run(
        argv, env=dict(ctx.env), cwd=ctx.cwd, capture_output=True, timeout=timeout, check=False
    )
    out = (done.stdout + done.stderr).decode("utf-8", "replace").strip()[:200]
    return done.returncode == 0, "" if done.returncode == 0 else f"exit {done.returncode}: {out}"


def run_probe(probe: Mapping[str, Any], ctx: ProbeContext) -> tuple[bool, str]:
    """Run one probe attempt; any exception is a failure with its message."""
    timeout = float(probe.get("timeoutSeconds") or 1)
    try:
        if "httpGet" in probe:
            return http_probe(probe["httpGet"], ctx, timeout)
        if "tcpSocket" in probe:
            return tcp_probe(probe["tcpSocket"], ctx, timeout)
        if "exec" in probe:
            return exec_probe(probe["exec"], ctx, timeout)
        return False, "unsupported probe handler (only httpGet, tcpSocket, exec)"
    except Exception as exc:  # a probe failure, whatever the cause
        return False, f"{type(exc).__name__}: {exc}"


@dataclass
class ProbeTracker:
    """Thresholds and schedule of one probe of one container run.

    ``result`` starts as ``initial`` (False for readiness/startup, True for liveness, as in
    the kubelet) and flips only after successThreshold/failureThreshold consecutive results.
    """

    probe: Mapping[str, Any]
    started_at: float
    initial: bool
    result: bool = field(init=False)
    successes: int = 0
    failures: int = 0
    next_at: float = field(init=False)
    message: str = ""

    def __post_init__(self) -> None:
        self.result = self.initial
        self.next_at = self.started_at + float(self.probe.get("initialDelaySeconds") or 0)

    @property
    def period(self) -> float:
        return float(self.probe.get("periodSeconds") or 10)

    def due(self, now: float) -> bool:
        return now >= self.next_at

    def record(self, ok: bool, message: str, now: float) -> bool:
        """Account one attempt; return True when ``result`` changed."""
        self.next_at = now + self.period
        self.message = message
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            flip = not self.result and self.successes >= int(
                self.probe.get("successThreshold") or 1
            )
        else:
            self.successes, self.failures = 0, self.failures + 1
            flip = self.result and self.failures >= int(self.probe.get("failureThreshold") or 3)
        if flip:
            self.result = not self.result
        return flip

    def failed_out(self) -> bool:
        """Startup/liveness semantics: failureThreshold consecutive failures reached."""
        return self.failures >= int(self.probe.get("failureThreshold") or 3)
