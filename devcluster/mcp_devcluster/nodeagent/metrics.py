"""Per-container series a real node would export, for the pods this agent runs.

A kubelet's cAdvisor exports ``container_memory_working_set_bytes`` and kube-state-metrics
exports ``kube_pod_container_resource_limits``; the operator's ``MCPServerMemoryHigh`` alert
divides one by the other. Here there are no cgroups: a container is a process group, and its
working set is taken as the resident set (``VmRSS``) of every process in the group -- what a
cgroup's working set mostly is (anonymous memory plus the active page cache; the RSS counts
mapped file pages too, which is close enough for an alert threshold). The limit is the
container's ``resources.limits.memory`` as the pod spec says (the agent does not enforce it).

Served on ``127.0.0.1:PORT/metrics`` (``--metrics-port``) in Prometheus' text format, with
the labels the real exporters use (``namespace``, ``pod``, ``container``; the limit also
``resource="memory"``, ``unit="byte"``, ``node``).
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

log = logging.getLogger("nodeagent.metrics")

_SUFFIX = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|k|M|G|T)?$")


def quantity_bytes(text: str) -> int | None:
    """A memory quantity (``256Mi``, ``1G``, ``1048576``) in bytes; None if not one."""
    match = _QUANTITY.match(str(text).strip())
    if match is None:
        return None
    return int(float(match.group(1)) * _SUFFIX[match.group(2) or ""])


def group_rss_bytes(pgid: int, proc: Path = Path("/proc")) -> int:
    """The resident set of every process in process group ``pgid`` (a container)."""
    total = 0
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            # pid (comm) state ppid pgrp ...: comm may hold spaces, so split after ')'.
            if int(stat.rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, IndexError, ValueError):
            continue  # exited meanwhile
    return total


@dataclass(frozen=True)
class ContainerSample:
    namespace: str
    pod: str
    container: str
    node: str
    pid: int | None  # the container's process (its group leader), None when not running
    memory_limit: str | None  # resources.limits.memory as written


def _labels(**pairs: str) -> str:
    def quote(value: str) -> str:
        return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return "{" + ",".join(f'{k}="{quote(v)}"' for k, v in pairs.items()) + "}"


def exposition(
    samples: Iterable[ContainerSample], rss: Callable[[int], int] = group_rss_bytes
) -> str:
    """The two families in Prometheus' text format."""
    working, limits = [], []
    for s in samples:
        who = {"namespace": s.namespace, "pod": s.pod, "container": s.container}
        if s.pid is not None:
            working.append(f"container_memory_working_set_bytes{_labels(**who)} {rss(s.pid)}")
        limit = quantity_bytes(s.memory_limit) if s.memory_limit else None
        if limit is not None:
            extra = {"resource": "memory", "unit": "byte", "node": s.node}
            limits.append(f"kube_pod_container_resource_limits{_labels(**who, **extra)} {limit}")
    return "\n".join(
        [
            "# HELP container_memory_working_set_bytes Resident set of the container's "
            "processes (cAdvisor's working set, as this agent measures it).",
            "# TYPE container_memory_working_set_bytes gauge",
            *working,
            "# HELP kube_pod_container_resource_limits The container's resource limits "
            "(kube-state-metrics).",
            "# TYPE kube_pod_container_resource_limits gauge",
            *limits,
            "",
        ]
    )


class MetricsServer:
    """``GET /metrics`` on 127.0.0.1:``port`` from ``samples()``, in a daemon thread."""

    def __init__(self, port: int, samples: Callable[[], list[ContainerSample]]) -> None:
        collect = samples

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.split("?", 1)[0] != "/metrics":
                    self.send_error(404)
                    return
                body = exposition(collect()).encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                log.debug(format, *args)

        self._server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
