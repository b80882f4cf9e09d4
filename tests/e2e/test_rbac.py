"""RBAC: the generated rules (``mcp_operator.rbac.RULES``) are enough, and each is needed.

``test_restricted_identity_reconciles`` runs the operator as the restricted user
``mcp-operator`` bound to exactly ``RULES`` (cluster-wide ones in a ClusterRole, the lease
rules in a Role of the operator's namespace, as installed) and walks the battery below.

``test_rule_is_needed[...]`` then removes one rule (or one verb group / resource of it) at a
time and shows a user-visible failure. To fit the time budget the cases run side by side:
each case gets its own identity (a ServiceAccount, bound to its own ClusterRole = RULES
minus the removed part), its own namespace created *after* the operator started, and an
operator watching only that namespace through a glob pattern (so kopf must list and watch
namespaces, as it does for ``--namespace 'team-*'``), with ``--leader-lease`` leader election.

The battery (stops at the first failure, which is the user-visible symptom):
  start      the operator starts, takes its Lease and becomes live
  reconcile  an MCPServer (env from a Secret and a ConfigMap) reaches Reconciled=True for
             its generation, with every child present (one controller ownerReference) and
             status.tiers written
  drift      each deleted child kind comes back
  prune      scaling down / disabling the backup deletes the children no longer wanted
  monitoring the PrometheusRule (the Prometheus Operator's real CRD is installed for the
             module) is applied (MonitoringReady=True), a deleted one comes back, and one
             switched off is pruned
  event      a missing Secret reference turns Reconciled=False *and* posts a Warning Event
  lease      the operator is still alive after renewing its Lease
  gate       (gate cases only; node agent) a pod passes the MCP probe and Ready=True
"""

from __future__ import annotations

import copy
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import (
    ROLE_NAME,
    condition,
    free_port,
    install_operator_rbac,
    kubectl_apply,
    server_manifest,
)
from mcp_operator import rbac
from mcp_operator.api.models import GROUP
from tests.conftest import kubectl_binary
from tests.e2e.conftest import NodeAgentProcess, get_json
from tests.e2e.ops import Kubectl, others_paused
from tests.e2e.test_monitoring import install_crd, remove_crd

# The side-by-side batteries run inside the first test's fixture: more than the default
# 300 s on a loaded 2-core machine.
pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1200)]


Obj = dict[str, Any]
STEP_TIMEOUT = 20.0
GATE_TIMEOUT = 30.0
PARALLEL = 6
IDS_NAMESPACE = "mcp-rbac-ids"
UNSCHEDULABLE = {"nodeSelector": {"mcp-operator.dev/test": "unschedulable"}}


# -- rule surgery ------------------------------------------------------------------------


def without(
    rules: list[Obj],
    index: int,
    verbs: set[str] | None = None,
    resources: set[str] | None = None,
    groups: set[str] | None = None,
) -> list[Obj]:
    """``rules`` minus the (group, resource, verb) atoms of rule ``index`` that match."""
    out: list[Obj] = []
    for i, rule in enumerate(rules):
        if i != index:
            out.append(copy.deepcopy(rule))
            continue
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                kept = [
                    v
                    for v in rule["verbs"]
                    if not (
                        (verbs is None or v in verbs)
                        and (resources is None or resource in resources)
                        and (groups is None or group in groups)
                    )
                ]
                if kept:
                    out.append({"apiGroups": [group], "resources": [resource], "verbs": kept})
    return out


# Granted cluster-wide; the lease rules go to a Role in the operator's namespace.
CLUSTER_RULES = rbac.rules_for("watched", "cluster")


def rule_index(resource: str) -> int:
    for i, rule in enumerate(CLUSTER_RULES):
        if resource in rule["resources"]:
            return i
    raise KeyError(resource)


@dataclass(frozen=True)
class Case:
    id: str
    index: int
    verbs: frozenset[str] | None = None
    resources: frozenset[str] | None = None
    groups: frozenset[str] | None = None
    gate: bool = False  # needs running pods (node agent) to exercise the rule
    xfail: str | None = None
    lease: bool = False  # the removed part is in the lease Role, not the ClusterRole

    def rules(self) -> list[Obj]:
        if self.lease:
            return CLUSTER_RULES
        return without(
            CLUSTER_RULES,
            self.index,
            set(self.verbs) if self.verbs is not None else None,
            set(self.resources) if self.resources is not None else None,
            set(self.groups) if self.groups is not None else None,
        )

    def lease_rules(self, lease: str) -> list[Obj]:
        rules = rbac.lease_rules(lease)
        if not self.lease:
            return rules
        out = []
        for rule in rules:
            verbs = [v for v in rule["verbs"] if v not in (self.verbs or set())]
            if verbs:
                out.append({**rule, "verbs": verbs})
        return out


def _lease_case(id: str, verb: str) -> Case:
    return Case(id, -1, frozenset({verb}), lease=True)


def _case(
    id: str,
    resource: str,
    verbs: set[str] | None = None,
    resources: set[str] | None = None,
    groups: set[str] | None = None,
    gate: bool = False,
    xfail: str | None = None,
) -> Case:
    return Case(
        id,
        rule_index(resource),
        frozenset(verbs) if verbs is not None else None,
        frozenset(resources) if resources is not None else None,
        frozenset(groups) if groups is not None else None,
        gate,
        xfail,
    )


RBAC_PY = "operator/mcp_operator/rbac.py"
CASES: list[Case] = [
    _case("mcpservers-list-watch", "mcpservers", {"list", "watch"}),
    _case("status-patch", "mcpservers/status", {"patch"}),
]
for _res in ("deployments", "services", "serviceaccounts", "poddisruptionbudgets"):
    CASES += [
        _case(f"{_res}-list-watch", _res, {"list", "watch"}, {_res}),
        _case(f"{_res}-create", _res, {"create"}, {_res}),
        _case(f"{_res}-patch", _res, {"patch"}, {_res}),
        _case(f"{_res}-delete", _res, {"delete"}, {_res}),
    ]
CASES += [
    _case("pods-list-watch", "pods", {"list", "watch"}, gate=True),
    _case("pods-status-patch", "pods/status", gate=True),
    _case("secrets-get", "secrets", resources={"secrets"}),
    _case("configmaps-get", "configmaps", resources={"configmaps"}),
    _case("events-core-create", "events", {"create"}, groups={""}),
    _case("namespaces-list", "namespaces", {"list"}),
    _case("namespaces-watch", "namespaces", {"watch"}),
    _lease_case("leases-get", "get"),
    _lease_case("leases-create", "create"),
    _lease_case("leases-update", "update"),
]


def _keys_case(id: str, resource: str, verb: str) -> Case:
    """A spec.auth write rule (not the shared ``get`` rule on Secrets/ConfigMaps)."""
    index = next(
        i for i, r in enumerate(CLUSTER_RULES) if resource in r["resources"] and verb in r["verbs"]
    )
    return Case(id, index, frozenset({verb}), frozenset({resource}))


CASES += [
    _keys_case("secrets-create", "secrets", "create"),
    _keys_case("secrets-update", "secrets", "update"),
    _keys_case("configmaps-create", "configmaps", "create"),
    _keys_case("configmaps-patch", "configmaps", "patch"),
    # spec.cache: the configuration Secret applied and pruned, the NetworkPolicy a child.
    _keys_case("secrets-patch", "secrets", "patch"),
    _keys_case("secrets-delete", "secrets", "delete"),
    _case("networkpolicies-list-watch", "networkpolicies", {"list", "watch"}),
    _case("networkpolicies-create", "networkpolicies", {"create"}),
    _case("networkpolicies-patch", "networkpolicies", {"patch"}),
    _case("networkpolicies-delete", "networkpolicies", {"delete"}),
    # spec.monitoring.prometheusRule: the PrometheusRule NAME, a watched child.
    _case("prometheusrules-list-watch", "prometheusrules", {"list", "watch"}),
    _case("prometheusrules-create", "prometheusrules", {"create"}),
    _case("prometheusrules-patch", "prometheusrules", {"patch"}),
    _case("prometheusrules-delete", "prometheusrules", {"delete"}),
]
CONTROL = Case("control-all-rules", -1, gate=True)  # removes nothing: the battery must pass


# -- one operator per case -----------------------------------------------------------------


@dataclass
class Outcome:
    failed_step: str | None = None
    detail: str = ""
    steps: list[str] = field(default_factory=list)
    log: str = ""


class Battery:
    def __init__(
        self,
        kubectl: Kubectl,
        kubeconfig: Path,
        workdir: Path,
        tag: str,
        gate: bool,
        peering: bool = True,
        namespace_pattern: bool = True,
    ) -> None:
        self.kubectl = kubectl
        self.kubeconfig = kubeconfig
        self.workdir = workdir
        self.tag = tag
        self.gate = gate
        self.peering = peering
        self.namespace_pattern = namespace_pattern
        self.ns = f"rbac-{tag}-{secrets.token_hex(3)}"
        self.lease = f"mcp-rbac-{tag}-{secrets.token_hex(3)}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = workdir / f"operator-{tag}.log"
        self.liveness_port = free_port()
        self.live_at = 0.0

    # helpers
    def k(self, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
        result: subprocess.CompletedProcess[str] = self.kubectl(*args, **kw)
        return result

    def apply(self, obj: Obj) -> None:
        self.k("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(obj))

    def server(self, name: str) -> Obj:
        return dict(get_json(self.kubectl, "mcpserver", name, "-n", self.ns))

    def until(self, check: Callable[[], bool], timeout: float = STEP_TIMEOUT) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return True
            except Exception:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                return False
            time.sleep(0.5)
        return False

    def start(self) -> bool:
        argv = [sys.executable, "-m", "mcp_operator.cli", "run", "--verbose"]
        argv += ["-n", f"rbac-{self.tag}-*"] if self.namespace_pattern else ["--all-namespaces"]
        argv += ["--metrics-port", "0", "--liveness-port", str(self.liveness_port)]
        if self.peering:
            argv += ["--leader-lease", self.lease]
        env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "PYTHONUNBUFFERED": "1"}
        env["POD_NAMESPACE"] = IDS_NAMESPACE
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        import httpx

        def live() -> bool:
            url = f"http://127.0.0.1:{self.liveness_port}/healthz"
            return httpx.get(url, timeout=1).is_success

        ok = self.until(live, timeout=60)  # a loaded 2-core machine imports slowly
        self.live_at = time.monotonic()
        return ok

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()
        for ns in (self.ns, f"{self.ns}-late"):
            self.k("delete", "namespace", ns, "--wait=false", "--ignore-not-found", check=False)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    # the battery
    def run(self) -> Outcome:
        outcome = Outcome()
        steps: list[tuple[str, Callable[[], bool]]] = [
            ("start", self.start),
            ("reconcile", self.step_reconcile),
            ("drift", self.step_drift),
            ("prune", self.step_prune),
            ("monitoring", self.step_monitoring),
            ("event", self.step_event),
            ("keys", self.step_keys),
            ("cache", self.step_cache),
        ]
        if self.gate:
            steps.append(("gate", self.step_gate))
        steps.append(("lease", self.step_lease))
        try:
            for name, step in steps:
                try:
                    ok = step()
                except Exception as exc:  # a failed kubectl etc. is a failure of the step
                    ok, outcome.detail = False, repr(exc)
                if not ok:
                    outcome.failed_step = name
                    outcome.detail += self.snapshot()
                    break
                outcome.steps.append(name)
        finally:
            outcome.log = self.log_tail()
            self.stop()
        return outcome

    def snapshot(self) -> str:
        out = self.k("get", "mcpservers,deploy,svc,sa,pdb", "-n", self.ns, check=False)
        conds = self.k(
            "get", "mcpservers", "-n", self.ns, "-o", "jsonpath={..conditions}", check=False
        )
        return f"\n{out.stdout}{out.stderr}\n{conds.stdout}"

    def children(self) -> dict[tuple[str, str], Obj]:
        items = get_json(
            self.kubectl,
            "deployments,services,serviceaccounts,poddisruptionbudgets",
            "-n",
            self.ns,
            "-l",
            "mcp-operator.dev/server=web",
        )["items"]
        return {(c["kind"], c["metadata"]["name"]): c for c in items}

    EXPECTED = {
        ("ServiceAccount", "web"),
        ("Deployment", "web-primary"),
        ("Deployment", "web-backup"),
        ("PodDisruptionBudget", "web-primary"),
        ("Service", "web"),
        ("Service", "web-primary"),
        ("Service", "web-backup"),
    }

    def step_reconcile(self) -> bool:
        self.k("create", "namespace", self.ns)
        self.k("create", "secret", "generic", "creds", "-n", self.ns, "--from-literal=token=x")
        self.k("create", "configmap", "conf", "-n", self.ns, "--from-literal=level=debug")
        env = [
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}},
            {"name": "LEVEL", "valueFrom": {"configMapKeyRef": {"name": "conf", "key": "level"}}},
        ]
        self.apply(
            server_manifest(
                "web",
                self.ns,
                primary={"replicas": 2},
                backup={"standby": "cold"},
                failover={"enabled": False},
                env=env,
                pod=UNSCHEDULABLE,
            )
        )

        def done() -> bool:
            obj = self.server("web")
            cond = condition(obj, "Reconciled")
            status = obj.get("status") or {}
            if not cond or cond["status"] != "True":
                return False
            if status.get("observedGeneration") != obj["metadata"]["generation"]:
                return False
            if (status.get("tiers") or {}).get("primary", {}).get("replicas") != 2:
                return False
            children = self.children()
            if set(children) != self.EXPECTED:
                return False
            uid = obj["metadata"]["uid"]
            return all(
                [r["uid"] for r in c["metadata"].get("ownerReferences", []) if r["controller"]]
                == [uid]
                for c in children.values()
            )

        return self.until(done)

    def step_drift(self) -> bool:
        victims = [
            ("serviceaccount", "web"),
            ("deployment", "web-primary"),
            ("service", "web"),
            ("poddisruptionbudget", "web-primary"),
        ]
        uids = {}
        for kind, name in victims:
            uids[(kind, name)] = get_json(self.kubectl, kind, name, "-n", self.ns)["metadata"][
                "uid"
            ]
            self.k("delete", kind, name, "-n", self.ns, "--wait=false")

        def restored() -> bool:
            return all(
                get_json(self.kubectl, kind, name, "-n", self.ns)["metadata"]["uid"] != uid
                for (kind, name), uid in uids.items()
            )

        return self.until(restored)

    def step_prune(self) -> bool:
        self.k(
            "patch",
            "mcpserver",
            "web",
            "-n",
            self.ns,
            "--type=merge",
            "-p",
            '{"spec":{"primary":{"replicas":1},"backup":{"enabled":false},'
            '"pod":{"serviceAccountName":"default"}}}',
        )
        # Gone: the PDB (1 replica), the backup tier, and our SA (the user brings one).
        want = {("Deployment", "web-primary"), ("Service", "web"), ("Service", "web-primary")}

        def pruned() -> bool:
            obj = self.server("web")
            cond = condition(obj, "Reconciled")
            return (
                set(self.children()) == want
                and cond is not None
                and cond["status"] == "True"
                and obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
            )

        return self.until(pruned)

    def _rule_uid(self) -> str | None:
        out = self.k("get", "prometheusrule", "web", "-n", self.ns, "--ignore-not-found",
                     "-o", "jsonpath={.metadata.uid}")  # fmt: skip
        return out.stdout.strip() or None

    def step_monitoring(self) -> bool:
        """spec.monitoring.prometheusRule (on by default): the rule ``web`` is applied and
        MonitoringReady=True; a deleted rule is re-created (the watch); switched off, the
        rule is pruned (it is known from the list/watch, then deleted)."""

        def applied() -> bool:
            cond = condition(self.server("web"), "MonitoringReady")
            ok = bool(cond and cond["reason"] == "PrometheusRuleApplied")
            return ok and self._rule_uid() is not None

        if not self.until(applied):
            return False
        uid = self._rule_uid()
        self.k("delete", "prometheusrule", "web", "-n", self.ns, "--wait=false")
        if not self.until(lambda: self._rule_uid() not in (None, uid)):
            return False
        self.k(
            "patch", "mcpserver", "web", "-n", self.ns, "--type=merge",
            "-p", '{"spec":{"monitoring":{"prometheusRule":{"enabled":false}}}}',
        )  # fmt: skip

        def pruned() -> bool:
            cond = condition(self.server("web"), "MonitoringReady")
            off = bool(cond and cond["reason"] == "PrometheusRuleDisabled")
            return off and self._rule_uid() is None

        return self.until(pruned)

    def step_event(self) -> bool:
        # A namespace created after the first one was served: only the namespace watch
        # (not kopf's initial listing) can bring it in.
        late = f"{self.ns}-late"
        self.k("create", "namespace", late)
        env = [{"name": "T", "valueFrom": {"secretKeyRef": {"name": "absent", "key": "t"}}}]
        self.apply(
            server_manifest(
                "broken",
                late,
                backup={"enabled": False},
                failover={"enabled": False},
                env=env,
                pod=UNSCHEDULABLE,
            )
        )

        def reported() -> bool:
            obj = get_json(self.kubectl, "mcpserver", "broken", "-n", late)
            cond = condition(obj, "Reconciled")
            if not cond or cond["reason"] != "MissingReference":
                return False
            events = get_json(
                self.kubectl,
                "events",
                "-n",
                late,
                "--field-selector",
                "involvedObject.name=broken",
            )["items"]
            return any(e.get("reason") == "MissingReference" for e in events)

        return self.until(reported)

    def step_keys(self) -> bool:
        """spec.auth: the signing-keys Secret is created and the JWKS ConfigMap applied
        (KeysReady=True); a rotation request replaces the Secret (a new next key)."""
        self.apply(
            server_manifest(
                "authd",
                self.ns,
                backup={"enabled": False},
                failover={"enabled": False},
                pod=UNSCHEDULABLE,
                auth={"enabled": True},
            )
        )

        def ready() -> bool:
            cond = condition(self.server("authd"), "KeysReady")
            jwks = self.k("get", "configmap", "authd-jwks", "-n", self.ns, check=False)
            return bool(cond and cond["status"] == "True") and jwks.returncode == 0

        if not self.until(ready):
            return False
        value = "2026-11-30T00:00:00Z"
        self.k("annotate", "mcpserver", "authd", "-n", self.ns, f"{GROUP}/rotate-keys={value}")

        def rotating() -> bool:
            keys = (self.server("authd").get("status") or {}).get("keys") or {}
            return keys.get("lastRotateRequest") == value and bool(keys.get("nextKid"))

        return self.until(rotating)

    CACHE_OBJECTS = (
        ("secret", "cached-cache-auth"),
        ("secret", "cached-cache-config"),
        ("deployment", "cached-cache"),
        ("service", "cached-cache"),
        ("networkpolicy", "cached-cache"),
    )

    def _exists(self, kind: str, name: str) -> bool:
        out = self.k("get", kind, name, "-n", self.ns, "--ignore-not-found", "-o", "name")
        return bool(out.stdout.strip())

    def step_cache(self) -> bool:
        """spec.cache: the credential Secret created, the config Secret and NetworkPolicy
        applied; a deleted NetworkPolicy is restored (watched); turning the cache off prunes
        the applied objects (the credential Secret stays)."""
        self.apply(
            server_manifest(
                "cached",
                self.ns,
                backup={"enabled": False},
                failover={"enabled": False},
                pod=UNSCHEDULABLE,
                cache={"enabled": True},
            )
        )

        def applied() -> bool:
            cond = condition(self.server("cached"), "Reconciled")
            ok = bool(cond and cond["status"] == "True")
            return ok and all(self._exists(k, n) for k, n in self.CACHE_OBJECTS)

        if not self.until(applied):
            return False
        uid = get_json(self.kubectl, "networkpolicy", "cached-cache", "-n", self.ns)["metadata"][
            "uid"
        ]
        self.k("delete", "networkpolicy", "cached-cache", "-n", self.ns, "--wait=false")

        def restored() -> bool:
            obj = get_json(self.kubectl, "networkpolicy", "cached-cache", "-n", self.ns)
            return bool(obj["metadata"]["uid"] != uid)

        if not self.until(restored):
            return False
        self.k(
            "patch", "mcpserver", "cached", "-n", self.ns, "--type=merge",
            "-p", '{"spec":{"cache":{"enabled":false}}}',
        )  # fmt: skip

        def pruned() -> bool:
            cond = condition(self.server("cached"), "Reconciled")
            gone = not any(self._exists(k, n) for k, n in self.CACHE_OBJECTS[1:])
            return bool(cond and cond["status"] == "True") and gone

        return self.until(pruned)

    def step_gate(self) -> bool:
        self.apply(
            server_manifest(
                "live",
                self.ns,
                primary={"replicas": 1},
                backup={"enabled": False},
                failover={"enabled": False},
            )
        )

        def ready() -> bool:
            cond = condition(self.server("live"), "Ready")
            return bool(cond and cond["status"] == "True")

        return self.until(ready, timeout=GATE_TIMEOUT)

    def step_lease(self) -> bool:
        """After several renewals (every retry period, 2 s) the operator still acts."""
        time.sleep(max(0.0, self.live_at + 12 - time.monotonic()))
        uid = get_json(self.kubectl, "service", "web", "-n", self.ns)["metadata"]["uid"]
        self.k("delete", "service", "web", "-n", self.ns, "--wait=false")
        return self.until(
            lambda: (
                get_json(self.kubectl, "service", "web", "-n", self.ns)["metadata"]["uid"] != uid
            )
        )


# -- identities --------------------------------------------------------------------------


def sa_kubeconfig(cluster: ControlPlane, kubectl: Kubectl, sa: str, path: Path) -> Path:
    kubectl("create", "serviceaccount", sa, "-n", IDS_NAMESPACE)
    # A TokenRequest token, as the kubelet mounts (no token Secret is created since 1.24).
    token = kubectl("create", "token", sa, "-n", IDS_NAMESPACE, "--duration=2h").stdout.strip()
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "c",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": sa, "user": {"token": token}}],
        "contexts": [{"name": "c", "context": {"cluster": "c", "user": sa}}],
        "current-context": "c",
    }
    path.write_text(yaml.safe_dump(config))
    return path


def bind(
    cluster: ControlPlane,
    subject: dict[str, str],
    name: str,
    rules: list[Obj],
    lease: str,
    lease_rules: list[Obj],
) -> None:
    """``rules`` cluster-wide, ``lease_rules`` in a Role of the operator's namespace."""
    kubectl_apply(
        str(kubectl_binary()),
        cluster.admin_kubeconfig,
        [
            rbac.cluster_role(name, rules),
            rbac.cluster_role_binding(name, subject),
            rbac.lease_role(IDS_NAMESPACE, lease, name, lease_rules),
            rbac.lease_role_binding(IDS_NAMESPACE, subject, name),
        ],
    )


@pytest.fixture(scope="module")
def exclusive() -> Iterator[None]:
    with others_paused():
        yield


@pytest.fixture(scope="module")
def ids_namespace(crd_and_rbac: ControlPlane, kubectl: Kubectl) -> Iterator[str]:
    kubectl("create", "namespace", IDS_NAMESPACE, check=False)
    # The Prometheus Operator's PrometheusRule CRD, for the monitoring step (removed after:
    # tests/e2e/test_monitoring.py starts without it).
    install_crd(kubectl)
    yield IDS_NAMESPACE
    remove_crd(kubectl)
    kubectl("delete", "namespace", IDS_NAMESPACE, "--wait=false", check=False)
    kubectl(
        "delete",
        "clusterrole,clusterrolebinding",
        "-l",
        "app.kubernetes.io/name=mcp-operator",
        "--field-selector",
        # Never the session operator's own binding (ROLE_NAME): later modules need it.
        f"metadata.name!=mcp-operator,metadata.name!={ROLE_NAME}",
        check=False,
    )


@pytest.fixture(scope="module")
def outcomes(
    exclusive: None,
    ids_namespace: str,
    crd_and_rbac: ControlPlane,
    kubectl: Kubectl,
    node_agent: NodeAgentProcess,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Outcome]:
    """Every case's battery, run side by side (each with its own identity and namespace)."""
    workdir = tmp_path_factory.mktemp("rbac")
    started = time.monotonic()

    def one(index: int, case: Case) -> tuple[str, Outcome]:
        sa = f"case-{index}-{secrets.token_hex(2)}"
        config = sa_kubeconfig(crd_and_rbac, kubectl, sa, workdir / f"{sa}.kubeconfig")
        battery = Battery(kubectl, config, workdir, f"c{index}", gate=case.gate)
        subject = {"kind": "ServiceAccount", "name": sa, "namespace": IDS_NAMESPACE}
        rules = case.rules() if case is not CONTROL else CLUSTER_RULES
        lease_rules = (
            case.lease_rules(battery.lease)
            if case is not CONTROL
            else rbac.lease_rules(battery.lease)
        )
        bind(crd_and_rbac, subject, f"mcp-rbac-{sa}", rules, battery.lease, lease_rules)
        return case.id, battery.run()

    only = set(filter(None, os.environ.get("MCP_RBAC_CASES", "").split(",")))
    todo = [(i, c) for i, c in enumerate([CONTROL, *CASES]) if not only or c.id in only]
    with ThreadPoolExecutor(PARALLEL) as pool:
        results = dict(pool.map(lambda ic: one(*ic), todo))
    print(f"\n{len(results)} RBAC batteries in {time.monotonic() - started:.0f}s")
    for case_id, out in results.items():
        print(f"  {case_id:32} failed at {out.failed_step or '-':10} passed {out.steps}")
        if os.environ.get("MCP_RBAC_CASES"):
            print(out.detail, "\n", out.log)
    return results


def test_restricted_identity_reconciles(
    exclusive: None,
    ids_namespace: str,
    crd_and_rbac: ControlPlane,
    kubectl: Kubectl,
    node_agent: NodeAgentProcess,
    tmp_path: Path,
) -> None:
    """The restricted user ``mcp-operator`` bound to exactly RULES passes the battery
    (cluster-wide, as deployed)."""
    install_operator_rbac(str(kubectl_binary()), crd_and_rbac.admin_kubeconfig)
    battery = Battery(
        kubectl,
        crd_and_rbac.operator_kubeconfig,
        tmp_path,
        "user",
        gate=True,
        namespace_pattern=False,
    )
    user = {"kind": "User", "name": "mcp-operator", "apiGroup": "rbac.authorization.k8s.io"}
    kubectl_apply(
        str(kubectl_binary()),
        crd_and_rbac.admin_kubeconfig,
        [
            rbac.lease_role(IDS_NAMESPACE, battery.lease),
            rbac.lease_role_binding(IDS_NAMESPACE, user),
        ],
    )
    outcome = battery.run()
    assert outcome.failed_step is None, f"{outcome}\n{outcome.log}"


def test_every_rule_is_removed_by_some_case() -> None:
    """Each (group, resource, verb) the operator is granted is taken away by at least one
    case: a rule added to rbac.py without a case here would never be shown to be needed."""

    def atoms(rules: list[Obj]) -> set[tuple[str, str, str]]:
        return {
            (g, r, v)
            for rule in rules
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }

    granted = atoms(CLUSTER_RULES)
    removed = set().union(*(granted - atoms(c.rules()) for c in CASES if not c.lease))
    assert granted - removed == set()
    lease_granted = atoms(rbac.lease_rules("x"))
    lease_removed = set().union(
        *(lease_granted - atoms(c.lease_rules("x")) for c in CASES if c.lease)
    )
    assert lease_granted - lease_removed == set()


def test_control_case_passes(outcomes: dict[str, Outcome]) -> None:
    """The side-by-side harness itself works: an identity with all RULES passes."""
    if CONTROL.id not in outcomes:
        pytest.skip("not selected by MCP_RBAC_CASES")
    out = outcomes[CONTROL.id]
    assert out.failed_step is None, f"{out.detail}\n{out.log}"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, id=c.id, marks=[pytest.mark.xfail(strict=True, reason=c.xfail)])
        if c.xfail
        else pytest.param(c, id=c.id)
        for c in CASES
    ],
)
def test_rule_is_needed(case: Case, outcomes: dict[str, Outcome]) -> None:
    if case.id not in outcomes:
        pytest.skip("not selected by MCP_RBAC_CASES")
    out = outcomes[case.id]
    assert out.failed_step is not None, (
        f"without {case} the operator still passed every step {out.steps}: rule not needed"
    )
