"""Operator metrics (prometheus-client). One prefix, base units, bounded labels.

Label values are namespaces, object names, tiers and fixed reasons — never anything
secret and never unbounded text such as error messages.

**Per-server series** (labels starting with ``namespace, server``) must be listed in
:data:`PER_SERVER`: :func:`forget` removes all of them when the server is deleted, so a
cluster with churn does not grow the operator's memory and dashboards show no ghosts. A
unit test fails if a metric with those labels is missing from the list.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

PREFIX = "mcp_operator"

RECONCILE_TOTAL = Counter(f"{PREFIX}_reconcile_total", "Reconciles run.", ["namespace", "server"])
RECONCILE_ERRORS = Counter(
    f"{PREFIX}_reconcile_errors_total",
    "Reconciles that did not reach Applied.",
    ["namespace", "server", "reason"],
)
RECONCILE_DURATION = Histogram(
    f"{PREFIX}_reconcile_duration_seconds",
    "Wall time of one reconcile.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
APPLIES = Counter(f"{PREFIX}_applies_total", "Server-side applies of children.", ["kind"])
CONDITION = Gauge(
    f"{PREFIX}_condition",
    "1 when the condition has that status.",
    ["namespace", "server", "type", "status"],
)
PROBE_DURATION = Histogram(
    f"{PREFIX}_probe_duration_seconds",
    "MCP probe duration per pod.",
    ["namespace", "server", "tier", "era"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
PROBE_TOTAL = Counter(
    f"{PREFIX}_probes_total",
    "MCP probes by outcome.",
    ["namespace", "server", "tier", "era", "outcome"],
)
TIER_HEALTHY = Gauge(
    f"{PREFIX}_tier_healthy", "1 when the tier passes MCP health.", ["namespace", "server", "tier"]
)
ACTIVE_TIER = Gauge(
    f"{PREFIX}_active_tier",
    "1 for the tier the stable Service selects.",
    ["namespace", "server", "tier"],
)
BREAKER_STATE = Gauge(
    f"{PREFIX}_breaker_state",
    "Breaker state: 0 closed, 1 half-open, 2 open.",
    ["namespace", "server", "tier"],
)
FAILOVERS = Counter(
    f"{PREFIX}_failovers_total",
    "Traffic switches between tiers.",
    ["namespace", "server", "direction", "reason"],
)
MISCONFIGURED = Gauge(
    f"{PREFIX}_misconfigured",
    "1 while probes say the server is misconfigured.",
    ["namespace", "server", "tier"],
)

LEADER = Gauge(
    f"{PREFIX}_leader",
    "1 while this replica leads (acts), 0 while it is a standby or stopping.",
)
WATCH_EVENTS = Counter(
    f"{PREFIX}_watch_events_total",
    "Child watch events received (after the API server's label selector).",
    ["kind"],
)
WATCH_RELISTS = Counter(
    f"{PREFIX}_watch_relists_total", "Child lists (start and after a watch gap).", ["kind"]
)
INDEXED = Gauge(f"{PREFIX}_indexed_objects", "Children held in the child index.", ["kind"])

PROBER_DOUBT = Gauge(
    f"{PREFIX}_prober_doubt",
    "1 while the operator distrusts its own probes (most servers' probes failing or late "
    "at once, held 10 s after it ends): gates and switching are frozen (fail-static).",
    ["namespace", "server"],
)
PROBE_ROUND_LATENESS = Histogram(
    f"{PREFIX}_probe_round_lateness_seconds",
    "How late each probe round started after its schedule (interval after the previous "
    "one): the event loop's backlog, all servers together (no per-server labels).",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)

GC_SECONDS = Counter(
    f"{PREFIX}_gc_seconds_total",
    "Time the event loop stood still in Python's cyclic garbage collector, by generation "
    "(2 is a full collection: it walks every object the operator holds).",
    ["generation"],
)

PROBE_INTERVAL_STRETCH = Gauge(
    f"{PREFIX}_probe_interval_stretch",
    "How much every server's probe interval is stretched because rounds ran late (1: not "
    "at all; at most 4): the operator is short of CPU and probes less often rather than "
    "timing out on its own lag. Detection and failover slow by the same factor.",
)

CACHE_READY = Gauge(
    f"{PREFIX}_cache_ready",
    "1 when the server's cache answers an authenticated PING (readiness of NAME-cache).",
    ["namespace", "server"],
)

# Every metric whose first labels are (namespace, server). New per-server metrics must be
# added here (test_metrics checks it), or their series outlive the server.
PER_SERVER: tuple[MetricWrapperBase, ...] = (
    RECONCILE_TOTAL,
    RECONCILE_ERRORS,
    CONDITION,
    PROBE_DURATION,
    PROBE_TOTAL,
    TIER_HEALTHY,
    ACTIVE_TIER,
    BREAKER_STATE,
    FAILOVERS,
    MISCONFIGURED,
    PROBER_DOUBT,
    CACHE_READY,
)

CONDITION_TYPES = ("Ready", "Reconciled", "PrimaryHealthy", "BackupHealthy", "FailedOver")


def set_conditions(namespace: str, server: str, statuses: dict[str, str]) -> None:
    for type_, status in statuses.items():
        for value in ("True", "False", "Unknown"):
            CONDITION.labels(namespace, server, type_, value).set(1 if status == value else 0)


def forget(namespace: str, server: str) -> None:
    """Drop every series of a deleted server (see :data:`PER_SERVER`)."""
    for metric in PER_SERVER:
        for labels in list(metric._metrics):
            if labels[:2] == (namespace, server):
                metric.remove(*labels)


def forget_all() -> None:
    """Drop every per-server series at once (the operator stops managing all of them:
    shutdown or a lost lease). One pass, where :func:`forget` per server would scan
    every series once per server: ~30 million label comparisons at 1,000 servers."""
    for metric in PER_SERVER:
        metric.clear()


# Signing keys (spec.auth). Key ids are not labels: they are unbounded over time.
SIGNING_KEY_AGE = Gauge(
    f"{PREFIX}_signing_key_age_seconds",
    "Age of the active signing key (since it began signing).",
    ["namespace", "server"],
)
SIGNING_KEY_NEXT_ROTATION = Gauge(
    f"{PREFIX}_signing_key_next_rotation_timestamp_seconds",
    "When the next signing key is due to start signing (Unix time).",
    ["namespace", "server"],
)
SIGNING_KEYS_PUBLISHED = Gauge(
    f"{PREFIX}_signing_keys_published",
    "Keys in the published JWKS (next, active and retiring).",
    ["namespace", "server"],
)
SIGNING_KEY_ROTATIONS = Counter(
    f"{PREFIX}_signing_key_rotations_total",
    "A new key began signing; kind: initial, scheduled, manual, algorithm, emergency.",
    ["namespace", "server", "kind"],
)
SIGNING_KEYS_READY = Gauge(
    f"{PREFIX}_signing_keys_ready",
    "1 while the signing keys are usable (KeysReady=True).",
    ["namespace", "server"],
)
KEY_GAUGES = (
    SIGNING_KEY_AGE,
    SIGNING_KEY_NEXT_ROTATION,
    SIGNING_KEYS_PUBLISHED,
    SIGNING_KEYS_READY,
)

# Per-server too (see PER_SERVER above): registered here because they are defined here.
PER_SERVER += (*KEY_GAUGES, SIGNING_KEY_ROTATIONS)

# Data-encryption keyring (spec.dataEncryption): ids are not labels either.
DATA_KEY_AGE = Gauge(
    f"{PREFIX}_data_key_age_seconds",
    "Age of the active data-encryption key (since it began encrypting).",
    ["namespace", "server"],
)
DATA_KEYS = Gauge(
    f"{PREFIX}_data_keys",
    "Keys in the data-encryption keyring (next, active and retained ones).",
    ["namespace", "server"],
)
DATA_KEY_ROTATIONS = Counter(
    f"{PREFIX}_data_key_rotations_total",
    "A new data key began encrypting; kind: initial, scheduled, manual, emergency.",
    ["namespace", "server", "kind"],
)
DATA_KEYS_READY = Gauge(
    f"{PREFIX}_data_keys_ready",
    "1 while the data-encryption keyring is usable (DataKeysReady=True).",
    ["namespace", "server"],
)
PER_SERVER += (DATA_KEY_AGE, DATA_KEYS, DATA_KEY_ROTATIONS, DATA_KEYS_READY)

# Cache password rotation (spec.cache.credentialRotation): phases and times, no password.
CACHE_PASSWORD_AGE = Gauge(
    f"{PREFIX}_cache_password_age_seconds",
    "Seconds since the cache password last rotated (or was created).",
    ["namespace", "server"],
)
CACHE_PASSWORD_ROTATING = Gauge(
    f"{PREFIX}_cache_password_rotating",
    "1 while a cache password rotation runs (Redis accepts two passwords), else 0.",
    ["namespace", "server"],
)
CACHE_PASSWORD_ROTATIONS = Counter(
    f"{PREFIX}_cache_password_rotations_total",
    "Completed cache password rotations (Redis accepts only the new password).",
    ["namespace", "server"],
)
PER_SERVER += (CACHE_PASSWORD_AGE, CACHE_PASSWORD_ROTATING, CACHE_PASSWORD_ROTATIONS)
