"""The per-server Redis cache (``spec.cache``): pure renderers of its objects and wiring.

What is rendered here: Deployment and Service ``NAME-cache``, the configuration Secret
``NAME-cache-config`` (``redis.conf`` and the ACL file ``users.acl``), the NetworkPolicy
``NAME-cache``, and the ``MCP_CACHE_*`` env vars of both tiers. The credential Secret
``NAME-cache-auth`` is *not* applied by reconcile: the operator creates it once (create
if absent, see :func:`auth_secret`) so a password is never replaced under running clients.

The configuration only ever holds the password's SHA-256 (the ACL file's ``#<hex>`` form),
so the rendered objects, ``mcp-operator render`` and diffs carry no secret. Pods get the
password through ``secretKeyRef`` only: never on a command line, never in the pod spec.

Security: the ``default`` user is disabled; the MCP pods' user ``mcp`` may run reads and
writes but no ``@dangerous`` command (``FLUSHALL``, ``CONFIG``, ``KEYS``, ``DEBUG``, ...),
no scripting and no pub/sub. Redis runs as non-root under the *restricted* Pod Security
Standard with a read-only root filesystem and an emptyDir for ``/data``.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
from typing import Any

from mcp_operator.api.models import GROUP, MCPServer, Tier, quantity_bytes
from mcp_operator.render import meta
from mcp_operator.render.context import RenderContext

Obj = dict[str, Any]

PORT = 6379
PORT_NAME = "redis"
USERNAME = "mcp"
MONITOR_USERNAME = "monitor"
OPERATOR_USERNAME = "mcp-operator"
CACHE_LABEL = f"{GROUP}/cache"
CONFIG_DIR = "/etc/redis"
CONFIG_FILE = f"{CONFIG_DIR}/redis.conf"
ACL_FILE = f"{CONFIG_DIR}/users.acl"
DATA_DIR = "/data"
REDIS_UID = 999  # the official image's redis user
CONFIG_HASH_ANNOTATION = f"{GROUP}/cache-config-hash"
# On both tiers' pod templates: a new password (auth Secret deleted and regenerated) rolls
# the MCP pods, whose env holds the password read at start. A hash of the password's hash.
CREDENTIAL_ANNOTATION = f"{GROUP}/cache-credential-hash"
# Not a real hash: offline renders (no Secret read) get an ACL nobody can log in with.
UNKNOWN_PASSWORD_HASH = "0" * 64
HEADROOM_FRACTION = 0.25
HEADROOM_FIXED_MI = 32

# The env contract of both tiers (README "Cache"). Order matters: $(VAR) expansion only
# sees variables defined earlier in the list.
ENV_HOST = "MCP_CACHE_HOST"
ENV_PORT = "MCP_CACHE_PORT"
ENV_USERNAME = "MCP_CACHE_USERNAME"
ENV_PASSWORD = "MCP_CACHE_PASSWORD"
ENV_URL = "MCP_CACHE_URL"
URL_PARTS = (ENV_HOST, ENV_PORT, ENV_USERNAME, ENV_PASSWORD)  # what MCP_CACHE_URL refers to
SECRET_USERNAME_KEY = "username"
SECRET_PASSWORD_KEY = "password"
SECRET_MONITOR_PASSWORD_KEY = "monitorPassword"
SECRET_OPERATOR_PASSWORD_KEY = "operatorPassword"
SECRET_NEXT_PASSWORD_KEY = "nextPassword"  # a rotation's new password before anyone uses it
SECRET_ROTATION_KEY = "rotation"  # the rotation state (JSON; hashes and times only)
# The monitor user (for the operator and humans with the Secret): PING and INFO only -- the
# stats that show maxmemory, evictions and memory use -- and no key access at all.
MONITOR_USER_RULES = ("resetkeys", "resetchannels", "-@all", "+ping", "+info")
# The operator's user: it only reads and changes users' passwords (a password rotation is
# told to the running Redis, which must not restart for it) and reads the ACL log. No key
# access. ACL SETUSER can grant anything, so this password never leaves the Secret and the
# operator's memory: MCP pods and the Redis pod reference other keys only.
OPERATOR_USER_RULES = (
    "resetkeys", "resetchannels", "-@all", "+ping", "+acl|getuser", "+acl|setuser", "+acl|log",
)  # fmt: skip
# Set on the operator's pods by install.yaml, kustomize and the chart whatever its
# nameOverride/fullnameOverride (app.kubernetes.io/name follows nameOverride there).
OPERATOR_POD_LABELS = {f"{GROUP}/component": "operator"}

# The mcp user's commands: reads, writes, transactions and connection basics; then every
# @dangerous command (FLUSHALL, KEYS, CONFIG, DEBUG, ...) removed again. No scripting
# (EVAL runs arbitrary commands), no pub/sub channels.
MCP_USER_RULES = (
    "resetkeys",
    "~*",
    "resetchannels",
    "-@all",
    "+@connection",
    "+@read",
    "+@write",
    "+@transaction",
    "-@dangerous",
    "-@scripting",
    "-@pubsub",
    "-@admin",
    "-@blocking",
)


def name(server: MCPServer) -> str:
    return meta.child_name(server, "cache")


def auth_secret_name(server: MCPServer) -> str:
    return meta.child_name(server, "cache-auth")


def config_secret_name(server: MCPServer) -> str:
    return meta.child_name(server, "cache-config")


def host(server: MCPServer) -> str:
    """The Service's DNS name (namespace-qualified when the namespace is known)."""
    ns = server.metadata.namespace
    return f"{name(server)}.{ns}.svc" if ns else name(server)


def endpoint(server: MCPServer) -> str:
    """What ``status.cache.endpoint`` shows: no credentials."""
    return f"redis://{host(server)}:{PORT}"


def password_hash(password: str) -> str:
    """The ACL file's ``#<sha256 hex>`` form of a password."""
    return hashlib.sha256(password.encode()).hexdigest()


def memory_limit_mi(server: MCPServer) -> int:
    """The container's memory limit: maxmemory counts only data, so Redis's own structures,
    client buffers and allocator fragmentation need room above it (25% + 32Mi)."""
    max_bytes = quantity_bytes(server.spec.cache.max_memory)
    return math.ceil(max_bytes * (1 + HEADROOM_FRACTION) / 1024**2) + HEADROOM_FIXED_MI


def redis_conf(server: MCPServer) -> str:
    cache = server.spec.cache
    lines = [
        f"# Rendered by mcp-operator for {server.metadata.namespace}/{server.metadata.name}.",
        "bind * -::*",
        f"port {PORT}",
        "protected-mode yes",
        # No `dir`: the working directory (workingDir /data, the emptyDir) is Redis's dir.
        f"aclfile {ACL_FILE}",
        f"maxmemory {quantity_bytes(cache.max_memory)}",
        f"maxmemory-policy {cache.eviction_policy}",
        'save ""',
        "appendonly no",
        "loglevel notice",
        'logfile ""',
    ]
    return "\n".join(lines) + "\n"


def acl_file(
    hashes: tuple[str, ...] | str, monitor_hash_hex: str, operator_hash_hex: str | None = None
) -> str:
    """Default user off (no password, no commands); the mcp user with every password
    (hash) it accepts -- two during a rotation --, the monitor and the operator's users."""
    default = "user default off resetpass resetkeys resetchannels -@all"
    accepted = (hashes,) if isinstance(hashes, str) else hashes
    mcp = " ".join(("user", USERNAME, "on", *(f"#{h}" for h in accepted), *MCP_USER_RULES))
    monitor = " ".join(
        ("user", MONITOR_USERNAME, "on", f"#{monitor_hash_hex}", *MONITOR_USER_RULES)
    )
    lines = [default, mcp, monitor]
    if operator_hash_hex:
        lines.append(
            " ".join(
                ("user", OPERATOR_USERNAME, "on", f"#{operator_hash_hex}", *OPERATOR_USER_RULES)
            )
        )
    return "\n".join(lines) + "\n"


def _config_data(server: MCPServer, ctx: RenderContext, mcp_hashes: tuple[str, ...]) -> Obj:
    return {
        "redis.conf": redis_conf(server),
        "users.acl": acl_file(
            mcp_hashes,
            ctx.cache_monitor_hash or UNKNOWN_PASSWORD_HASH,
            ctx.cache_operator_hash,
        ),
    }


def accepted_hashes(ctx: RenderContext) -> tuple[str, ...]:
    """The MCP user's passwords Redis accepts: the current one, and during a rotation the
    other (a sorted pair, so the file does not change when the roles swap)."""
    current = ctx.cache_password_hash or UNKNOWN_PASSWORD_HASH
    return tuple(sorted({current, *ctx.cache_extra_hashes}))


def config_secret(server: MCPServer, ctx: RenderContext) -> Obj:
    data = _config_data(server, ctx, accepted_hashes(ctx))
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta.metadata(server, config_secret_name(server), "cache", ctx.owner_uid),
        "type": "Opaque",
        # data, not stringData: the live object only has data, and a drift check compares.
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def auth_secret(
    server: MCPServer,
    password: str,
    monitor_password: str,
    owner_uid: str | None,
    operator_password: str | None = None,
) -> Obj:
    """The credential Secret, created once by the operator (never applied by reconcile;
    the password rotation updates it with optimistic concurrency)."""
    data = {
        SECRET_USERNAME_KEY: USERNAME,
        SECRET_PASSWORD_KEY: password,
        SECRET_MONITOR_PASSWORD_KEY: monitor_password,
    }
    if operator_password is not None:
        data[SECRET_OPERATOR_PASSWORD_KEY] = operator_password
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta.metadata(server, auth_secret_name(server), "cache", owner_uid),
        "type": "Opaque",
        "stringData": data,
    }


def pod_labels(server: MCPServer) -> dict[str, str]:
    """Not the server label: the health prober treats a server's labelled pods as MCP pods."""
    return {
        "app.kubernetes.io/name": "mcp-server-cache",
        "app.kubernetes.io/instance": server.metadata.name,
        "app.kubernetes.io/component": "cache",
        "app.kubernetes.io/managed-by": meta.MANAGED_BY,
        "app.kubernetes.io/part-of": "mcp-operator",
        CACHE_LABEL: server.metadata.name,
    }


def _secret_env(env_name: str, secret: str, key: str, optional: bool = False) -> Obj:
    ref: Obj = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": env_name, "valueFrom": {"secretKeyRef": ref}}


def _readiness_command() -> list[str]:
    # An authenticated PING: the password comes from REDISCLI_AUTH (the Secret), never argv.
    # The monitor user's, which does not rotate: the env of a running Redis pod keeps the
    # value it started with, and the MCP user's password changes under it.
    # POD_IP, not localhost: under the dev node agent Redis listens on the pod IP only.
    script = (
        'exec redis-cli --no-auth-warning -h "${POD_IP:-127.0.0.1}" -p '
        f"{PORT} --user {MONITOR_USERNAME} PING | grep -q PONG"
    )
    return ["sh", "-c", script]


_SUFFIXES = {
    "m": 1e-3, "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50, "Ei": 2.0**60,
}  # fmt: skip
_QUANTITY = re.compile(r"^([+]?[0-9]*\.?[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$")


def _amount(value: Any) -> float | None:
    """A Kubernetes quantity as a number (None: a form this does not read, left alone)."""
    match = _QUANTITY.match(str(value))
    if match is None:
        return None
    return float(match.group(1)) * _SUFFIXES[match.group(2) or ""]


def _resources(server: MCPServer) -> Obj:
    """Default requests (50m CPU, memory = the derived limit) under the user's, and every
    request lowered to its limit when above it: the API server refuses a container whose
    request exceeds its limit (``requests.memory: 1Gi`` over the derived 112Mi, or the
    default 50m CPU over a user's ``limits.cpu: 10m``), which would fail every apply."""
    limit = f"{memory_limit_mi(server)}Mi"
    base: Obj = {"requests": {"cpu": "50m", "memory": limit}, "limits": {"memory": limit}}
    user = server.spec.cache.resources
    requests = {**base["requests"], **(user.get("requests") or {})}
    limits = {**(user.get("limits") or {}), **base["limits"]}
    for resource, cap in limits.items():
        have, most = _amount(requests.get(resource)), _amount(cap)
        if have is not None and most is not None and have > most:
            requests[resource] = cap
    return {"requests": requests, "limits": limits}


def _container(server: MCPServer) -> Obj:
    cache = server.spec.cache
    secret = auth_secret_name(server)
    return {
        "name": "redis",
        "image": cache.image,
        "imagePullPolicy": cache.image_pull_policy,
        "command": ["redis-server"],
        "args": [CONFIG_FILE],
        "workingDir": DATA_DIR,
        "ports": [{"name": PORT_NAME, "containerPort": PORT, "protocol": "TCP"}],
        "env": [
            {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            _secret_env("REDISCLI_AUTH", secret, SECRET_MONITOR_PASSWORD_KEY),
        ],
        "resources": _resources(server),
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": [
            {"name": "data", "mountPath": DATA_DIR},
            {"name": "config", "mountPath": CONFIG_DIR, "readOnly": True},
        ],
        "livenessProbe": {
            "tcpSocket": {"port": PORT_NAME},
            "periodSeconds": 10,
            "failureThreshold": 3,
            "timeoutSeconds": 2,
        },
        "readinessProbe": {
            "exec": {"command": _readiness_command()},
            "periodSeconds": 2,
            "failureThreshold": 2,
            "timeoutSeconds": 2,
        },
    }


def config_hash(server: MCPServer, ctx: RenderContext) -> str:
    """Stamped on the pod template: a changed config restarts Redis (Secret volumes update
    in place, but Redis reads its config only at start). Not the MCP user's passwords: a
    rotation tells the running Redis (ACL SETUSER) and must not restart it."""
    data = _config_data(server, ctx, ("mcp-user-passwords",))
    text = "\0".join(f"{k}={v}" for k, v in sorted(data.items()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _placement(server: MCPServer) -> Obj:
    """``spec.pod``'s scheduling and pull settings, which a tainted node pool or a private
    registry mirror need for the cache pod just as for the MCP pods. Not the MCP pods'
    security overrides, affinity or spread constraints (those select MCP pods' labels)."""
    pod = server.spec.pod
    wanted = {
        "imagePullSecrets": pod.image_pull_secrets,
        "tolerations": pod.tolerations,
        "nodeSelector": pod.node_selector,
        "priorityClassName": pod.priority_class_name,
    }
    return {k: v for k, v in wanted.items() if v}


def deployment(server: MCPServer, ctx: RenderContext) -> Obj:
    labels = pod_labels(server)
    selector = {CACHE_LABEL: server.metadata.name}
    pod_spec: Obj = {
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": REDIS_UID,
            "runAsGroup": REDIS_UID,
            "fsGroup": REDIS_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [_container(server)],
        "volumes": [
            {"name": "data", "emptyDir": {"sizeLimit": "64Mi"}},
            {
                "name": "config",
                "secret": {"secretName": config_secret_name(server), "defaultMode": 0o440},
            },
        ],
    }
    pod_spec.update(_placement(server))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": meta.metadata(server, name(server), "cache", ctx.owner_uid),
        "spec": {
            "replicas": 1,
            "revisionHistoryLimit": 3,
            # Recreate: two Redis pods would split the cache and double its memory.
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": selector},
            "template": {
                "metadata": {
                    "labels": labels,
                    "annotations": {CONFIG_HASH_ANNOTATION: config_hash(server, ctx)},
                },
                "spec": pod_spec,
            },
        },
    }


def service(server: MCPServer, ctx: RenderContext) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": meta.metadata(server, name(server), "cache", ctx.owner_uid),
        "spec": {
            "type": "ClusterIP",
            "selector": {CACHE_LABEL: server.metadata.name},
            "ports": [
                {"name": PORT_NAME, "port": PORT, "targetPort": PORT_NAME, "protocol": "TCP"}
            ],
        },
    }


def network_policy(server: MCPServer, ctx: RenderContext) -> Obj:
    """Only this server's MCP pods (either tier) and the operator's pods reach the Redis
    port. The operator is selected by its namespace's name (``kubernetes.io/metadata.name``,
    set by the API server, so nobody can fake it) and its pods' labels: a peer "any pod
    labelled mcp-operator in any namespace" would be a label anyone can set."""
    mcp_pods = {
        "podSelector": {
            "matchLabels": {meta.SERVER_LABEL: server.metadata.name},
            "matchExpressions": [
                {"key": meta.TIER_LABEL, "operator": "In", "values": ["primary", "backup"]}
            ],
        }
    }
    operator_pods = {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": ctx.operator_namespace}
        },
        "podSelector": {"matchLabels": dict(OPERATOR_POD_LABELS)},
    }
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": meta.metadata(server, name(server), "cache", ctx.owner_uid),
        "spec": {
            "podSelector": {"matchLabels": {CACHE_LABEL: server.metadata.name}},
            "policyTypes": ["Ingress"],
            "ingress": [
                {"from": [mcp_pods, operator_pods], "ports": [{"protocol": "TCP", "port": PORT}]}
            ],
        },
    }


def objects(server: MCPServer, ctx: RenderContext) -> list[Obj]:
    """The cache's applied objects in apply order (config before the pods that mount it)."""
    if not server.spec.cache.enabled:
        return []
    return [
        config_secret(server, ctx),
        deployment(server, ctx),
        service(server, ctx),
        network_policy(server, ctx),
    ]


def env(server: MCPServer) -> list[Obj]:
    """The MCP containers' cache contract; the URL is composed by ``$(VAR)`` expansion, so
    the pod spec holds references only (the password is URL-safe by construction)."""
    if not server.spec.cache.enabled:
        return []
    secret = auth_secret_name(server)
    url = f"redis://$({ENV_USERNAME}):$({ENV_PASSWORD})@$({ENV_HOST}):$({ENV_PORT})/0"
    return [
        {"name": ENV_HOST, "value": host(server)},
        {"name": ENV_PORT, "value": str(PORT)},
        # Optional: a deleted auth Secret or one without the key (CredentialInvalid) must
        # not stop MCP pods from starting (CreateContainerConfigError); serving does not
        # need the cache, the pods just cannot log in to it until the Secret is fixed.
        _secret_env(ENV_USERNAME, secret, SECRET_USERNAME_KEY, optional=True),
        _secret_env(ENV_PASSWORD, secret, SECRET_PASSWORD_KEY, optional=True),
        {"name": ENV_URL, "value": url},
    ]


def credential_stamp(password_hash: str) -> str:
    """The pod-template annotation's value for a password: a truncated SHA-256 of its
    SHA-256, never the password."""
    return hashlib.sha256(f"credential\0{password_hash}".encode()).hexdigest()[:16]


def tier_hash(ctx: RenderContext, tier: Tier) -> str | None:
    """The password (hash) ``tier``'s pods should run: during a rotation the tier not
    serving moves to the new password before the other."""
    return dict(ctx.cache_tier_hashes).get(tier, ctx.cache_password_hash)


def with_credential_stamp(template: Obj, server: MCPServer, ctx: RenderContext, tier: Tier) -> Obj:
    """Stamp an MCP tier's pod template with :data:`CREDENTIAL_ANNOTATION` (nothing when the
    cache is off or the credential unknown, e.g. an offline render). A new stamp rolls the
    tier: its pods read the Secret's password at start."""
    wanted = tier_hash(ctx, tier)
    if not server.spec.cache.enabled or not wanted:
        return template
    annotations = template["metadata"].setdefault("annotations", {})
    annotations[CREDENTIAL_ANNOTATION] = credential_stamp(wanted)
    return template
