"""Chaos: 20 MCPServers created, edited, deleted and re-created while the operator is
kill -9'd at random moments (≥ 10 times, restarted each time). After the last restart
every object converges: ``Reconciled=True`` for its current generation and exactly the
children the renderer wants, each carrying exactly one controller ownerReference to its
live owner; no orphans, no duplicates, no stale spec.

No node agent: pods stay Pending (cold backups and small replicas keep them few). Failover
is disabled so the desired set depends only on the spec, not on probe verdicts.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from mcp_operator.api.validation import parse_server
from mcp_operator.reconcile.children import comparable, is_applied
from mcp_operator.render import Capabilities, RenderContext, render
from tests.e2e import ops
from tests.e2e.conftest import get_json
from tests.e2e.ops import Kubectl, others_paused

crd_and_rbac = ops.crd_and_rbac  # fixtures

pytestmark = pytest.mark.e2e

COUNT = 20
KILLS = 12
CHILD_KINDS = "deployments,services,serviceaccounts,poddisruptionbudgets"
Obj = dict[str, Any]


@pytest.fixture
def exclusive() -> Iterator[None]:
    with others_paused():
        yield


def apply_all(kubectl: Kubectl, objs: list[Obj]) -> None:
    if objs:
        kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all(objs))


def random_spec(rng: random.Random) -> Obj:
    spec: Obj = {
        "primary": {"replicas": rng.choice([1, 1, 2])},
        "failover": {"enabled": False},
        # Never bound, even if a node agent runs in this session: pods stay Pending.
        "pod": {"nodeSelector": {"mcp-operator.dev/test": "unschedulable"}},
    }
    backup = rng.choice(["off", "cold", "cold", "hot"])
    if backup == "off":
        spec["backup"] = {"enabled": False}
    else:
        spec["backup"] = {"standby": backup, "replicas": rng.choice([1, 2])}
    if rng.random() < 0.5:
        spec["env"] = [{"name": "CHAOS", "value": str(rng.randint(0, 10**6))}]
    return spec


def expected_children(server_obj: Obj, caps: Capabilities) -> dict[tuple[str, str], Obj]:
    server = parse_server(server_obj)
    ctx = RenderContext(capabilities=caps, owner_uid=server_obj["metadata"]["uid"])
    return {(d["kind"], d["metadata"]["name"]): d for d in render(server, ctx)}


def first_difference(desired: Any, live: Any, path: str = "") -> str:
    """Where ``live`` first fails :func:`is_applied` for ``desired`` (for the failure message)."""
    if isinstance(desired, dict) and isinstance(live, dict):
        for k, v in desired.items():
            if k not in live:
                return f"{path}.{k}: missing"
            if not is_applied(v, live[k]):
                return first_difference(v, live[k], f"{path}.{k}")
    if isinstance(desired, list) and isinstance(live, list) and len(desired) == len(live):
        for i, (d, v) in enumerate(zip(desired, live, strict=True)):
            if not is_applied(d, v):
                return first_difference(d, v, f"{path}[{i}]")
    return f"{path}: want {desired!r}, live {live!r}"


def convergence_problems(kubectl: Kubectl, ns: str, caps: Capabilities) -> list[str]:
    servers = {s["metadata"]["name"]: s for s in get_json(kubectl, "mcpservers", "-n", ns)["items"]}
    live = get_json(kubectl, CHILD_KINDS, "-n", ns)["items"]
    children: dict[tuple[str, str], Obj] = {
        (c["kind"], c["metadata"]["name"]): c
        for c in live
        if not (c["kind"] == "ServiceAccount" and c["metadata"]["name"] == "default")
    }
    problems: list[str] = []
    wanted: dict[tuple[str, str], tuple[Obj, Obj]] = {}
    for name, obj in sorted(servers.items()):
        cond = condition(obj, "Reconciled")
        gen = obj["metadata"].get("generation")
        observed = (obj.get("status") or {}).get("observedGeneration")
        if not cond or cond["status"] != "True" or observed != gen:
            problems.append(
                f"{name}: Reconciled={cond and cond['status']} obs={observed} gen={gen}"
            )
        for key, desired in expected_children(obj, caps).items():
            wanted[key] = (desired, obj)
    for key, (desired, owner) in wanted.items():
        child = children.get(key)
        if child is None:
            problems.append(f"missing {key}")
            continue
        refs = child["metadata"].get("ownerReferences") or []
        controllers = [r for r in refs if r.get("controller")]
        if len(controllers) != 1 or controllers[0]["uid"] != owner["metadata"]["uid"]:
            problems.append(f"{key}: controller refs {refs} != owner {owner['metadata']['uid']}")
        if len(refs) != 1:
            problems.append(f"{key}: {len(refs)} ownerReferences")
        want = comparable(
            {
                **desired,
                "metadata": {
                    k: v for k, v in desired["metadata"].items() if k != "ownerReferences"
                },
            }
        )
        if not is_applied(want, child):
            where = first_difference(want, child)
            problems.append(f"{key}: stale (does not match the current spec: {where})")
    for key in sorted(set(children) - set(wanted)):
        refs = children[key]["metadata"].get("ownerReferences") or []
        problems.append(f"unexpected/orphan {key} owners={[r.get('name') for r in refs]}")
    return problems


def test_kill9_chaos_converges(
    exclusive: None,
    crd_and_rbac: ControlPlane,
    kubectl: Kubectl,
    unique_ns: str,
    tmp_path: Path,
) -> None:
    started = time.monotonic()
    seed = random.randrange(10**6)
    rng = random.Random(seed)
    print(f"chaos seed {seed}")
    caps = Capabilities(frozenset(kubectl("api-versions").stdout.split()), crd_and_rbac.minor)
    names = [f"s{i:02d}" for i in range(COUNT)]
    manifests: dict[str, Obj] = {}
    for name in names:
        manifests[name] = server_manifest(name, unique_ns, **random_spec(rng))

    log = tmp_path / "operator.log"
    op = OperatorProcess(crd_and_rbac.operator_kubeconfig, log).start()
    try:
        apply_all(kubectl, list(manifests.values()))
        deleted: set[str] = set()
        for cycle in range(KILLS):
            # Edits while the operator runs (or is still starting) ...
            edits = []
            for name in rng.sample(names, 6):
                if name in deleted:
                    continue
                obj = copy.deepcopy(manifests[name])
                obj["spec"] = {**obj["spec"], **random_spec(rng)}
                if "env" not in obj["spec"] or rng.random() < 0.3:
                    obj["spec"].pop("env", None)
                manifests[name] = obj
                edits.append(obj)
            apply_all(kubectl, edits)
            # ... occasionally delete one (its children must be collected) or bring one back
            # under the same name (a new uid: children must move to it, none may be left).
            if cycle in (1, 4, 7, 10):
                victim = rng.choice([n for n in names if n not in deleted])
                kubectl("delete", "mcpserver", victim, "-n", unique_ns, "--wait=false")
                deleted.add(victim)
            elif cycle in (5, 8) and deleted:
                back = rng.choice(sorted(deleted))
                deleted.discard(back)
                apply_all(kubectl, [manifests[back]])
            # Kill at a random moment: sometimes while it starts up, mostly while it works.
            if rng.random() < 0.3:
                time.sleep(rng.uniform(0.1, 1.5))
            else:
                op.wait_live()
                time.sleep(rng.uniform(0.0, 3.0))
            op.kill9()
            # ... and edits while it is down.
            down_edits = []
            for name in rng.sample(names, 3):
                if name in deleted:
                    continue
                obj = copy.deepcopy(manifests[name])
                obj["spec"]["primary"] = {"replicas": rng.choice([1, 2, 3])}
                manifests[name] = obj
                down_edits.append(obj)
            apply_all(kubectl, down_edits)
            op.start()
        chaos_done = time.monotonic()
        op.wait_live()

        deadline = time.monotonic() + 90
        problems: list[str] = ["not checked"]
        shown: list[str] = []
        while time.monotonic() < deadline:
            problems = convergence_problems(kubectl, unique_ns, caps)
            if not problems:
                break
            if problems[:3] != shown:
                shown = problems[:3]
                print(f"{time.monotonic() - chaos_done:.1f}s: {len(problems)} {shown}")
            time.sleep(1)
        converged = time.monotonic() - chaos_done
        print(
            f"kills={KILLS} converged {converged:.1f}s after the last restart; "
            f"total {time.monotonic() - started:.1f}s; deleted={sorted(deleted)}"
        )
        assert not problems, (
            f"seed {seed}: not converged after {converged:.0f}s:\n"
            + "\n".join(problems[:40])
            + f"\n--- operator log:\n{op.log_tail(40)}"
        )
        servers = get_json(kubectl, "mcpservers", "-n", unique_ns)["items"]
        assert sorted(s["metadata"]["name"] for s in servers) == sorted(set(names) - deleted)
        # The spec the test last applied is the one the operator acted on.
        for s in servers:
            want = parse_server(manifests[s["metadata"]["name"]]).spec  # defaults filled in
            assert parse_server(s).spec == want
        assert time.monotonic() - started < 180
    finally:
        op.stop()
