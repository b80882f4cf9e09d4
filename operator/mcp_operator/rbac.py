"""The operator's least-privilege RBAC rules, generated in one place.

The Helm chart, the static manifests and the restricted-identity integration test all
render from :data:`RULES`; a test removes each rule in turn and expects a failure, which
proves every rule is both needed and used.
"""

from __future__ import annotations

from typing import Any, Literal

from mcp_operator.api.models import GROUP, PLURAL

Rule = dict[str, Any]
DEFAULT_LEASE = "mcp-operator"  # the shipped Deployment's --leader-lease
Scope = Literal["cluster", "watched", "operator"]

RULES: list[Rule] = [
    # The custom resource: kopf lists and watches it; the operator writes only its status.
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["list", "watch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["patch"]},
    # Children: known from list+watch, written by server-side apply (an apply that creates
    # needs `create`), pruned by delete. Never read one by one.
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services", "serviceaccounts"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # Pods: find a tier's pods and set the MCP readiness gate on their status.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    # Referenced Secrets/ConfigMaps are checked for existence before anything is applied.
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get"]},
    # Events for humans (kopf posts core v1 Events).
    {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    # spec.auth: the Secret NAME-signing-keys is created once, then replaced with its
    # resourceVersion (optimistic concurrency); the JWKS ConfigMap is server-side applied.
    # spec.dataEncryption: the Secret NAME-data-keys is created once, then server-side
    # applied with its resourceVersion (the `patch` rule below). Reading uses `get`.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["create", "update"]},
    {"apiGroups": [""], "resources": ["configmaps"], "verbs": ["create", "patch"]},
    # spec.cache: NAME-cache-auth is created once (the `create` above); the configuration
    # Secret NAME-cache-config is server-side applied and pruned when the cache is turned
    # off; the NetworkPolicy NAME-cache is a watched child like the Services.
    {"apiGroups": [""], "resources": ["secrets"], "verbs": ["patch", "delete"]},
    {
        "apiGroups": ["networking.k8s.io"],
        "resources": ["networkpolicies"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # spec.monitoring.prometheusRule: the PrometheusRule NAME, a child like the others
    # (Prometheus Operator CRD, used only while discovery shows it). Discovery itself
    # (/api, /apis) needs no rule: every authenticated user may read it (system:discovery).
    {
        "apiGroups": ["monitoring.coreos.com"],
        "resources": ["prometheusrules"],
        "verbs": ["list", "watch", "create", "patch", "delete"],
    },
    # Only for `--namespace PATTERN` with globs: kopf follows matching namespaces.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["list", "watch"]},
    # Leader election among operator replicas (`--leader-lease`), granted only in the
    # operator's own namespace (scope "operator"). `create` cannot be limited to a name (it
    # is not known when a create is authorised); reading and renewing are limited to the
    # one Lease (`lease_rules(name)` for another name than the default).
    {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "resourceNames": [DEFAULT_LEASE],
        "verbs": ["get", "update"],
    },
]


# Where each rule must be granted. Most rules concern the namespaces whose MCPServers are
# watched; these two are exceptions. Keyed by resource so that the rule list stays one list.
CLUSTER_ONLY = frozenset({"namespaces"})  # cluster-scoped; only for `--namespace` globs
OPERATOR_NAMESPACE_ONLY = frozenset({"leases"})  # the operator's own Lease, in its namespace


def _scope(rule: Rule) -> Scope:
    resources = set(rule["resources"])
    if resources <= CLUSTER_ONLY:
        return "cluster"
    if resources <= OPERATOR_NAMESPACE_ONLY:
        return "operator"
    return "watched"


def rules_for(*scopes: Scope) -> list[Rule]:
    """The rules of :data:`RULES` granted in ``scopes``, in their order.

    An install grants ``rules_for("watched", "cluster")`` cluster-wide (or ``"watched"`` in a
    Role per watched namespace, so Secrets are readable only where servers live) and
    ``rules_for("operator")`` in a Role in the operator's own namespace.
    """
    return [rule for rule in RULES if _scope(rule) in scopes]


def lease_rules(lease: str) -> list[Rule]:
    """The operator-namespace rules for a Lease named ``lease``."""
    return [
        {**rule, "resourceNames": [lease]} if "resourceNames" in rule else dict(rule)
        for rule in rules_for("operator")
    ]


def lease_role(
    namespace: str, lease: str, name: str = "mcp-operator-leader", rules: list[Rule] | None = None
) -> dict[str, Any]:
    return role(name, namespace, lease_rules(lease) if rules is None else rules)


def lease_role_binding(
    namespace: str, subject: dict[str, str], name: str = "mcp-operator-leader"
) -> dict[str, Any]:
    return role_binding(name, namespace, subject)


def cluster_role(name: str = "mcp-operator", rules: list[Rule] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mcp-operator"}},
        "rules": RULES if rules is None else rules,
    }


def role(name: str, namespace: str, rules: list[Rule]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "mcp-operator"},
        },
        "rules": rules,
    }


def role_binding(name: str, namespace: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/name": "mcp-operator"},
        },
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [subject],
    }


def cluster_role_binding(name: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mcp-operator"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [subject],
    }
