"""The ``MCPServer`` API (``mcp-operator.dev/v1alpha1``), defined once.

These models are the single source of truth: the CRD's structural schema is generated from
them (:mod:`mcp_operator.api.crd`), the renderers read them, and the CLI validates with them.
Field names are camelCase on the wire. Defaults live on object fields, never inside list
items, so a GitOps tool never sees a server-defaulted list item as drift.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

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


class Model(RuledModel):
    """Base: camelCase aliases, unknown fields refused (a typo is an error, not a no-op)."""

    # strict: "8080" is not a port and "yes" is not a boolean, exactly as the API server says.
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=True
    )


class StatusModel(Model):
    """Status arrives as JSON from the API server: timestamps are strings there."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True, strict=False
    )


class PodSettings(Model):
    """Pod-level overrides; the operator's security defaults apply unless overridden."""

    service_account_name: str | None = Field(default=None, max_length=253)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[KubeObject] = Field(default_factory=list)
    affinity: KubeObject = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)
    labels: dict[str, str] = Field(default_factory=dict)
    image_pull_secrets: list[KubeObject] = Field(default_factory=list)
    security_context: KubeObject = Field(default_factory=dict)
    container_security_context: KubeObject = Field(default_factory=dict)
    priority_class_name: str | None = Field(default=None, max_length=253)

    __rules__ = (
        Rule(
            field="labels",
            cel="!has(self.labels) || self.labels.all(k, !k.startsWith('app.kubernetes.io/') && "
            "!k.startsWith('mcp-operator.dev/'))",
            message="must not use the reserved prefixes app.kubernetes.io/ or mcp-operator.dev/",
            check=lambda s: not any(k.startswith(RESERVED_LABEL_PREFIXES) for k in s.labels),
        ),
    )


class Probes(Model):
    """Kubernetes probe overrides; by default each is a TCP check on the MCP port."""

    startup: KubeObject | None = None
    liveness: KubeObject | None = None
    readiness: KubeObject | None = None


class PrimarySpec(Model):
    replicas: int = Field(default=2, ge=1, le=100)


class BackupSpec(Model):
    enabled: bool = True
    replicas: int = Field(default=1, ge=1, le=100)
    standby: Literal["hot", "cold"] = "hot"


class HealthSpec(Model):
    """MCP-level probing by the operator and the per-tier circuit breaker."""

    interval_seconds: int = Field(default=2, ge=1, le=300)
    timeout_seconds: int = Field(default=1, ge=1, le=60)
    failure_threshold: int = Field(default=3, ge=1, le=100)
    success_threshold: int = Field(default=2, ge=1, le=100)
    recovery_timeout_seconds: int = Field(default=30, ge=1, le=3600)
    min_healthy_pods: int = Field(default=1, ge=1, le=100)
    bearer_token_secret_ref: SecretKeyRef | None = None

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
            field="successThreshold",
            cel="self.successThreshold <= self.failureThreshold * 10",
            message="must be at most 10 times failureThreshold, or recovery would take forever",
            check=lambda s: s.success_threshold <= s.failure_threshold * 10,
        ),
    )


class SecretKeyRef(Model):
    name: str = Field(min_length=1, max_length=253)
    key: str = Field(min_length=1, max_length=253)


class FailoverSpec(Model):
    enabled: bool = True
    failback: Literal["Automatic", "Manual"] = "Automatic"
    cooldown_seconds: int = Field(default=60, ge=0, le=86400)
    max_failovers: int = Field(default=3, ge=1, le=100)
    window_seconds: int = Field(default=600, ge=60, le=86400)
    cold_start_timeout_seconds: int = Field(default=120, ge=5, le=3600)


Duration = Annotated[str, Field(pattern=DURATION_PATTERN, max_length=32)]


class RotationSpec(Model):
    every: Duration = "720h"
    publish_ahead: Duration = "10m"


class AuthSpec(Model):
    enabled: bool = False
    algorithm: Literal["ES256", "EdDSA", "RS256"] = "ES256"
    token_ttl: Duration = Field(default="1h", alias="tokenTTL")
    issuer: str | None = Field(default=None, max_length=253)
    rotation: RotationSpec = Field(default_factory=RotationSpec)

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
            cel="duration(self.tokenTTL) >= duration('1m') && duration(self.tokenTTL) <= "
            "duration('24h')",
            message="must be between 1m and 24h",
            check=lambda s: 60 <= parse_duration(s.token_ttl).total_seconds() <= 86400,
        ),
    )


class CacheSpec(Model):
    enabled: bool = False
    max_memory: str = Field(default="256Mi", pattern=QUANTITY_PATTERN, max_length=16)
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
    image: str = Field(default="redis:7.2", min_length=1, max_length=512)


class PrometheusRuleSpec(Model):
    enabled: bool = True
    labels: dict[str, str] = Field(default_factory=dict)


class ServiceMonitorSpec(Model):
    enabled: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class MonitoringSpec(Model):
    prometheus_rule: PrometheusRuleSpec = Field(default_factory=PrometheusRuleSpec)
    service_monitor: ServiceMonitorSpec = Field(default_factory=ServiceMonitorSpec)


class MCPServerSpec(Model):
    """What the user asks for. Never written by the operator."""

    image: str = Field(min_length=1, max_length=512)
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    port: int = Field(default=8080, ge=1, le=65535)
    path: str = Field(default="/mcp", pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@/%-]*$", max_length=256)
    transport: Literal["streamable-http", "sse"] = "streamable-http"
    env: list[KubeObject] = Field(default_factory=list)
    env_from: list[KubeObject] = Field(default_factory=list)
    resources: KubeObject = Field(default_factory=dict)
    pod: PodSettings = Field(default_factory=PodSettings)
    probes: Probes = Field(default_factory=Probes)
    primary: PrimarySpec = Field(default_factory=PrimarySpec)
    backup: BackupSpec = Field(default_factory=BackupSpec)
    health: HealthSpec = Field(default_factory=HealthSpec)
    failover: FailoverSpec = Field(default_factory=FailoverSpec)
    auth: AuthSpec = Field(default_factory=AuthSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    monitoring: MonitoringSpec = Field(default_factory=MonitoringSpec)

    __rules__ = (
        Rule(
            field="failover.enabled",
            cel="!self.failover.enabled || self.backup.enabled",
            message="needs backup.enabled: there is nothing to fail over to",
            check=lambda s: not s.failover.enabled or s.backup.enabled,
        ),
        Rule(
            field="health.minHealthyPods",
            cel="self.health.minHealthyPods <= self.primary.replicas",
            message="must not exceed primary.replicas",
            check=lambda s: s.health.min_healthy_pods <= s.primary.replicas,
        ),
        Rule(
            field="port",
            cel="self.port != 9090",
            message="must not be 9090, which the operator reserves for pod metrics",
            check=lambda s: s.port != 9090,
        ),
    )

    @field_validator("env")
    @classmethod
    def _env_items_named(cls, env: list[KubeObject]) -> list[KubeObject]:
        for i, item in enumerate(env):
            if not isinstance(item.get("name"), str) or not item["name"]:
                raise ValueError(f"item {i} needs a non-empty name")
        return env


class ObjectMeta(Model):
    """The parts of metadata the renderers read. Anything else is accepted and ignored."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, alias_generator=to_camel, populate_by_name=True
    )

    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH, pattern=DNS1035)
    namespace: str = Field(default="default", min_length=1, max_length=63)
    uid: str | None = None
    generation: int | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


# ---- status -------------------------------------------------------------------------------


class Condition(StatusModel):
    type: str = Field(max_length=316)
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(min_length=1, max_length=1024)
    message: str = Field(default="", max_length=32768)
    last_transition_time: datetime
    observed_generation: int | None = None


class BreakerStatus(StatusModel):
    """A tier's circuit breaker, persisted so a restarted operator resumes it."""

    phase: Literal["closed", "open", "half-open"] = "closed"
    failures: int = 0
    successes: int = 0
    since: datetime | None = None


class TierStatus(StatusModel):
    replicas: int = 0
    ready_replicas: int = 0
    summary: str = "-"
    healthy: bool | None = None
    healthy_pods: int = 0
    breaker: BreakerStatus = Field(default_factory=BreakerStatus)
    consecutive_failures: int = 0
    last_probe_time: datetime | None = None
    last_error: str | None = Field(default=None, max_length=1024)
    era: str | None = None


class TiersStatus(StatusModel):
    primary: TierStatus = Field(default_factory=TierStatus)
    backup: TierStatus = Field(default_factory=TierStatus)


class FailoverStatus(StatusModel):
    phase: Literal["Idle", "Intent", "ScalingBackup", "Switched"] = "Idle"
    target_tier: Tier | None = None
    kind: Literal["failover", "failback", "switchover"] | None = None
    reason: str | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    count: int = 0
    recent: list[datetime] = Field(default_factory=list)
    last_switchover: str | None = None


class KeysStatus(StatusModel):
    active_kid: str | None = None
    next_kid: str | None = None
    published_kids: list[str] = Field(default_factory=list)
    last_rotation_time: datetime | None = None
    next_rotation_time: datetime | None = None


class CacheStatus(StatusModel):
    endpoint: str | None = None
    ready: bool | None = None


class MCPServerStatus(StatusModel):
    observed_generation: int | None = None
    active_tier: Tier | None = None
    endpoint: str | None = None
    tiers: TiersStatus = Field(default_factory=TiersStatus)
    failover: FailoverStatus = Field(default_factory=FailoverStatus)
    keys: KeysStatus = Field(default_factory=KeysStatus)
    cache: CacheStatus = Field(default_factory=CacheStatus)
    conditions: list[Condition] = Field(default_factory=list)


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
