"""The ``mcp-operator`` command: render, crd, manifests, version, token, run."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from mcp_operator import __version__
from mcp_operator.api.crd import crd_yaml
from mcp_operator.api.manifests import Entry, InputError, entries, load_documents, name_of
from mcp_operator.api.models import MCPServer
from mcp_operator.api.validation import InvalidSpec, Problem, parse_server
from mcp_operator.render import RenderContext, alerts, render
from mcp_operator.render.context import CURRENT_API_VERSIONS, Capabilities


class _NoAliasDumper(yaml.SafeDumper):
    """No ``&id001`` anchors: each object printed in full, as the operator applies it."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_yaml(objects: list[dict[str, Any]]) -> str:
    return yaml.dump_all(objects, Dumper=_NoAliasDumper, sort_keys=False)


def _read(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    with open(path, "rb") as f:
        return f.read()


def _owner_uid(server: MCPServer, args: argparse.Namespace) -> str | None:
    """The uid the operator would put in owner references: the object's own when it came
    from the cluster, else a visible placeholder (the API server assigns it on create)."""
    if args.no_owner_refs:
        return None
    return server.metadata.uid or f"<uid of MCPServer {server.metadata.name}>"


def _with_namespace(document: Any, namespace: str | None) -> Any:
    """``-n``: set the namespace of documents that have none; a different one is an error."""
    if namespace is None or not isinstance(document, dict):
        return document
    meta = document.get("metadata")
    if not isinstance(meta, dict):
        return document
    have = meta.get("namespace")
    if have is not None and have != namespace:
        raise InvalidSpec(
            [Problem("metadata.namespace", f"is {have!r}, but -n asks for {namespace!r}")]
        )
    return {**document, "metadata": {**meta, "namespace": namespace}}


def _render_entry(entry: Entry, args: argparse.Namespace) -> list[dict[str, Any]]:
    if entry.problem:
        path, _, message = entry.problem.partition(": ")
        raise InvalidSpec([Problem(path, message)])
    server = parse_server(_with_namespace(entry.document, args.namespace))
    caps = Capabilities(CURRENT_API_VERSIONS | frozenset(args.api_version))
    ctx = RenderContext(owner_uid=_owner_uid(server, args), capabilities=caps)
    rule = alerts.prometheus_rule(server, ctx)
    return render(server, ctx) + ([rule] if rule else [])


def cmd_render(args: argparse.Namespace) -> int:
    try:
        documents = load_documents(_read(args.file))
    except InputError as exc:
        print(f"{args.file}: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"{args.file}: cannot read: {exc.strerror or exc}", file=sys.stderr)
        return 1
    objects: list[dict[str, Any]] = []
    failed = False
    for entry in entries(documents):
        try:
            objects += _render_entry(entry, args)
        except InvalidSpec as exc:
            failed = True
            where = f"{args.file}: {entry.label} ({name_of(entry.document)})"
            for problem in exc.problems:
                print(f"{where}: {problem}", file=sys.stderr)
        except Exception as exc:  # a bug, but the user still gets one line, not a traceback
            failed = True
            print(f"{args.file}: {entry.label}: internal error: {exc!r}", file=sys.stderr)
    if failed:
        return 1
    if args.output == "json":
        print(json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2))
    else:
        print(dump_yaml(objects), end="")
    return 0


def cmd_crd(_: argparse.Namespace) -> int:
    print(crd_yaml(), end="")
    return 0


def cmd_manifests(args: argparse.Namespace) -> int:
    from mcp_operator.install import manifests_yaml, write_repo_files

    if args.write:
        for path in write_repo_files(Path(args.write)):
            print(path)
    else:
        print(manifests_yaml(), end="")
    return 0


def cmd_version(_: argparse.Namespace) -> int:
    print(__version__)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from mcp_operator.leader import ElectionConfig
    from mcp_operator.runner import RunOptions, run_operator

    election = ElectionConfig(args.lease_duration, args.renew_deadline, args.retry_period)
    problems = election.problems()
    for problem in problems:
        print(f"mcp-operator run: {problem}", file=sys.stderr)
    if problems:
        return 2
    return run_operator(
        RunOptions(
            namespaces=args.namespace,
            all_namespaces=args.all_namespaces,
            metrics_port=args.metrics_port,
            liveness_port=args.liveness_port,
            discovery_interval=args.discovery_interval,
            leader_lease=args.leader_lease,
            election=election,
            kubeconfig=args.kubeconfig,
            verbose=args.verbose,
        )
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mcp-operator", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "render",
        help="print the objects the operator would create",
        description="Validate MCPServer manifests (every problem, by field path; exit 1) and "
        "print the child objects exactly as the operator applies them.",
    )
    p.add_argument("-f", "--file", required=True, help="YAML file of MCPServers ('-' = stdin)")
    p.add_argument("-o", "--output", choices=["yaml", "json"], default="yaml")
    p.add_argument(
        "-n",
        "--namespace",
        default=None,
        help="namespace for documents without one (absent stays absent otherwise)",
    )
    p.add_argument(
        "--no-owner-refs",
        action="store_true",
        help="omit the owner references the operator sets (for GitOps diffs)",
    )
    p.add_argument(
        "--api-version",
        action="append",
        default=[],
        metavar="GROUP/VERSION",
        help="an API the target cluster serves besides the built-in ones, as the operator "
        "finds by discovery (monitoring.coreos.com/v1: the server's PrometheusRule too)",
    )
    p.set_defaults(func=cmd_render)
    sub.add_parser("crd", help="print the generated CRD").set_defaults(func=cmd_crd)
    sub.add_parser("version", help="print the version").set_defaults(func=cmd_version)
    p = sub.add_parser("manifests", help="print the operator's install manifests")
    p.add_argument(
        "--write",
        metavar="ROOT",
        help="write every generated install file (manifests/, chart data) under ROOT instead",
    )
    p.set_defaults(func=cmd_manifests)
    from mcp_operator.keys.cli import add_parser as add_token_parser

    add_token_parser(sub)
    p = sub.add_parser("run", help="run the operator")
    p.add_argument("-n", "--namespace", action="append", default=[], help="watch this namespace")
    p.add_argument("-A", "--all-namespaces", action="store_true")
    p.add_argument("--metrics-port", type=int, default=9090)
    p.add_argument("--liveness-port", type=int, default=8081)
    p.add_argument(
        "--discovery-interval",
        type=float,
        default=60.0,
        metavar="S",
        help="re-read the served APIs this often: a PrometheusRule CRD installed later is "
        "used without a restart (default 60)",
    )
    p.add_argument(
        "--leader-lease",
        default=None,
        metavar="NAME",
        help="run with leader election on this Lease in $POD_NAMESPACE (for several replicas)",
    )
    p.add_argument(
        "--lease-duration",
        type=float,
        default=15.0,
        metavar="S",
        help="a candidate takes the lease after seeing it unrenewed this long (default 15)",
    )
    p.add_argument(
        "--renew-deadline",
        type=float,
        default=10.0,
        metavar="S",
        help="the leader stops acting when it could not renew for this long (default 10)",
    )
    p.add_argument(
        "--retry-period",
        type=float,
        default=2.0,
        metavar="S",
        help="how often candidates try and the leader renews (default 2)",
    )
    p.add_argument(
        "--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG, in-cluster)"
    )
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=cmd_run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = int(args.func(args))
        sys.stdout.flush()
    except BrokenPipeError:
        # `render -o json | head`: the reader left; that is not an error worth a traceback.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, as a shell reports it
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
