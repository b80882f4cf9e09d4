"""The operator's least-privilege RBAC rules, generated in one place.

The Helm chart, the static manifests and the restricted-identity integration test all
render from :data:`RULES`; a test removes each rule in turn and expects a failure, which
proves every rule is both needed and used.
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.models import GROUP, PLURAL

Rule = dict[str, Any]

RULES: list[Rule] = [
    # The custom resource: watch it, write its status, post nothing to its spec.
    {"apiGroups": [GROUP], "resources": [PLURAL], "verbs": ["get", "list", "watch", "patch"]},
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/status"], "verbs": ["get", "patch"]},
    # blockOwnerDeletion on children's ownerReferences needs update on the finalizers subresource.
    {"apiGroups": [GROUP], "resources": [f"{PLURAL}/finalizers"], "verbs": ["update"]},
    # Children, applied server-side (an apply that creates needs `create`) and pruned.
    {
        "apiGroups": ["apps"],
        "resources": ["deployments"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": [""],
        "resources": ["services", "serviceaccounts"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    {
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch", "delete"],
    },
    # Pods: find a tier's pods and set the MCP readiness gate on their status.
    {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]},
    {"apiGroups": [""], "resources": ["pods/status"], "verbs": ["patch"]},
    # Referenced Secrets/ConfigMaps are checked for existence before anything is applied.
    {"apiGroups": [""], "resources": ["secrets", "configmaps"], "verbs": ["get"]},
    # Events for humans, through both the core and the events.k8s.io API.
    {"apiGroups": ["", "events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    # kopf lists namespaces when watching a pattern, and CRDs to resolve resources.
    {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "list", "watch"]},
    {
        "apiGroups": ["apiextensions.k8s.io"],
        "resources": ["customresourcedefinitions"],
        "verbs": ["get", "list", "watch"],
    },
    # Leader election among operator replicas.
    {
        "apiGroups": ["coordination.k8s.io"],
        "resources": ["leases"],
        "verbs": ["get", "create", "update"],
    },
]


def cluster_role(name: str = "mcp-operator", rules: list[Rule] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mcp-operator"}},
        "rules": RULES if rules is None else rules,
    }


def cluster_role_binding(name: str, subject: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mcp-operator"}},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name},
        "subjects": [subject],
    }
