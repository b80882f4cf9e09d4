"""Deployments and PodDisruptionBudgets for the primary and backup tiers.

Pods meet the *restricted* Pod Security Standard by default (non-root, no privilege
escalation, all capabilities dropped, RuntimeDefault seccomp, read-only root filesystem with
a writable ``/tmp`` and ``HOME``); the user's security contexts are deep-merged over these
defaults, so overriding one key keeps the others. Every pod declares the
``mcp-operator.dev/mcp-healthy`` readiness gate, which the operator sets from its MCP-level
probe, so Services only route to pods that really answer MCP.
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.models import NON_ROOT_UID, MCPServer, MCPServerSpec, Tier
from mcp_operator.render import auth, cache, datakeys, meta
from mcp_operator.render.context import RenderContext

Obj = dict[str, Any]

DEFAULT_RESOURCES: Obj = {
    "requests": {"cpu": "50m", "memory": "64Mi"},
    "limits": {"memory": "512Mi"},
}
ZONE_KEY = "topology.kubernetes.io/zone"


SHUTDOWN_GRACE_SECONDS = 30  # Kubernetes' default grace period, left for the server's exit


def deep_merge(base: Obj, override: Obj) -> Obj:
    """``override`` over ``base``, recursing into mappings (lists and scalars replace)."""
    out = dict(base)
    for key, value in override.items():
        old = out.get(key)
        out[key] = (
            deep_merge(old, value) if isinstance(old, dict) and isinstance(value, dict) else value
        )
    return out


def _pod_security(spec: MCPServerSpec) -> Obj:
    base: Obj = {
        "runAsNonRoot": True,
        "runAsUser": NON_ROOT_UID,
        "runAsGroup": NON_ROOT_UID,
        "fsGroup": NON_ROOT_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return deep_merge(base, spec.pod.security_context)


def _container_security(spec: MCPServerSpec) -> Obj:
    base: Obj = {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    return deep_merge(base, spec.pod.container_security_context)


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


def _home_wanted(spec: MCPServerSpec) -> bool:
    return spec.home.enabled


def _env(server: MCPServer) -> list[Obj]:
    # HOME and the cache contract first: the user's variables may refer to $(HOME) or
    # $(MCP_CACHE_URL), and variables added to the spec later land after them, in the order
    # server-side apply keeps for existing list items. A name the user sets wins.
    spec = server.spec
    env = list(spec.env)
    own = {e.get("name") for e in env}
    ours = [e for e in cache.env(server) if e["name"] not in own]
    # A user's own MCP_CACHE_HOST (or port, username, password) wins, but it comes after
    # our MCP_CACHE_URL, which would then hold a literal "$(MCP_CACHE_HOST)": the URL goes
    # last instead, after every part it refers to.
    late = [e for e in ours if e["name"] == cache.ENV_URL and own & set(cache.URL_PARTS)]
    ours = [e for e in ours if e not in late]
    if _home_wanted(spec) and "HOME" not in own:
        ours.insert(0, {"name": "HOME", "value": spec.home.mount_path})
    return ours + env + late


def _container(server: MCPServer) -> Obj:
    spec = server.spec
    mounts: list[Obj] = [{"name": "tmp", "mountPath": "/tmp"}]
    if _home_wanted(spec):
        mounts.append({"name": "home", "mountPath": spec.home.mount_path})
    container: Obj = {
        "name": "mcp",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "ports": [{"name": meta.MCP_PORT_NAME, "containerPort": spec.port, "protocol": "TCP"}],
        "resources": spec.resources or DEFAULT_RESOURCES,
        "securityContext": _container_security(spec),
        "volumeMounts": [*mounts, *spec.volume_mounts],
        **_probes(spec),
    }
    if spec.command:
        container["command"] = list(spec.command)
    if spec.args:
        container["args"] = list(spec.args)
    env = _env(server)
    if env:
        container["env"] = env
    if spec.env_from:
        container["envFrom"] = list(spec.env_from)
    return container


def service_account_name(server: MCPServer) -> str:
    return server.spec.pod.service_account_name or meta.child_name(server)


def _default_affinity(server: MCPServer, tier: Tier) -> Obj:
    """Spread a tier's pods across nodes, and keep the two tiers in different zones, when
    possible. Both are soft: one node or one zone still works, and nodes without the zone
    label simply make the zone term moot (so one zone failure cannot take both tiers when
    there are several)."""
    same_tier = {
        "weight": 100,
        "podAffinityTerm": {
            "topologyKey": "kubernetes.io/hostname",
            "labelSelector": {"matchLabels": meta.selector(server, tier)},
        },
    }
    other: Tier = "backup" if tier == "primary" else "primary"
    other_tier = {
        "weight": 50,
        "podAffinityTerm": {
            "topologyKey": ZONE_KEY,
            "labelSelector": {"matchLabels": meta.selector(server, other)},
        },
    }
    terms = [same_tier, other_tier] if len(tiers(server)) > 1 else [same_tier]
    return {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": terms}}


def _placement(server: MCPServer, tier: Tier) -> Obj:
    """``spec.pod`` placement with the tier's own overrides (a field set there replaces)."""
    pod = server.spec.pod
    own = server.spec.primary.pod if tier == "primary" else server.spec.backup.pod

    def pick(name: str) -> Any:
        value = getattr(own, name)
        return value if value is not None else getattr(pod, name)

    return {
        "nodeSelector": pick("node_selector"),
        "affinity": pick("affinity") or _default_affinity(server, tier),
        "tolerations": pick("tolerations"),
        "topologySpreadConstraints": pick("topology_spread_constraints"),
    }


def pod_template(server: MCPServer, tier: Tier) -> Obj:
    spec, pod = server.spec, server.spec.pod
    volumes: list[Obj] = [{"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}}]
    if _home_wanted(spec):
        volumes.append({"name": "home", "emptyDir": {"sizeLimit": spec.home.size_limit}})
    security = _pod_security(spec)
    pod_spec: Obj = {
        "serviceAccountName": service_account_name(server),
        "automountServiceAccountToken": pod.automount_service_account_token,
        "securityContext": security,
        "containers": [
            datakeys.with_keyring(auth.with_verifier(_container(server), server), server)
        ],
        "volumes": [
            *volumes,
            *pod.volumes,
            *auth.volumes(server),
            *datakeys.volumes(server, security),
        ],
        "readinessGates": [{"conditionType": meta.HEALTH_GATE}],
        "enableServiceLinks": False,
    }
    optional = {
        **_placement(server, tier),
        "imagePullSecrets": pod.image_pull_secrets,
        "priorityClassName": pod.priority_class_name,
    }
    pod_spec.update({k: v for k, v in optional.items() if v})
    annotations = {
        "kubectl.kubernetes.io/default-container": "mcp",
        **pod.annotations,
        meta.PROBE_PATH_ANNOTATION: spec.path,
        meta.PROBE_SCHEME_ANNOTATION: spec.health.scheme,
    }
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


def replicas_handed_off(server: MCPServer, tier: Tier) -> bool:
    """An autoscaler owns this tier's replicas: they are left out of the apply, so the
    operator's field manager never owns (and never resets) them."""
    return tier == "primary" and server.spec.primary.autoscaling.enabled


def deployment(server: MCPServer, tier: Tier, ctx: RenderContext) -> Obj:
    replicas = (
        {} if replicas_handed_off(server, tier) else {"replicas": tier_replicas(server, tier, ctx)}
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(server, meta.child_name(server, tier), tier, ctx.owner_uid, tier),
        "spec": {
            **replicas,
            "revisionHistoryLimit": 3,
            "selector": {"matchLabels": meta.selector(server, tier)},
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
            },
            "template": cache.with_credential_stamp(
                _with_drain(pod_template(server, tier), server, ctx), server, ctx, tier
            ),
        },
    }


def _with_drain(template: Obj, server: MCPServer, ctx: RenderContext) -> Obj:
    """The preStop sleep of ``spec.pod.drainSeconds`` and a grace period that covers it."""
    seconds = server.spec.pod.drain_seconds
    if not seconds or not ctx.capabilities.sleep_action():
        return template
    pod_spec = template["spec"]
    pod_spec["terminationGracePeriodSeconds"] = seconds + SHUTDOWN_GRACE_SECONDS
    for container in pod_spec["containers"]:
        if container["name"] == "mcp":
            container["lifecycle"] = {"preStop": {"sleep": {"seconds": seconds}}}
    return template


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
        "automountServiceAccountToken": server.spec.pod.automount_service_account_token,
    }
