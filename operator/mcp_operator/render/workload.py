"""Deployments and PodDisruptionBudgets for the primary and backup tiers.

Pods meet the *restricted* Pod Security Standard by default (non-root, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root filesystem with
a writable ``/tmp``); the user may override through ``spec.pod``. Every pod declares the
``mcp-operator.dev/mcp-healthy`` readiness gate, which the operator sets from its MCP-level
probe, so Services only route to pods that really answer MCP.
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.models import MCPServer, MCPServerSpec, Tier
from mcp_operator.render import meta
from mcp_operator.render.context import RenderContext

Obj = dict[str, Any]

DEFAULT_RESOURCES: Obj = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "512Mi"},
}
NON_ROOT_UID = 65532


def _pod_security(spec: MCPServerSpec) -> Obj:
    base: Obj = {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {**base, **spec.pod.security_context}


def _container_security(spec: MCPServerSpec) -> Obj:
    base: Obj = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return {**base, **spec.pod.container_security_context}


def _probes(spec: MCPServerSpec) -> Obj:
    """Kubelet probes: TCP on the MCP port unless overridden. MCP-level health is the
    operator's job (Kubernetes httpGet cannot POST a JSON-RPC request)."""
    tcp = {"tcpSocket": {"port": meta.MCP_PORT_NAME}}
    defaults = {
        "startupProbe": {**tcp, "periodSeconds": 2, "failureThreshold": 60, "timeoutSeconds": 1},
        "livenessProbe": {**tcp, "periodSeconds": 10, "failureThreshold": 3, "timeoutSeconds": 2},
        "readinessProbe": {**tcp, "periodSeconds": 5, "failureThreshold": 2, "timeoutSeconds": 1},
    }
    overrides = {
        "startupProbe": spec.probes.startup,
        "livenessProbe": spec.probes.liveness,
        "readinessProbe": spec.probes.readiness,
    }
    return {k: overrides[k] if overrides[k] is not None else v for k, v in defaults.items()}


def _container(spec: MCPServerSpec) -> Obj:
    container: Obj = {
        "name": "mcp",
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "ports": [{"name": meta.MCP_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "resources": spec.resources or DEFAULT_RESOURCES,
        "securityContext": _container_security(spec),
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        **_probes(spec),
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    if spec.env:
        container["env"] = list(spec.env)
    if spec.env_from:
        container["envFrom"] = list(spec.env_from)
    return container


def service_account_name(server: MCPServer) -> str:
    return server.spec.pod.service_account_name or meta.child_name(server)


def _default_affinity(server: MCPServer, tier: Tier) -> Obj:
    """Spread a tier's pods across nodes when possible (soft, so one node still works)."""
    term = {
        "weight": 100,
        "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": meta.selector(server, tier)},
        },
    }
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [term]}}


def pod_template(server: MCPServer, tier: Tier) -> Obj:
    spec, pod = server.spec, server.spec.pod
    pod_spec: Obj = {
        "serviceAccountName": service_account_name(server),
        "automountServiceAccountToken": False,
        "securityContext": _pod_security(spec),
        "containers": [_container(spec)],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}],
        "readinessGates": [{"conditionType": meta.HEALTH_GATE}],
        "affinity": pod.affinity or _default_affinity(server, tier),
        "enableServiceLinks": False,
    }
    optional = {
        "nodeSelector": pod.node_selector,
        "tolerations": pod.tolerations,
        "imagePullSecrets": pod.image_pull_secrets,
        "priorityClassName": pod.priority_class_name,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    annotations = {"kubectl.kubernetes.io/default-container": "mcp", **pod.annotations}
    labels = {**pod.labels, **meta.labels(server, tier, tier)}
    return {"metadata": {"labels": labels, "annotations": annotations}, "spec": pod_spec}


def tier_replicas(server: MCPServer, tier: Tier, ctx: RenderContext) -> int:
    """Desired replicas: a cold backup runs only while promoted or being warmed up."""
    if tier == "primary":
        return server.spec.primary.replicas
    backup = server.spec.backup
    if backup.standby == "cold" and ctx.active_tier != "backup" and not ctx.backup_warm:
        return 0
    return backup.replicas


def tiers(server: MCPServer) -> list[Tier]:
    return ["primary", "backup"] if server.spec.backup.enabled else ["primary"]


def deployment(server: MCPServer, tier: Tier, ctx: RenderContext) -> Obj:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(server, meta.child_name(server, tier), tier, ctx.owner_uid, tier),
        "spec": {
            "replicas": tier_replicas(server, tier, ctx),
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": meta.selector(server, tier)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": pod_template(server, tier),
        },
    }


def pod_disruption_budget(server: MCPServer, tier: Tier, ctx: RenderContext) -> Obj | None:
    """Only for tiers with more than one replica: a PDB on a single pod blocks node drains."""
    if tier_replicas(server, tier, ctx) <= 1:
        return None
    return {
        "apiVersion": ctx.capabilities.pdb_api_version(),
        "kind": "PodDisruptionBudget",
        "metadata": meta.metadata(server, meta.child_name(server, tier), tier, ctx.owner_uid, tier),
        "spec": {"maxUnavailable": 1, "selector": {"matchLabels": meta.selector(server, tier)}},
    }


def service_account(server: MCPServer, ctx: RenderContext) -> Obj | None:
    """A dedicated identity with no API token mounted; none when the user brings their own."""
    if server.spec.pod.service_account_name:
        return None
    return {
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": meta.metadata(server, meta.child_name(server), "identity", ctx.owner_uid),
        "automountServiceAccountToken": False,
    }
