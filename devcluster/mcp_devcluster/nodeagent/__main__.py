"""CLI: ``python -m mcp_devcluster.nodeagent --kubeconfig PATH [...]``, until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

from .agent import AgentConfig, NodeAgent
from .container import BackoffPolicy
from .images import ImageMap
from .ipam import DEFAULT_POD_CIDR, LocalRangeError
from .node import AgentConflict


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m mcp_devcluster.nodeagent", description=__doc__)
    p.add_argument("--kubeconfig", required=True)
    p.add_argument("--node-name", default="mcp-local", help="the first node's name")
    p.add_argument(
        "--nodes", type=int, default=3, help="Nodes to register: NAME, NAME-2, ... (default 3)"
    )
    p.add_argument(
        "--zones", type=int, default=2, help="zones the nodes are spread over (default 2)"
    )
    p.add_argument(
        "--binder",
        choices=["auto", "agent", "scheduler"],
        default="auto",
        help="who binds pods: kube-scheduler, this agent, or auto (agent on servers < 1.24)",
    )
    p.add_argument(
        "--pod-cidr",
        default=DEFAULT_POD_CIDR,
        help=f"pod IPs (default {DEFAULT_POD_CIDR}; made local with `ip route add local`)",
    )
    p.add_argument(
        "--service-cidr",
        help="range of Service proxy addresses (default: pod CIDR's last /24)",
    )
    p.add_argument("--no-proxy", action="store_true", help="do not proxy Services")
    p.add_argument("--image-map", type=Path, help="YAML/JSON rules tried before the built-in ones")
    p.add_argument(
        "--state-dir",
        type=Path,
        help="pod dirs and logs (default ~/.cache/mcp-operator/nodeagent-NODE)",
    )
    p.add_argument("--backoff-base", type=float, default=10.0, help="crash back-off base seconds")
    p.add_argument("--backoff-max", type=float, default=300.0, help="crash back-off cap seconds")
    p.add_argument(
        "--stop-grace", type=float, default=2.0, help="SIGTERM→SIGKILL seconds on agent stop"
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="serve per-container memory series (cAdvisor/kube-state-metrics style) on "
        "127.0.0.1:PORT/metrics; 0: off",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    config = AgentConfig(
        kubeconfig=args.kubeconfig,
        node_name=args.node_name,
        pod_cidr=args.pod_cidr,
        service_cidr=args.service_cidr,
        proxy=not args.no_proxy,
        image_map=ImageMap.load(args.image_map),
        state_dir=args.state_dir,
        backoff=BackoffPolicy(args.backoff_base, args.backoff_max),
        stop_grace=args.stop_grace,
        nodes=args.nodes,
        zones=args.zones,
        binder=args.binder,
        metrics_port=args.metrics_port,
    )
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    agent = NodeAgent(config)
    try:
        agent.start()
    except (AgentConflict, LocalRangeError) as exc:
        print(f"nodeagent: {exc}", file=sys.stderr)
        agent.stop()
        return 2
    print(f"nodeagent {config.node_name} ready", file=sys.stderr, flush=True)
    try:
        done.wait()
    finally:
        agent.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
