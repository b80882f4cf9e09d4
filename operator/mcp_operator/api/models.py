"""The ``MCPServer`` API (``mcp-operator.dev/v1alpha1``), defined once.

These models are the single source of truth: the CRD's structural schema is generated from
them (:mod:`mcp_operator.api.crd`), the renderers read them, and the CLI validates with them.
Field names are camelCase on the wire. Defaults live on object fields, never inside list
items, so a GitOps tool never sees a server-defaulted list item as drift.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.alias_generators import to_camel
from pydantic_core import PydanticCustomError

from mcp_operator.api import kubeschema
from mcp_operator.api.durations import DURATION_PATTERN, parse_duration
from mcp_operator.api.rules import Rule, RuledModel

GROUP = "mcp-operator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MCPServer"
PLURAL = "mcpservers"

# Children are NAME-primary, NAME-backup, NAME-cache, NAME-jwks, ...; the longest suffix we
# reserve is 18 characters, so every child name stays a DNS-1035 label of at most 63.
MAX_NAME_LENGTH = 45
DNS1035 = r"^[a-z]([-a-z0-9]*[a-z0-9])?$"
QUANTITY_PATTERN = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|k|M|G|T)?$"
RESERVED_LABEL_PREFIXES = ("app.kubernetes.io/", f"{GROUP}/")

Tier = Literal["primary", "backup"]
KubeObject = dict[str, Any]
NON_ROOT_UID = 65532


_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def _key_problems(key: str) -> list[str]:
    """Kubernetes' qualified-name rule for label and annotation keys: [prefix/]name."""
    prefix, _, name = key.rpartition("/")
    out = []
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        out.append(
            "is not a valid key: the name part must be 1-63 characters of letters, digits, "
            "'-', '_' or '.', starting and ending with a letter or digit"
        )
    if prefix and (len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        out.append("is not a valid key: the prefix must be a DNS subdomain (e.g. example.com)")
    return out


def _labels_check(values_too: bool) -> AfterValidator:
    """Label (or annotation) keys, and label values, as the API server checks them; every bad
    entry reported, by key."""

    def validate(value: dict[str, str]) -> dict[str, str]:
        problems: list[tuple[str, str]] = []
        for key, item in value.items():
            at = key if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key) else f'["{key}"]'
            problems += [(at, message) for message in _key_problems(key)]
            if values_too and (len(item) > 63 or not _LABEL_NAME.match(item)):
                problems.append(
                    (
                        at,
                        "is not a valid label value: at most 63 characters of letters, "
                        "digits, '-', '_' or '.', starting and ending with a letter or digit",
                    )
                )
        if problems:
            raise PydanticCustomError(
                "k8s_schema",
                "{summary}",
                {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
            )
        return value

    return AfterValidator(validate)


Labels = Annotated[dict[str, str], _labels_check(values_too=True)]
Annotations = Annotated[dict[str, str], _labels_check(values_too=False)]


def _kube_check(kind: str) -> AfterValidator:
    """Validate a free-form Kubernetes sub-object against the real Kubernetes schema of
    ``kind``; all its problems become one error that validation.py splits by path."""

    def validate(value: KubeObject) -> KubeObject:
        problems = kubeschema.check(kind, value)
        if problems:
            raise PydanticCustomError(
                "k8s_schema",
                "{summary}",
                {"summary": "; ".join(f"{p}: {m}" for p, m in problems), "problems": problems},
            )
        return value

    return AfterValidator(validate)


# Names the operator adds to every pod (render/datakeys.py, render/workload.py): a user entry
# of the same name would make the Deployment carry it twice, and server-side apply refuses
# duplicate list keys, so neither tier could be updated. Model-only (not CEL: the API server
# cannot read fields of these free-form objects).
RESERVED_ENV = {"MCP_DATA_KEYS_PATH": "spec.dataEncryption"}
RESERVED_VOLUMES = {
    "mcp-operator-data-keys": "spec.dataEncryption",
    "tmp": "/tmp",
    "home": "spec.home",
}


def _not_reserved(names: dict[str, str], what: str) -> AfterValidator:
    def validate(value: KubeObject) -> KubeObject:
        owner = names.get(str(value.get("name")))
        if owner is not None:
            message = f"{what} {value['name']!r} is reserved: the operator sets it (for {owner})"
            raise PydanticCustomError(
                "k8s_schema", "{summary}", {"summary": message, "problems": [("name", message)]}
            )
        return value

    return AfterValidator(validate)


EnvVar = Annotated[KubeObject, _kube_check("EnvVar"), _not_reserved(RESERVED_ENV, "the name")]
EnvFromSource = Annotated[KubeObject, _kube_check("EnvFromSource")]
Toleration = Annotated[KubeObject, _kube_check("Toleration")]
Volume = Annotated[KubeObject, _kube_check("Volume"), _not_reserved(RESERVED_VOLUMES, "the name")]
VolumeMount = Annotated[KubeObject, _kube_check("VolumeMount")]
LocalObjectReference = Annotated[KubeObject, _kube_check("LocalObjectReference")]
TopologySpreadConstraint = Annotated[KubeObject, _kube_check("TopologySpreadConstraint")]
Affinity = Annotated[KubeObject, _kube_check("Affinity")]
Probe = Annotated[KubeObject, _kube_check("Probe")]
ResourceRequirements = Annotated[KubeObject, _kube_check("ResourceRequirements")]
# The two fields the root rules read are declared (CEL cannot see undeclared fields of a
# schemaless object); every other field is kept as is and checked by ``kubeschema``.
_ROOT_FIELDS = WithJsonSchema(
    {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "properties": {
            "runAsUser": {
                "type": "integer",
                "format": "int64",
                "description": "The UID the container runs as; 0 (root) needs runAsNonRoot false.",
            },
            "runAsNonRoot": {
                "type": "boolean",
                "description": "Refuse to start a container that would run as UID 0.",
            },
        },
    }
)
PodSecurityContext = Annotated[KubeObject, _kube_check("PodSecurityContext"), _ROOT_FIELDS]
SecurityContext = Annotated[KubeObject, _kube_check("SecurityContext"), _ROOT_FIELDS]


class Model(RuledModel):
    """Base: camelCase aliases, unknown fields refused (a typo is an error, not a no-op)."""

    # strict: "8080" is not a port and "yes" is not a boolean, exactly as the API server says.
    # Attribute docstrings become the CRD's field descriptions (`kubectl explain`).
    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        strict=True,
        use_attribute_docstrings=True,
    )


class StatusModel(Model):
    """Status arrives as JSON from the API server: timestamps are strings there. Unknown
    fields are ignored, not refused: status is durable state, and a field written by a newer
    operator (before a rollback) must not reset the whole status -- breakers, failover record
    and all."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="ignore",
        frozen=True,
        strict=False,
        use_attribute_docstrings=True,
    )


class TierPod(Model):
    """Placement of one tier's pods; each field set here replaces the one from ``spec.pod``
    (unset fields are taken from ``spec.pod``)."""

    node_selector: Labels | None = None
    """Node labels the tier's nodes must carry (Kubernetes ``nodeSelector``)."""
    affinity: Affinity | None = None
    """Kubernetes ``Affinity`` for the tier's pods."""
    tolerations: list[Toleration] | None = None
    """Kubernetes ``Toleration`` list for the tier's pods."""
    topology_spread_constraints: list[TopologySpreadConstraint] | None = None
    """Kubernetes ``TopologySpreadConstraint`` list for the tier's pods."""


ROOT_MESSAGE = (
    "0 (root) contradicts runAsNonRoot: true (the restricted default), so the kubelet would "
    "never start the container; set runAsNonRoot: false in securityContext and "
    "containerSecurityContext if the server really must run as root"
)


def _root_contradiction(pod: KubeObject, ctr: KubeObject) -> str | None:
    """Which context sets ``runAsUser: 0`` while the container's effective ``runAsNonRoot``
    is true (the container's value wins over the pod's, as in Kubernetes), or None."""
    uid = ctr.get("runAsUser", pod.get("runAsUser", NON_ROOT_UID))
    non_root = ctr.get("runAsNonRoot", pod.get("runAsNonRoot", True))
    if uid != 0 or not non_root:
        return None
    return "containerSecurityContext" if "runAsUser" in ctr else "securityContext"


def _cel_has(context: str, field: str) -> str:
    """CEL: ``self.CONTEXT.FIELD`` is set (the contexts are schemaless)."""
    return f"has(self.{context}) && has(self.{context}.{field})"


def _cel_field(context: str, field: str, default: str) -> str:
    """CEL for ``self.CONTEXT.FIELD`` or DEFAULT when absent."""
    return f"({_cel_has(context, field)} ? self.{context}.{field} : {default})"


_CEL_NON_ROOT = _cel_field(
    "containerSecurityContext",
    "runAsNonRoot",
    _cel_field("securityContext", "runAsNonRoot", "true"),
)
_CEL_POD_UID_SET = _cel_has("securityContext", "runAsUser")
_CEL_CTR_UID_SET = _cel_has("containerSecurityContext", "runAsUser")


class PodSettings(Model):
    """Pod-level settings for both tiers. The pods meet the *restricted* Pod Security Standard
    unless you override the security contexts (deep-merged over the defaults)."""

    node_selector: Labels = Field(default_factory=dict)
    """Node labels a pod's node must carry (Kubernetes ``nodeSelector``)."""
    affinity: Affinity = Field(default_factory=dict)
    """Kubernetes ``Affinity``. When empty, pods of a tier prefer different nodes, and the
    two tiers prefer different zones (``topology.kubernetes.io/zone``) when nodes carry it."""
    tolerations: list[Toleration] = Field(default_factory=list)
    """Kubernetes ``Toleration`` list: taints the pods tolerate."""
    topology_spread_constraints: list[TopologySpreadConstraint] = Field(default_factory=list)
    """Kubernetes ``TopologySpreadConstraint`` list; the selector is up to you (the pods
    carry ``mcp-operator.dev/server`` and ``mcp-operator.dev/tier`` labels)."""

    service_account_name: str | None = Field(default=None, max_length=253)
    """Run as this existing ServiceAccount instead of the one the operator creates
    (``NAME``, which has no API token)."""
    automount_service_account_token: bool = False
    """Mount an API token into the pods. Off by default (an MCP server rarely needs the
    Kubernetes API); turn it on for servers that call the API with their own ServiceAccount."""
    annotations: Annotations = Field(default_factory=dict)
    """Annotations added to the pod template (not to the Deployment)."""
    labels: Labels = Field(default_factory=dict)
    """Labels added to the pod template; the prefixes ``app.kubernetes.io/`` and
    ``mcp-operator.dev/`` are reserved."""
    image_pull_secrets: list[LocalObjectReference] = Field(default_factory=list)
    """Secrets (``{name: ...}``) used to pull the image from a private registry."""
    security_context: PodSecurityContext = Field(default_factory=dict)
    """Kubernetes ``PodSecurityContext``, deep-merged over the defaults (runAsNonRoot,
    UID/GID/fsGroup 65532, RuntimeDefault seccomp)."""
    # validate_default: the root check below must run when only the pod context is given.
    container_security_context: SecurityContext = Field(default_factory=dict, validate_default=True)
    """Kubernetes ``SecurityContext`` of the MCP container, deep-merged over the defaults (no
    privilege escalation, read-only root filesystem, all capabilities dropped). ``runAsUser:
    0`` (here or in ``securityContext``) is refused unless ``runAsNonRoot`` is false."""
    priority_class_name: str | None = Field(default=None, max_length=253)
    """Kubernetes ``priorityClassName`` of the pods."""
    drain_seconds: int = Field(default=5, ge=0, le=300)
    """Seconds a terminating pod keeps serving before its process gets SIGTERM (a
    ``preStop`` sleep, Kubernetes 1.30 and later), so that Services and proxies stop sending
    it requests first: without it, a rollout or a scale-down refuses the requests routed to a
    pod in the moment between its SIGTERM and its removal from the endpoints. The grace
    period is this plus 30 s for the server's own shutdown. 0 turns it off."""
    volumes: list[Volume] = Field(default_factory=list)
    """Kubernetes ``Volume`` list added to the pods (ConfigMaps, Secrets, PVCs, ...); mount
    them with ``spec.volumeMounts``. The names ``tmp`` and ``home`` are the operator's."""

    __rules__ = (
        Rule(
            field="labels",
            cel="!has(self.labels) || self.labels.all(k, !k.startsWith('app.kubernetes.io/') && "
            "!k.startsWith('mcp-operator.dev/'))",
            message="must not use the reserved prefixes app.kubernetes.io/ or mcp-operator.dev/",
            check=lambda s: not any(k.startswith(RESERVED_LABEL_PREFIXES) for k in s.labels),
        ),
        Rule(
            field="containerSecurityContext.runAsUser",
            cel=f"!({_CEL_CTR_UID_SET}) || self.containerSecurityContext.runAsUser != 0 || "
            f"!{_CEL_NON_ROOT}",
            message=ROOT_MESSAGE,
            check=lambda s: (
                _root_contradiction(s.security_context, s.container_security_context)
                != "containerSecurityContext"
            ),
        ),
        Rule(
            field="securityContext.runAsUser",
            cel=f"{_CEL_CTR_UID_SET} || !({_CEL_POD_UID_SET}) || "
            f"self.securityContext.runAsUser != 0 || !{_CEL_NON_ROOT}",
            message=ROOT_MESSAGE,
            check=lambda s: (
                _root_contradiction(s.security_context, s.container_security_context)
                != "securityContext"
            ),
        ),
    )

    @field_validator("container_security_context")
    @classmethod
    def _root_needs_run_as_non_root_off(cls, ctr: KubeObject, info: ValidationInfo) -> KubeObject:
        """``runAsUser: 0`` beside ``runAsNonRoot: true`` (a default) renders fine and then the
        kubelet refuses to start the container: refuse it here, saying why. A field validator
        (not a model one) so that it is reported beside problems of other pod fields; the same
        predicate is a CEL rule in ``__rules__`` so a current API server refuses it too."""
        where = _root_contradiction(info.data.get("security_context") or {}, ctr)
        if where:
            raise PydanticCustomError(
                "cross_field",
                "{message}",
                {
                    "field": f"{where}.runAsUser",
                    "sibling": True,  # the path is relative to spec.pod, not to this field
                    "message": ROOT_MESSAGE,
                },
            )
        return ctr


class ServiceSpec(Model):
    """The Services in front of the pods."""

    session_affinity: Literal["None", "ClientIP"] = "None"
    """``ClientIP`` sends each client to the same pod: for legacy (session-based, 2025 MCP
    revisions) servers with more than one replica, whose sessions live in one pod's memory.
    Modern (sessionless) servers need ``None``."""


class HomeSpec(Model):
    """A writable home directory (npx/uvx-based servers write caches there; the root
    filesystem is read-only)."""

    enabled: bool = True
    """Mount an emptyDir at ``mountPath`` and set ``HOME`` to it (unless ``spec.env`` sets
    ``HOME``)."""
    mount_path: str = Field(default="/home/mcp", pattern=r"^/.*$", max_length=256)
    """Where the home directory is mounted."""
    size_limit: str = Field(default="256Mi", pattern=QUANTITY_PATTERN, max_length=16)
    """Size limit of the emptyDir."""


class AutoscalingSpec(Model):
    """Hand a tier's ``replicas`` to a HorizontalPodAutoscaler you create (target: the
    Deployment ``NAME-primary``)."""

    enabled: bool = False
    """The operator leaves the Deployment's ``replicas`` out of its server-side apply, so an
    HPA (or any other writer of the scale subresource) owns it and is never fought. A new
    Deployment starts at 1 replica until the HPA scales it."""


class Probes(Model):
    """Kubernetes probe overrides; by default each is a TCP check on the MCP port."""

    startup: Probe | None = None
    """Kubernetes ``Probe`` replacing the default startup probe."""
    liveness: Probe | None = None
    """Kubernetes ``Probe`` replacing the default liveness probe."""
    readiness: Probe | None = None
    """Kubernetes ``Probe`` replacing the default readiness probe."""


class PrimarySpec(Model):
    """The primary tier: serves traffic while healthy."""

    replicas: int = Field(default=2, ge=1, le=100)
    """Pods in the primary tier (the floor an HPA is expected to keep when autoscaling)."""
    pod: TierPod = Field(default_factory=TierPod)
    """Placement overrides for the primary tier's pods."""
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    """Let an HPA own the primary's replicas."""
    min_healthy_pods: int | None = Field(default=None, ge=1, le=100)
    """Pods that must answer MCP for the primary to count as healthy (default:
    ``health.minHealthyPods``); at most ``replicas``."""


class BackupSpec(Model):
    """The backup tier: takes traffic when the primary fails."""

    enabled: bool = True
    """Run a backup tier. ``false``: a single-tier server -- no backup Deployment, no
    failover, whatever ``failover.enabled`` says."""
    replicas: int = Field(default=1, ge=1, le=100)
    """Pods in the backup tier while it runs."""
    standby: Literal["hot", "cold"] = "hot"
    """``hot``: the backup runs all the time; ``cold``: zero pods until it is promoted
    (slower failover, no idle cost)."""
    pod: TierPod = Field(default_factory=TierPod)
    """Placement overrides for the backup tier's pods."""
    min_healthy_pods: int | None = Field(default=None, ge=1, le=100)
    """Pods that must answer MCP for the backup to count as healthy (default:
    ``health.minHealthyPods``); at most ``replicas``."""


class HealthSpec(Model):
    """MCP-level probing by the operator and the per-tier circuit breaker."""

    interval_seconds: int = Field(default=2, ge=1, le=300)
    """Seconds between probe rounds (every pod of each tier is probed each round)."""
    timeout_seconds: int = Field(default=1, ge=1, le=60)
    """Seconds one MCP probe may take."""
    failure_threshold: int = Field(default=3, ge=1, le=100)
    """Failed rounds in a row that open a tier's circuit breaker (the tier is unhealthy)."""
    success_threshold: int = Field(default=2, ge=1, le=100)
    """Successful half-open rounds that close the breaker again."""
    recovery_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    """Seconds an open breaker waits before probing again (half-open)."""
    min_healthy_pods: int = Field(default=1, ge=1, le=100)
    """Pods that must answer MCP for a round to count as a success, for each tier that does
    not set its own (``primary.minHealthyPods``, ``backup.minHealthyPods``)."""
    bearer_token_secret_ref: SecretKeyRef | None = None
    """A Secret key holding a bearer token the probe sends, for servers that require auth
    (OAuth). Without it such servers keep serving but are reported ``Verified=False``."""
    scheme: Literal["http", "https"] = "http"
    """How the probe reaches the pods. ``https`` without ``caSecretRef`` skips certificate
    verification, as the kubelet's https probes do."""
    ca_secret_ref: SecretKeyRef | None = None
    """A Secret key holding the PEM CA bundle that signs the pods' certificates (https only);
    the name verified is ``hostHeader``'s host, if set."""
    host_header: str | None = Field(
        default=None, max_length=253, pattern=r"^[A-Za-z0-9.-]+(:[0-9]{1,5})?$"
    )
    """The Host header the probe sends (for servers with a Host allowlist)."""
    headers: dict[str, str] = Field(default_factory=dict)
    """Extra headers the probe sends (not Host, Authorization, Accept, Content-Type or
    Content-Length: use ``hostHeader`` and ``bearerTokenSecretRef``)."""

    __rules__ = (
        Rule(
            field="timeoutSeconds",
            cel="self.timeoutSeconds <= self.intervalSeconds",
            message="must not exceed intervalSeconds (a probe round must end before the next)",
            check=lambda s: s.timeout_seconds <= s.interval_seconds,
        ),
        Rule(
            field="recoveryTimeoutSeconds",
            cel="self.recoveryTimeoutSeconds >= self.intervalSeconds",
            message="must be at least intervalSeconds (the breaker needs a probe to half-open)",
            check=lambda s: s.recovery_timeout_seconds >= s.interval_seconds,
        ),
        Rule(
            field="headers",
            cel="!has(self.headers) || self.headers.all(k, k.matches('^[A-Za-z0-9-]+$') && "
            "!(k.lowerAscii() in ['host', 'authorization', 'content-type', 'accept', "
            "'content-length']))",
            message="names must be tokens, and not Host, Authorization, Content-Type, Accept or "
            "Content-Length",
            check=lambda s: all(_probe_header_ok(k) for k in s.headers),
        ),
        Rule(
            field="caSecretRef",
            cel="!has(self.caSecretRef) || self.scheme == 'https'",
            message="needs scheme: https",
            check=lambda s: s.ca_secret_ref is None or s.scheme == "https",
        ),
        Rule(
            field="successThreshold",
            cel="self.successThreshold <= self.failureThreshold * 10",
            message="must be at most 10 times failureThreshold, or recovery would take forever",
            check=lambda s: s.success_threshold <= s.failure_threshold * 10,
        ),
    )


_RESERVED_PROBE_HEADERS = {"host", "authorization", "content-type", "accept", "content-length"}


def _probe_header_ok(name: str) -> bool:
    token = bool(name) and all(c.isascii() and (c.isalnum() or c == "-") for c in name)
    return token and name.lower() not in _RESERVED_PROBE_HEADERS


class SecretKeyRef(Model):
    """A key of a Secret in the server's namespace."""

    name: str = Field(min_length=1, max_length=253)
    """The Secret's name."""
    key: str = Field(min_length=1, max_length=253)
    """The key within the Secret."""


class FailoverSpec(Model):
    """When and how the stable Service moves between the tiers."""

    enabled: bool = True
    """Move traffic to the backup when the primary's breaker opens."""
    failback: Literal["Automatic", "Manual"] = "Automatic"
    """``Automatic``: back to the primary after ``cooldownSeconds`` of health; ``Manual``:
    only through the ``mcp-operator.dev/switchover`` annotation."""
    cooldown_seconds: int = Field(default=60, ge=0, le=86400)
    """Seconds the primary must stay healthy before an automatic failback."""
    max_failovers: int = Field(default=3, ge=1, le=100)
    """Failovers within ``windowSeconds`` after which automatic failback is held (flapping)."""
    window_seconds: int = Field(default=600, ge=60, le=86400)
    """The flap-guard window, in seconds."""
    cold_start_timeout_seconds: int = Field(default=120, ge=5, le=3600)
    """Seconds a cold backup may take to become healthy after being scaled up."""


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class RotationSpec(Model):
    """When signing keys rotate. ``publishAhead`` must exceed the time a published JWKS
    takes to reach every verifier (a ConfigMap volume: up to ~2 minutes on a kubelet)."""

    every: Duration = "720h"
    """How often a new signing key is made (Go duration, e.g. ``720h``)."""
    publish_ahead: Duration = "10m"
    """How long a new public key is published before it signs."""


class AuthSpec(Model):
    """The operator as the token issuer: signing keys, a published JWKS, rotation.

    ``tokenTTL`` may be as short as 10s and ``rotation`` durations are free (only the
    cross-field rule below), so a whole rotation can be exercised in a minute; production
    values are the defaults. ``leeway`` is the clock skew verifiers accept after ``exp``;
    a retired key stays published for ``tokenTTL`` + ``leeway`` after its last signature.
    """

    enabled: bool = False
    """Issue tokens: signing keys, a JWKS mounted into the pods, rotation."""
    algorithm: Literal["ES256", "EdDSA", "RS256"] = "ES256"
    """Signing algorithm."""
    token_ttl: Duration = Field(default="1h", alias="tokenTTL")
    """Lifetime of issued tokens, 10s to 24h (the CLI refuses longer ones)."""
    leeway: Duration = "30s"
    """Clock skew verifiers accept after ``exp``, at most 60s; retired keys stay published
    for tokenTTL + leeway after their last signature."""
    issuer: str | None = Field(default=None, max_length=253)
    """The ``iss`` claim; defaults to ``urn:mcp-operator:NAMESPACE:NAME``."""
    rotation: RotationSpec = Field(default_factory=RotationSpec)
    """Key rotation schedule."""

    __rules__ = (
        Rule(
            field="rotation.every",
            cel="duration(self.rotation.every) > duration(self.rotation.publishAhead) + "
            "duration(self.tokenTTL)",
            message="must be longer than rotation.publishAhead + tokenTTL",
            check=lambda s: (
                parse_duration(s.rotation.every)
                > parse_duration(s.rotation.publish_ahead) + parse_duration(s.token_ttl)
            ),
        ),
        Rule(
            field="tokenTTL",
            cel="duration(self.tokenTTL) >= duration('10s') && duration(self.tokenTTL) <= "
            "duration('24h')",
            message="must be between 10s and 24h",
            check=lambda s: 10 <= parse_duration(s.token_ttl).total_seconds() <= 86400,
        ),
        Rule(
            field="leeway",
            cel="duration(self.leeway) <= duration('60s')",
            message="must be at most 60s (RFC 8725: a small clock-skew allowance)",
            check=lambda s: parse_duration(s.leeway).total_seconds() <= 60,
        ),
    )


def quantity_bytes(value: str) -> int:
    """A Kubernetes memory quantity (``256Mi``, ``1G``, ``1048576``) in bytes."""
    match = re.fullmatch(QUANTITY_PATTERN, value)
    if match is None:
        raise ValueError(f"not a quantity: {value!r}")
    suffix = match.group(2) or ""
    number = value[: len(value) - len(suffix)] if suffix else value
    return int(float(number) * _QUANTITY_FACTORS[suffix])


_QUANTITY_FACTORS = {
    "": 1,
    "k": 1000,
    "M": 1000**2,
    "G": 1000**3,
    "T": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def _no_memory_limit(value: KubeObject) -> KubeObject:
    """The cache's memory limit is derived from ``maxMemory`` (with headroom): a second,
    independent number could leave Redis no room and get it OOM-killed."""
    if "memory" in (value.get("limits") or {}):
        raise PydanticCustomError(
            "k8s_schema",
            "{summary}",
            {
                "summary": "limits.memory: is derived from maxMemory (plus headroom); "
                "set maxMemory instead",
                "problems": [
                    ("limits.memory", "is derived from maxMemory (plus headroom); set maxMemory")
                ],
            },
        )
    return value


def _at_least_1mi(value: str) -> str:
    if quantity_bytes(value) < 1024**2:
        raise ValueError("must be at least 1Mi (Redis reads 0 as no limit at all)")
    return value


CacheResources = Annotated[ResourceRequirements, AfterValidator(_no_memory_limit)]


# A retired key stays for ``retention``, one retires every ``rotation.every``: the keyring
# holds at most retention/every + 2 keys (retired + active + pending). Bounding the ratio by
# 100 keeps it at ~102 keys x ~400 bytes ~ 40 KB, 4% of a Secret's 1 MiB (and of what every
# pod re-reads on each rotation); the defaults (2160h / 720h) use 3.
MAX_RETAINED_ROTATIONS = 100
# status.dataKeys.keys mirrors the ring: the bound above plus room for manual rotations.
MAX_DATA_KEYS_STATUS = 128


class DataKeyRotationSpec(Model):
    """When the data-encryption key rotates. ``publishAhead`` must be at least
    ``propagation``, the time an updated Secret takes to reach every pod, so every pod can
    decrypt what any pod encrypts with the new key."""

    every: Duration = "720h"
    """How often a new data key becomes the active (encrypting) key (Go duration)."""
    publish_ahead: Duration = "10m"
    """How long a new key is mounted, decrypt-only, before it encrypts (at least
    ``propagation``)."""
    propagation: Duration = "2m"
    """The longest time an updated Secret volume takes to reach every pod: the kubelet's
    sync period plus its Secret cache TTL, about 2 minutes with the kubelet's defaults.
    Lower it only for nodes that are known to sync faster (the test cluster's node agent
    does within a second); at least 1s. A key that encrypts before every pod has it makes
    ciphertexts that the other pods cannot open."""


class DataEncryptionSpec(Model):
    """A data-encryption keyring for the server's own use: versioned AES-256 keys in the
    Secret ``NAME-data-keys``, mounted into every MCP pod at
    ``/var/run/mcp-operator/data-keys/keyring.json`` (env ``MCP_DATA_KEYS_PATH``), rotated on
    a schedule; Python servers use ``mcp_operator.auth.datakeys`` (docs/keys.md).

    A retired key stays in the keyring, decrypt-only, for ``retention`` after it stopped
    encrypting, then it is removed and its ciphertexts no longer decrypt: re-encrypt stored
    data with the active key before that."""

    enabled: bool = False
    """Create and rotate the keyring and mount it into the pods."""
    rotation: DataKeyRotationSpec = Field(default_factory=DataKeyRotationSpec)
    """Key rotation schedule."""
    retention: Duration = "2160h"
    """How long a retired key still decrypts after it stopped encrypting (Go duration)."""

    __rules__ = (
        Rule(
            field="rotation.every",
            cel="duration(self.rotation.every) > duration(self.rotation.publishAhead) && "
            "duration(self.rotation.every) >= duration('10s')",
            message="must be at least 10s and longer than rotation.publishAhead",
            check=lambda s: (
                parse_duration(s.rotation.every) > parse_duration(s.rotation.publish_ahead)
                and parse_duration(s.rotation.every).total_seconds() >= 10
            ),
        ),
        Rule(
            field="rotation.publishAhead",
            cel="duration(self.rotation.publishAhead) >= duration(self.rotation.propagation) "
            "&& duration(self.rotation.propagation) >= duration('1s')",
            message="must be at least rotation.propagation (about 2m on a kubelet; "
            "propagation at least 1s): a key must reach every pod before it encrypts",
            check=lambda s: (
                parse_duration(s.rotation.publish_ahead) >= parse_duration(s.rotation.propagation)
                and parse_duration(s.rotation.propagation).total_seconds() >= 1
            ),
        ),
        Rule(
            field="retention",
            cel=f"duration(self.retention).getSeconds() <= "
            f"duration(self.rotation.every).getSeconds() * {MAX_RETAINED_ROTATIONS}",
            message=f"must be at most {MAX_RETAINED_ROTATIONS} times rotation.every (whole "
            "seconds): the keyring must stay far below a Secret's 1 MiB",
            check=lambda s: (
                int(parse_duration(s.retention).total_seconds())
                <= int(parse_duration(s.rotation.every).total_seconds()) * MAX_RETAINED_ROTATIONS
            ),
        ),
        Rule(
            field="retention",
            cel="duration(self.retention) > duration(self.rotation.publishAhead)",
            message="must be longer than rotation.publishAhead (a pod whose mount is not "
            "updated yet may still encrypt with the retired key)",
            check=lambda s: parse_duration(s.retention) > parse_duration(s.rotation.publish_ahead),
        ),
    )


class CacheCredentialRotationSpec(Model):
    """When the cache password rotates (docs/keys.md, *Cache password*): Redis accepts the
    old and the new password while both tiers roll, backup first, so no client is refused."""

    enabled: bool = True
    """Rotate on the schedule ``every`` (the annotation
    ``mcp-operator.dev/rotate-cache-password: <RFC3339 time>`` rotates even when off)."""
    every: Duration = "720h"
    """How long after the previous rotation completed the next one starts (Go duration,
    at least 10s)."""
    propagation: Duration = "2m"
    """The longest a kubelet takes to bring a Secret's update to its pods (at least 1s).
    Waited twice: after Redis's stored ACL file (``NAME-cache-config``) lists the new
    password, before the Secret's ``password`` switches (a Redis restart reloads that file
    from its Secret volume, which a kubelet refreshes about a minute after a change), and
    after the switch, before the tiers roll (a starting pod may read the previous value
    this long). Redis accepts both passwords meanwhile. Keep it at least 90s on real
    kubelets."""

    __rules__ = (
        Rule(
            field="every",
            cel="duration(self.every) >= duration('10s') && "
            "duration(self.every) > duration(self.propagation)",
            message="must be at least 10s and longer than propagation",
            check=lambda s: (
                parse_duration(s.every).total_seconds() >= 10
                and parse_duration(s.every) > parse_duration(s.propagation)
            ),
        ),
        Rule(
            field="propagation",
            cel="duration(self.propagation) >= duration('1s')",
            message="must be at least 1s",
            check=lambda s: parse_duration(s.propagation).total_seconds() >= 1,
        ),
    )


class CacheSpec(Model):
    """A Redis cache for this server alone: Deployment and Service ``NAME-cache``, the
    credential Secret ``NAME-cache-auth`` (generated, then rotated: ``credentialRotation``),
    the configuration Secret ``NAME-cache-config`` and a NetworkPolicy admitting only this
    server's pods and the operator's. Both tiers get the connection as ``MCP_CACHE_*`` env
    vars (see the README's *Cache* section). No persistence: a restarted cache starts empty."""

    enabled: bool = False
    """Provision the cache and hand its connection to both tiers."""
    max_memory: Annotated[str, AfterValidator(_at_least_1mi)] = Field(
        default="256Mi", pattern=QUANTITY_PATTERN, max_length=16
    )
    """Redis ``maxmemory`` (a Kubernetes quantity, at least 1Mi; Redis reads 0 as "no
    limit"). The container's memory limit is this plus 25% plus 32Mi, so Redis evicts long
    before the kernel kills it."""
    eviction_policy: Literal[
        "allkeys-lru",
        "allkeys-lfu",
        "allkeys-random",
        "volatile-lru",
        "volatile-lfu",
        "volatile-random",
        "volatile-ttl",
        "noeviction",
    ] = "allkeys-lru"
    """Redis ``maxmemory-policy``: what is evicted when ``maxMemory`` is reached
    (``noeviction`` makes writes fail instead)."""
    image: str = Field(default="redis:7.4.2", min_length=1, max_length=512)
    """Redis image (pinned; any Redis 7 image with ``redis-server`` and ``redis-cli``)."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Image pull policy of the cache container."""
    resources: CacheResources = Field(default_factory=dict)
    """Kubernetes ``ResourceRequirements`` of the Redis container, merged over the default
    requests (50m CPU, memory = the derived limit); ``limits.memory`` is derived from
    ``maxMemory`` and may not be set."""
    credential_rotation: CacheCredentialRotationSpec = Field(
        default_factory=CacheCredentialRotationSpec
    )
    """Rotation of the MCP user's password (on by default, every 30 days)."""


Severity = Literal["critical", "warning", "info"]


class AlertSpec(Model):
    """One alert of the server's PrometheusRule. Unset ``for`` and ``severity`` take the
    alert's default (listed per alert in docs/runbooks.md)."""

    enabled: bool = True
    """Include this alert in the PrometheusRule."""
    for_: Duration | None = Field(default=None, alias="for")
    """How long the condition must hold before the alert fires (Prometheus duration such
    as ``30s`` or ``5m``); default per alert."""
    severity: Severity | None = None
    """The alert's ``severity`` label (critical, warning or info); default per alert."""


class FlappingAlertSpec(AlertSpec):
    """``MCPServerFailoverFlapping``: traffic switched tiers too often."""

    switches: int = Field(default=4, ge=2, le=1000)
    """Tier switches (failovers and failbacks together) within ``window`` that fire."""
    window: Duration = "1h"
    """The window the switches are counted in."""


class ProbeErrorRateAlertSpec(AlertSpec):
    """``MCPServerProbeErrorRateHigh``: a share of the operator's MCP probes fail."""

    ratio: float = Field(default=0.1, gt=0, le=1)
    """Share of probes with outcome ``unhealthy`` (0-1) over ``window`` that fires."""
    window: Duration = "5m"
    """The rate window."""


class ProbeLatencyAlertSpec(AlertSpec):
    """``MCPServerProbeLatencyHigh``: the 95th percentile of MCP probe durations is high."""

    seconds: float = Field(default=0.5, gt=0, le=60)
    """p95 probe duration, in seconds, above which the alert fires."""
    window: Duration = "5m"
    """The rate window of the histogram."""


class MemoryAlertSpec(AlertSpec):
    """``MCPServerMemoryHigh``: a pod's working set (cAdvisor) nears its memory limit
    (kube-state-metrics)."""

    ratio: float = Field(default=0.9, gt=0, le=1)
    """Working set / memory limit (0-1) above which the alert fires."""


class RotationOverdueAlertSpec(AlertSpec):
    """``MCPServerSigningKeyRotationOverdue``: the next signing key is late (``spec.auth``
    servers only)."""

    grace: Duration = "1h"
    """How far past its due time the next key may be before the alert fires."""


class AlertsSpec(Model):
    """The alerts of the server's PrometheusRule, each on by default. Alerts whose feature
    is off are left out whatever they say: ``backupUnavailable`` without a hot backup,
    ``signingKeyRotationOverdue`` without ``spec.auth``, ``cacheDown`` without
    ``spec.cache``."""

    down: AlertSpec = Field(default_factory=AlertSpec)
    """``MCPServerDown``: no tier passes MCP health (default: 1m, critical)."""
    failed_over: AlertSpec = Field(default_factory=AlertSpec)
    """``MCPServerFailedOver``: traffic is served by the backup (default: 5m, warning)."""
    failover_flapping: FlappingAlertSpec = Field(default_factory=FlappingAlertSpec)
    """``MCPServerFailoverFlapping``: too many tier switches (default: 0s, warning)."""
    backup_unavailable: AlertSpec = Field(default_factory=AlertSpec)
    """``MCPServerBackupUnavailable``: the primary serves but the hot backup is unhealthy,
    so there is no redundancy (default: 10m, warning)."""
    probe_error_rate_high: ProbeErrorRateAlertSpec = Field(default_factory=ProbeErrorRateAlertSpec)
    """``MCPServerProbeErrorRateHigh`` (default: 10m, warning)."""
    probe_latency_high: ProbeLatencyAlertSpec = Field(default_factory=ProbeLatencyAlertSpec)
    """``MCPServerProbeLatencyHigh`` (default: 10m, warning)."""
    memory_high: MemoryAlertSpec = Field(default_factory=MemoryAlertSpec)
    """``MCPServerMemoryHigh`` (default: 15m, warning)."""
    signing_key_rotation_overdue: RotationOverdueAlertSpec = Field(
        default_factory=RotationOverdueAlertSpec
    )
    """``MCPServerSigningKeyRotationOverdue`` (default: 5m, warning)."""
    cache_down: AlertSpec = Field(default_factory=AlertSpec)
    """``MCPServerCacheDown``: the cache does not answer an authenticated PING (default: 5m,
    warning)."""
    probe_misconfigured: AlertSpec = Field(default_factory=AlertSpec)
    """``MCPServerProbeMisconfigured``: the operator's own probe settings are broken
    (default: 10m, warning)."""


class PrometheusRuleSpec(Model):
    """A ``monitoring.coreos.com/v1`` PrometheusRule named like the server, with its
    alerts. Made only where the Prometheus Operator's API is served (else
    ``MonitoringReady=False``, reason ``PrometheusRuleCRDNotInstalled``)."""

    enabled: bool = True
    """Create the PrometheusRule."""
    labels: Labels = Field(default_factory=dict)
    """Labels on the PrometheusRule, to match your Prometheus' ``ruleSelector``."""
    runbook_base_url: str = Field(
        default="https://github.com/mcp-operator/mcp-operator/blob/main/docs/runbooks.md",
        pattern=r"^https?://[^\s#]+$",
        max_length=512,
        alias="runbookBaseURL",
    )
    """Each alert's ``runbook_url`` is this URL plus ``#`` and the alert's name in lower
    case."""
    alerts: AlertsSpec = Field(default_factory=AlertsSpec)
    """Per-alert switches, ``for`` durations, severities and thresholds."""


class ServiceMonitorSpec(Model):
    """Reserved for servers that expose their own Prometheus metrics: validated, not acted
    on yet (the operator's own metrics are scraped through the chart's ServiceMonitor)."""

    enabled: bool = False
    """Reserved: create a ServiceMonitor for the server's pods (not acted on yet)."""
    labels: dict[str, str] = Field(default_factory=dict)
    """Reserved: labels on that ServiceMonitor."""


class MonitoringSpec(Model):
    """Prometheus integration."""

    prometheus_rule: PrometheusRuleSpec = Field(default_factory=PrometheusRuleSpec)
    """Alert rules (a PrometheusRule per server)."""
    service_monitor: ServiceMonitorSpec = Field(default_factory=ServiceMonitorSpec)
    """Reserved for servers that expose metrics (not acted on yet)."""


class MCPServerSpec(Model):
    """What the user asks for. Never written by the operator."""

    image: str = Field(min_length=1, max_length=512)
    """Container image of the MCP server."""
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    """Kubernetes ``imagePullPolicy`` of the MCP container."""
    command: list[str] = Field(default_factory=list)
    """Container entrypoint (replaces the image's ENTRYPOINT)."""
    args: list[str] = Field(default_factory=list)
    """Container arguments (replace the image's CMD)."""
    port: int = Field(default=8080, ge=1, le=65535)
    """TCP port the server listens on (named ``mcp`` in the pods and Services)."""
    path: str = Field(default="/mcp", pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$", max_length=256)
    """HTTP path of the MCP endpoint."""
    transport: Literal["streamable-http"] = "streamable-http"
    """MCP transport the server speaks: Streamable HTTP only. The legacy HTTP+SSE transport
    (deprecated since MCP 2025-03-26) was accepted but never probed, and was removed."""
    env: list[EnvVar] = Field(default_factory=list)
    """Kubernetes ``EnvVar`` list. Referenced Secrets/ConfigMaps must exist (unless
    ``optional``), or nothing is applied (reason ``MissingReference``)."""
    env_from: list[EnvFromSource] = Field(default_factory=list)
    """Kubernetes ``EnvFromSource`` list."""
    resources: ResourceRequirements = Field(default_factory=dict)
    """Kubernetes ``ResourceRequirements``; default requests 50m CPU / 64Mi, limit 512Mi."""
    volume_mounts: list[VolumeMount] = Field(default_factory=list)
    """Kubernetes ``VolumeMount`` list of the MCP container, for ``spec.pod.volumes``."""
    home: HomeSpec = Field(default_factory=HomeSpec)
    """A writable ``HOME`` (emptyDir)."""
    pod: PodSettings = Field(default_factory=PodSettings)
    """Pod settings for both tiers."""
    probes: Probes = Field(default_factory=Probes)
    """Kubelet probe overrides (MCP-level health is probed by the operator, see ``health``)."""
    service: ServiceSpec = Field(default_factory=ServiceSpec)
    """Service settings."""
    primary: PrimarySpec = Field(default_factory=PrimarySpec)
    """The primary tier."""
    backup: BackupSpec = Field(default_factory=BackupSpec)
    """The backup tier."""
    health: HealthSpec = Field(default_factory=HealthSpec)
    """MCP-level probing and the per-tier circuit breaker."""
    failover: FailoverSpec = Field(default_factory=FailoverSpec)
    """Failover and failback policy."""
    auth: AuthSpec = Field(default_factory=AuthSpec)
    """Token issuing: signing keys, JWKS, rotation (see AuthSpec)."""
    data_encryption: DataEncryptionSpec = Field(default_factory=DataEncryptionSpec)
    """Data-encryption keyring mounted into the pods (see DataEncryptionSpec)."""
    cache: CacheSpec = Field(default_factory=CacheSpec)
    """A Redis cache of this server's own, wired into both tiers (see CacheSpec)."""
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)
    """Prometheus integration: the server's alert rules."""

    __rules__ = (
        Rule(
            field="primary.minHealthyPods",
            cel="(has(self.primary.minHealthyPods) ? self.primary.minHealthyPods : "
            "self.health.minHealthyPods) <= self.primary.replicas",
            message="must not exceed primary.replicas (defaults to health.minHealthyPods)",
            check=lambda s: s.min_healthy("primary") <= s.primary.replicas,
        ),
        Rule(
            field="backup.minHealthyPods",
            cel="!self.backup.enabled || (has(self.backup.minHealthyPods) ? "
            "self.backup.minHealthyPods : self.health.minHealthyPods) <= self.backup.replicas",
            message="must not exceed backup.replicas (defaults to health.minHealthyPods)",
            check=lambda s: not s.backup.enabled or s.min_healthy("backup") <= s.backup.replicas,
        ),
    )

    def min_healthy(self, tier: Tier) -> int:
        """The tier's own minHealthyPods, or the shared health.minHealthyPods."""
        own = self.primary.min_healthy_pods if tier == "primary" else self.backup.min_healthy_pods
        return own if own is not None else self.health.min_healthy_pods


class ObjectMeta(Model):
    """The parts of metadata the renderers read. Anything else is accepted and ignored."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=DNS1035)
    # None = "wherever it is applied" (kustomize, Argo CD): render keeps it absent.
    namespace: str | None = Field(
        default=None, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
    )
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# ---- status -------------------------------------------------------------------------------


class Condition(StatusModel):
    """A Kubernetes-style condition (docs/conditions.md lists every type and reason)."""

    type: str = Field(max_length=316)
    """Condition type: Ready, Reconciled, PrimaryHealthy, BackupHealthy, FailedOver,
    Misconfigured, Verified (see docs/conditions.md)."""
    status: Literal["True", "False", "Unknown"]
    """True, False or Unknown. For FailedOver and Misconfigured, True is the bad news."""
    reason: str = Field(min_length=1, max_length=1024)
    """CamelCase machine-readable cause (every reason is listed in docs/conditions.md)."""
    message: str = Field(default="", max_length=32768)
    """Human-readable detail."""
    last_transition_time: datetime
    """When status last changed (not when reason or message changed)."""
    observed_generation: int | None = None
    """The metadata.generation this condition was computed for."""


class BreakerStatus(StatusModel):
    """A tier's circuit breaker, persisted so a restarted operator resumes it."""

    phase: Literal["closed", "open", "half-open"] = "closed"
    """closed (healthy), open (unhealthy, waiting), half-open (probing for recovery)."""
    failures: int = 0
    """Failed rounds in a row."""
    successes: int = 0
    """Successful half-open rounds in a row."""
    since: datetime | None = None
    """When the breaker entered this phase."""


class TierStatus(StatusModel):
    """One tier as the operator last saw it."""

    replicas: int = 0
    """Pods the tier's Deployment runs."""
    ready_replicas: int = 0
    """Pods Kubernetes counts ready (including the MCP readiness gate)."""
    summary: str = "-"
    """ready/desired, as shown by kubectl get."""
    healthy: bool | None = None
    """The operator's MCP-level verdict for the tier (null before the first round)."""
    healthy_pods: int = 0
    """Pods that answered the last MCP probe round."""
    breaker: BreakerStatus = Field(default_factory=BreakerStatus)
    """The tier's circuit breaker."""
    consecutive_failures: int = 0
    """Failed probe rounds in a row."""
    last_probe_time: datetime | None = None
    """When a probe round last *changed* this tier's health (not a heartbeat: a stable tier
    is not rewritten, so the steady state writes nothing)."""
    last_error: str | None = Field(default=None, max_length=1024)
    """The last probe error (no secrets)."""
    era: str | None = None
    """The MCP protocol era the tier's pods speak: modern or legacy."""


class TiersStatus(StatusModel):
    """Both tiers."""

    primary: TierStatus = Field(default_factory=TierStatus)
    """The primary tier."""
    backup: TierStatus = Field(default_factory=TierStatus)
    """The backup tier."""


class FailoverStatus(StatusModel):
    """The failover state machine."""

    phase: Literal["Idle", "Intent", "ScalingBackup", "Switched", "Cancelled"] = "Idle"
    """Idle, Intent (decided, not yet switched), ScalingBackup (cold backup starting), then
    always one of Switched or Cancelled (``reason`` says why; an Event too)."""
    target_tier: Tier | None = None
    """The tier a switch in progress moves traffic to."""
    kind: Literal["failover", "failback", "switchover"] | None = None
    """failover (primary failed), failback (back to primary) or switchover (requested by
    annotation)."""
    reason: str | None = None
    """Why the last switch happened."""
    started_at: datetime | None = None
    """When the last switch started."""
    completed_at: datetime | None = None
    """When the last switch completed."""
    count: int = 0
    """Switches completed so far."""
    recent: list[datetime] = Field(default_factory=list)
    """Times of recent failovers (for the flap guard)."""
    last_switchover: str | None = None
    """The last processed value of the mcp-operator.dev/switchover annotation."""


class KeysStatus(StatusModel):
    """A mirror of the signing-key schedule (the Secret holds the truth): key ids only."""

    active_kid: str | None = None
    """Key id signing tokens now."""
    next_kid: str | None = None
    """Key id published ahead of use."""
    published_kids: list[str] = Field(default_factory=list)
    """Key ids in the published key set."""
    last_rotation_time: datetime | None = None
    """When the keys last rotated."""
    next_rotation_time: datetime | None = None
    """When the keys rotate next."""
    rotations: int = 0
    """How many times a new key began signing (first key included)."""
    last_rotate_request: str | None = None
    """The last processed value of the ``mcp-operator.dev/rotate-keys`` annotation."""
    revoked_kids: list[str] = Field(default_factory=list)
    """Key ids removed by ``mcp-operator.dev/revoke-kid`` (the last 20)."""


class DataKeyStatus(StatusModel):
    """One data key, by id and times (never its material)."""

    kid: str
    """Key id, as written in every ciphertext envelope."""
    phase: Literal["next", "active", "retiring"]
    """next (mounted, decrypt-only, encrypts soon), active (encrypts), retiring
    (decrypt-only until removeAfter)."""
    created: datetime
    """When the key was generated."""
    activated: datetime | None = None
    """When it started encrypting."""
    retired: datetime | None = None
    """When it stopped encrypting."""
    remove_after: datetime | None = None
    """When it leaves the keyring (retired + retention)."""


class DataKeysStatus(StatusModel):
    """A mirror of the data-encryption keyring (the Secret holds the truth): ids and times."""

    active_kid: str | None = None
    """Key id new ciphertexts are sealed with."""
    keys: list[DataKeyStatus] = Field(default_factory=list, max_length=MAX_DATA_KEYS_STATUS)
    """Every key in the keyring, oldest first (the newest 128 when it holds more)."""
    last_rotation_time: datetime | None = None
    """When a new key last became active."""
    next_rotation_time: datetime | None = None
    """When the next key becomes active."""
    rotations: int = 0
    """How many times a new key became active (first key included)."""
    last_rotate_request: str | None = None
    """The last processed value of the ``mcp-operator.dev/rotate-data-keys`` annotation."""


class CacheCredentialStatus(StatusModel):
    """A mirror of the rotation state kept in the Secret ``NAME-cache-auth``."""

    phase: str | None = None
    """Stable, Adding, Propagating, RollingBackup, RollingPrimary or Removing."""
    phase_since: datetime | None = None
    """When the phase began."""
    rotations: int = 0
    """Completed rotations."""
    last_rotation_time: datetime | None = None
    """When the last rotation completed (or the password was created)."""
    next_rotation_time: datetime | None = None
    """When the next scheduled rotation starts (absent while one runs or when off)."""
    last_rotate_request: str | None = None
    """The last processed value of ``mcp-operator.dev/rotate-cache-password``."""


class CacheStatus(StatusModel):
    """The per-server Redis cache (``spec.cache``); never its password."""

    ready: bool | None = None
    """Whether the cache answers an authenticated PING (its Deployment has a ready pod)."""
    endpoint: str | None = None
    """The cache's address: redis://NAME-cache.NAMESPACE.svc:6379 (no credentials)."""
    secret_name: str | None = None
    """The Secret holding the cache's username and password (NAME-cache-auth)."""
    credential: CacheCredentialStatus = Field(default_factory=lambda: CacheCredentialStatus())
    """The password rotation's phase and times (never a password or its hash)."""


class MCPServerStatus(StatusModel):
    """What the operator observed; written only by the operator."""

    observed_generation: int | None = None
    """The metadata.generation the operator last acted on."""
    active_tier: Tier | None = None
    """The tier the stable Service selects: primary or backup."""
    endpoint: str | None = None
    """The stable in-cluster URL: http://NAME.NAMESPACE.svc:PORT/PATH."""
    tiers: TiersStatus = Field(default_factory=TiersStatus)
    """Per-tier state."""
    failover: FailoverStatus = Field(default_factory=FailoverStatus)
    """The failover state machine, persisted so a restarted operator resumes it."""
    keys: KeysStatus = Field(default_factory=KeysStatus)
    """Signing keys: active, next and published key ids (never key material)."""
    data_keys: DataKeysStatus = Field(default_factory=DataKeysStatus)
    """Data-encryption keys: ids, phases and times (never key material)."""
    cache: CacheStatus = Field(default_factory=CacheStatus)
    """The per-server Redis cache: ready, endpoint, credential Secret name."""
    conditions: list[Condition] = Field(default_factory=list)
    """Ready (summary), Reconciled, PrimaryHealthy, BackupHealthy, FailedOver, Misconfigured,
    Verified, KeysReady, CacheReady, CacheCredentialReady."""


class MCPServer(Model):
    """A whole object, as read from a file or from the API server."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )

    api_version: Literal["mcp-operator.dev/v1alpha1"]
    kind: Literal["MCPServer"]
    metadata: ObjectMeta
    spec: MCPServerSpec
    status: MCPServerStatus | None = None


HealthSpec.model_rebuild()
