"""The ``mcp-operator`` command: render, crd, version, run."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from mcp_operator import __version__
from mcp_operator.api.crd import crd_yaml
from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.render import render


def _read_documents(path: str) -> list[Any]:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()  # noqa: SIM115
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def cmd_render(args: argparse.Namespace) -> int:
    try:
        documents = _read_documents(args.file)
    except (OSError, yaml.YAMLError) as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 2
    objects: list[dict[str, Any]] = []
    failed = False
    for index, doc in enumerate(documents):
        try:
            objects += render(parse_server(doc))
        except InvalidSpec as exc:
            failed = True
            name = (doc.get("metadata") or {}).get("name", "?") if isinstance(doc, dict) else "?"
            for problem in exc.problems:
                print(f"{args.file}: document {index} ({name}): {problem}", file=sys.stderr)
    if failed:
        return 1
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        print(yaml.safe_dump_all(objects, sort_keys=False), end="")
    return 0


def cmd_crd(_: argparse.Namespace) -> int:
    print(crd_yaml(), end="")
    return 0


def cmd_manifests(_: argparse.Namespace) -> int:
    from mcp_operator.install import manifests_yaml

    print(manifests_yaml(), end="")
    return 0


def cmd_version(_: argparse.Namespace) -> int:
    print(__version__)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mcp_operator.runner import run_operator

    return run_operator(
        namespaces=args.namespace,
        all_namespaces=args.all_namespaces,
        metrics_port=args.metrics_port,
        liveness_port=args.liveness_port,
        leader_lease=args.leader_lease,
        verbose=args.verbose,
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="print the objects the operator would create")
    p.add_argument("-f", "--file", required=True, help="YAML file of MCPServers ('-' = stdin)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p.set_defaults(func=cmd_render)
    sub.add_parser("crd", help="print the generated CRD").set_defaults(func=cmd_crd)
    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    sub.add_parser("manifests", help="print the operator's install manifests").set_defaults(
        func=cmd_manifests
    )
    p = sub.add_parser("run", help="run the operator")
    p.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("--metrics-port", type=int, default=9090)
    p.add_argument("--liveness-port", type=int, default=8081)
    p.add_argument(
        "--leader-lease",
        default=None,
        metavar="NAME",
        help="run with leader election on this Lease (for several replicas)",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
