"""A table of invalid MCPServers: each is one small change to a valid base, and each must be
refused with the exact field path (as written in YAML) and a readable message.

``SERVER`` marks the rows a 1.20 API server also refuses through the CRD's structural schema
alone (ranges, enums, patterns, types, required); ``tests/integration/test_crd_cluster.py``
replays those against the real server. Cross-field (CEL) rules, name length and unknown
fields are refused only by the models there (1.20 drops CEL and prunes unknown fields).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import pytest

from mcp_operator.api.validation import InvalidSpec, parse_server

DELETE = object()


def base() -> dict[str, Any]:
    """A valid MCPServer that spells out the blocks the rows change."""
    return {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "default"},
        "spec": {
            "image": "ghcr.io/example/mcp:1",
            "port": 8080,
            "path": "/mcp",
            "primary": {"replicas": 2},
            "backup": {"enabled": True, "replicas": 1, "standby": "hot"},
            "health": {"intervalSeconds": 2, "timeoutSeconds": 1},
            "failover": {"enabled": True},
            "auth": {"tokenTTL": "1h", "rotation": {"every": "720h", "publishAhead": "10m"}},
            "cache": {"maxMemory": "256Mi"},
        },
    }


@dataclass(frozen=True)
class Case:
    id: str
    changes: dict[str, Any]
    path: str
    fragment: str
    server: bool = False  # a 1.20 API server refuses it by schema alone
    marks: tuple[Any, ...] = field(default=())


def apply_changes(doc: dict[str, Any], changes: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    for dotted, value in changes.items():
        *parents, last = dotted.split(".")
        node = doc
        for part in parents:
            node = node.setdefault(part, {})
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    return doc


CASES: list[Case] = [
    # ranges
    Case("port-zero", {"spec.port": 0}, "spec.port", "must be ≥ 1", server=True),
    Case("port-too-big", {"spec.port": 65536}, "spec.port", "must be ≤ 65535", server=True),
    Case(
        "primary-replicas-zero",
        {"spec.primary.replicas": 0},
        "spec.primary.replicas",
        "must be ≥ 1",
        server=True,
    ),
    Case(
        "backup-replicas-too-many",
        {"spec.backup.replicas": 101},
        "spec.backup.replicas",
        "must be ≤ 100",
        server=True,
    ),
    Case(
        "failover-window-too-short",
        {"spec.failover.windowSeconds": 59},
        "spec.failover.windowSeconds",
        "must be ≥ 60",
        server=True,
    ),
    Case(
        "cooldown-negative",
        {"spec.failover.cooldownSeconds": -1},
        "spec.failover.cooldownSeconds",
        "must be ≥ 0",
        server=True,
    ),
    Case(
        "interval-too-long",
        {"spec.health.intervalSeconds": 301},
        "spec.health.intervalSeconds",
        "must be ≤ 300",
        server=True,
    ),
    # enums
    Case(
        "transport-unknown",
        {"spec.transport": "websocket"},
        "spec.transport",
        "'streamable-http'",
        server=True,
    ),
    Case(
        "standby-unknown",
        {"spec.backup.standby": "warm"},
        "spec.backup.standby",
        "must be one of 'hot' or 'cold'",
        server=True,
    ),
    Case(
        "failback-wrong-case",
        {"spec.failover.failback": "automatic"},
        "spec.failover.failback",
        "'Automatic' or 'Manual'",
        server=True,
    ),
    Case(
        "algorithm-unknown",
        {"spec.auth.algorithm": "HS256"},
        "spec.auth.algorithm",
        "'ES256'",
        server=True,
    ),
    Case(
        "eviction-unknown",
        {"spec.cache.evictionPolicy": "lru"},
        "spec.cache.evictionPolicy",
        "'allkeys-lru'",
        server=True,
    ),
    # patterns and lengths
    Case("path-relative", {"spec.path": "mcp"}, "spec.path", "must match ^/", server=True),
    Case(
        "max-memory-unit",
        {"spec.cache.maxMemory": "1GB"},
        "spec.cache.maxMemory",
        "must match",
        server=True,
    ),
    Case(
        "image-empty",
        {"spec.image": ""},
        "spec.image",
        "must be at least 1 characters",
        server=True,
    ),
    Case(
        "image-too-long",
        {"spec.image": "x" * 513},
        "spec.image",
        "must be at most 512 characters",
        server=True,
    ),
    Case(
        "service-account-too-long",
        {"spec.pod.serviceAccountName": "a" * 254},
        "spec.pod.serviceAccountName",
        "must be at most 253 characters",
        server=True,
    ),
    # required
    Case("image-missing", {"spec.image": DELETE}, "spec.image", "is required", server=True),
    Case("spec-missing", {"spec": DELETE}, "spec", "is required"),
    Case("name-missing", {"metadata.name": DELETE}, "metadata.name", "is required"),
    Case(
        "secret-ref-without-key",
        {"spec.health.bearerTokenSecretRef": {"name": "token"}},
        "spec.health.bearerTokenSecretRef.key",
        "is required",
        server=True,
    ),
    # types
    Case(
        "interval-not-a-number",
        {"spec.health.intervalSeconds": "fast"},
        "spec.health.intervalSeconds",
        "must be an integer",
        server=True,
    ),
    Case(
        "backup-enabled-not-bool",
        {"spec.backup.enabled": "maybe"},
        "spec.backup.enabled",
        "must be true or false",
        server=True,
    ),
    Case(
        "command-not-a-list",
        {"spec.command": "python server.py"},
        "spec.command",
        "must be a list",
        server=True,
    ),
    Case("image-not-a-string", {"spec.image": 42}, "spec.image", "must be a string", server=True),
    Case(
        "port-as-string",
        {"spec.port": "8080"},
        "spec.port",
        "must be an integer",
        server=True,
    ),
    Case(
        "enabled-as-yes",
        {"spec.backup.enabled": "yes"},
        "spec.backup.enabled",
        "must be true or false",
        server=True,
    ),
    # unknown fields: a typo is an error, not a no-op
    Case("unknown-spec-field", {"spec.replicas": 3}, "spec.replicas", "is not a known field"),
    Case(
        "unknown-nested-field",
        {"spec.health.intervalSecond": 5},
        "spec.health.intervalSecond",
        "is not a known field",
    ),
    # durations
    Case(
        "ttl-in-days",
        {"spec.auth.tokenTTL": "1d"},
        "spec.auth.tokenTTL",
        "must match",
        server=True,
    ),
    Case(
        "rotation-in-words",
        {"spec.auth.rotation.every": "30 days"},
        "spec.auth.rotation.every",
        "must match",
        server=True,
    ),
    # cross-field rules (CEL on current servers; models everywhere)
    Case(
        "ttl-too-short",
        {"spec.auth.tokenTTL": "5s"},
        "spec.auth.tokenTTL",
        "must be between 10s and 24h",
    ),
    Case(
        "ttl-too-long",
        {"spec.auth.tokenTTL": "25h"},
        "spec.auth.tokenTTL",
        "must be between 10s and 24h",
    ),
    Case(
        "leeway-too-long",
        {"spec.auth.leeway": "2m"},
        "spec.auth.leeway",
        "must be at most 60s",
    ),
    Case(
        "rotation-shorter-than-ttl-plus-ahead",
        {"spec.auth.rotation.every": "1h"},
        "spec.auth.rotation.every",
        "must be longer than rotation.publishAhead + tokenTTL",
    ),
    # spec.cache.credentialRotation
    Case(
        "cache-rotation-every-not-longer-than-propagation",
        {"spec.cache.credentialRotation.every": "2m"},  # default propagation 2m
        "spec.cache.credentialRotation.every",
        "must be at least 10s and longer than propagation",
    ),
    Case(
        "cache-rotation-propagation-zero",
        {"spec.cache.credentialRotation.propagation": "0s"},
        "spec.cache.credentialRotation.propagation",
        "must be at least 1s",
    ),
    # spec.dataEncryption (each row one problem: see the rules in DataEncryptionSpec)
    Case(
        "data-keys-every-not-longer-than-publish-ahead",
        {"spec.dataEncryption.rotation.every": "5m", "spec.dataEncryption.retention": "8h"},
        "spec.dataEncryption.rotation.every",
        "must be at least 10s and longer than rotation.publishAhead",
    ),
    Case(
        "data-keys-publish-ahead-below-propagation",
        {"spec.dataEncryption.rotation.publishAhead": "1m"},
        "spec.dataEncryption.rotation.publishAhead",
        "must be at least rotation.propagation",
    ),
    Case(
        "data-keys-publish-ahead-zero",
        {
            "spec.dataEncryption.rotation.publishAhead": "0s",
            "spec.dataEncryption.rotation.propagation": "0s",
        },
        "spec.dataEncryption.rotation.publishAhead",
        "must be at least rotation.propagation",
    ),
    Case(
        "data-keys-retention-fills-the-secret",
        {"spec.dataEncryption.rotation.every": "30m"},  # default retention 2160h = 4320 keys
        "spec.dataEncryption.retention",
        "must be at most 100 times rotation.every",
    ),
    Case(
        "data-keys-retention-not-longer-than-publish-ahead",
        {"spec.dataEncryption.retention": "5m"},
        "spec.dataEncryption.retention",
        "must be longer than rotation.publishAhead",
    ),
    Case(
        "env-reserved-data-keys-path",
        {"spec.env": [{"name": "MCP_DATA_KEYS_PATH", "value": "/x"}]},
        "spec.env[0].name",
        "is reserved",
    ),
    Case(
        "volume-reserved-data-keys",
        {"spec.pod.volumes": [{"name": "mcp-operator-data-keys", "emptyDir": {}}]},
        "spec.pod.volumes[0].name",
        "is reserved",
    ),
    Case(
        "volume-reserved-tmp",
        {"spec.pod.volumes": [{"name": "tmp", "emptyDir": {}}]},
        "spec.pod.volumes[0].name",
        "is reserved",
    ),
    Case(
        "timeout-exceeds-interval",
        {"spec.health.timeoutSeconds": 3},
        "spec.health.timeoutSeconds",
        "must not exceed intervalSeconds",
    ),
    Case(
        "recovery-shorter-than-interval",
        {"spec.health.intervalSeconds": 40, "spec.health.recoveryTimeoutSeconds": 30},
        "spec.health.recoveryTimeoutSeconds",
        "must be at least intervalSeconds",
    ),
    Case(
        "success-threshold-too-high",
        {"spec.health.successThreshold": 31},
        "spec.health.successThreshold",
        "must be at most 10 times failureThreshold",
    ),
    Case(
        "min-healthy-exceeds-primary",
        {"spec.primary.minHealthyPods": 3},
        "spec.primary.minHealthyPods",
        "must not exceed primary.replicas",
    ),
    Case(
        "shared-min-healthy-exceeds-backup",
        {"spec.health.minHealthyPods": 2},
        "spec.backup.minHealthyPods",
        "must not exceed backup.replicas",
    ),
    Case(
        "probe-header-reserved",
        {"spec.health.headers": {"Authorization": "x"}},
        "spec.health.headers",
        "not Host, Authorization",
    ),
    Case(
        "ca-without-https",
        {"spec.health.caSecretRef": {"name": "ca", "key": "ca.crt"}},
        "spec.health.caSecretRef",
        "needs scheme: https",
    ),
    # names
    Case(
        "name-too-long",
        {"metadata.name": "a" * 46},
        "metadata.name",
        "must be at most 45 characters",
    ),
    Case(
        "name-uppercase",
        {"metadata.name": "Weather"},
        "metadata.name",
        "must match ^[a-z]",
        server=True,
    ),
    Case(
        "name-starts-with-digit",
        {"metadata.name": "1weather"},
        "metadata.name",
        "must match ^[a-z]",
    ),
    Case("name-trailing-dash", {"metadata.name": "weather-"}, "metadata.name", "must match"),
    # root beside the restricted default runAsNonRoot (a CEL rule on a current server too)
    Case(
        "root-in-container-context",
        {"spec.pod.containerSecurityContext": {"runAsUser": 0}},
        "spec.pod.containerSecurityContext.runAsUser",
        "0 (root) contradicts runAsNonRoot: true",
    ),
    Case(
        "root-in-pod-context",
        {"spec.pod.securityContext": {"runAsUser": 0}},
        "spec.pod.securityContext.runAsUser",
        "0 (root) contradicts runAsNonRoot: true",
    ),
    # pod labels and env
    Case(
        "pod-label-recommended-prefix",
        {"spec.pod.labels": {"app.kubernetes.io/name": "x"}},
        "spec.pod.labels",
        "must not use the reserved prefixes",
    ),
    Case(
        "pod-label-operator-prefix",
        {"spec.pod.labels": {"mcp-operator.dev/tier": "backup"}},
        "spec.pod.labels",
        "must not use the reserved prefixes",
    ),
    Case("env-without-name", {"spec.env": [{"value": "x"}]}, "spec.env[0].name", "is required"),
    Case(
        "env-with-empty-name",
        {"spec.env": [{"name": "A", "value": "1"}, {"name": "", "value": "2"}]},
        "spec.env[1].name",
        "must not be empty",
    ),
    # the envelope
    Case(
        "wrong-api-version",
        {"apiVersion": "mcp-operator.dev/v1"},
        "apiVersion",
        "must be one of 'mcp-operator.dev/v1alpha1'",
    ),
    Case("wrong-kind", {"kind": "McpServer"}, "kind", "McpServer is not MCPServer"),
]

SERVER_CASES = [c for c in CASES if c.server]


def test_base_is_valid() -> None:
    parse_server(base())


def test_table_is_big_and_ids_unique() -> None:
    assert len(CASES) >= 25
    assert len({c.id for c in CASES}) == len(CASES)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.id, marks=c.marks) for c in CASES])
def test_invalid_spec_is_refused_with_path_and_message(case: Case) -> None:
    doc = apply_changes(base(), case.changes)
    with pytest.raises(InvalidSpec) as info:
        parse_server(doc)
    problems = info.value.problems
    # One change, one problem: the row cannot pass because of something else.
    assert [p.path for p in problems] == [case.path], problems
    assert case.fragment in problems[0].message, problems[0].message
    assert str(problems[0]) == f"{case.path}: {problems[0].message}"
    assert case.path in str(info.value)


def test_every_problem_is_reported_not_just_the_first() -> None:
    doc = apply_changes(base(), {"spec.port": 0, "spec.transport": "ws", "spec.replicas": 1})
    with pytest.raises(InvalidSpec) as info:
        parse_server(doc)
    assert sorted(p.path for p in info.value.problems) == [
        "spec.port",
        "spec.replicas",
        "spec.transport",
    ]


@pytest.mark.parametrize("document", [None, [], "weather", 3])
def test_a_document_that_is_not_a_mapping(document: Any) -> None:
    with pytest.raises(InvalidSpec) as info:
        parse_server(document)
    assert len(info.value.problems) == 1
    assert str(info.value.problems[0]).startswith("(document): must be a mapping")


@pytest.mark.parametrize(
    "changes",
    [
        {"metadata.name": "a" * 45},
        {"metadata.name": "a-1"},
        {"spec.port": 1},
        {"spec.port": 65535},
        {"spec.auth.tokenTTL": "1m"},
        {"spec.auth.tokenTTL": "24h"},
        {"spec.health.timeoutSeconds": 2},
        {"spec.health.successThreshold": 30},
        {"spec.health.minHealthyPods": 2, "spec.backup.replicas": 2},
        {"spec.health.minHealthyPods": 2, "spec.backup.minHealthyPods": 1},
        {"spec.backup.enabled": False},
        {"spec.backup.enabled": False, "spec.failover.enabled": False},
        {"spec.pod.labels": {"team": "a", "example.com/app.kubernetes.io": "b"}},
        {"spec.env": [{"name": "A", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]},
        {"spec.cache.maxMemory": "1.5Gi"},
        {"metadata.labels": {"anything": "goes"}, "metadata.uid": "u", "metadata.extra": 1},
    ],
    ids=lambda c: ",".join(f"{k}={str(v)[:12]}" for k, v in c.items()),
)
def test_boundary_values_are_accepted(changes: dict[str, Any]) -> None:
    parse_server(apply_changes(base(), changes))
