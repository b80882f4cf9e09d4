"""spec.dataEncryption: validation with field paths, and what reaches the pods."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.render import render

Obj = dict[str, Any]


def server(data_encryption: Obj | None = None, **spec: Any) -> Any:
    body: Obj = {"image": "ghcr.io/example/mcp:1", **spec}
    if data_encryption is not None:
        body["dataEncryption"] = data_encryption
    return parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "notes", "namespace": "tools"},
            "spec": body,
        }
    )


def pod_specs(objects: list[Obj]) -> list[Obj]:
    return [o["spec"]["template"]["spec"] for o in objects if o["kind"] == "Deployment"]


def test_both_tiers_mount_the_keyring_secret_as_a_whole_volume_with_its_env() -> None:
    specs = pod_specs(render(server({"enabled": True})))
    assert len(specs) == 2
    for spec in specs:
        volumes = {v["name"]: v for v in spec["volumes"]}
        assert volumes["mcp-operator-data-keys"] == {
            "name": "mcp-operator-data-keys",
            # not optional: no keys, no start; key material readable by the pod's fsGroup only
            "secret": {"secretName": "notes-data-keys", "defaultMode": 0o440},
        }
        assert spec["securityContext"]["fsGroup"] == 65532
        [container] = spec["containers"]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "mcp-operator-data-keys")
        assert mount == {
            "name": "mcp-operator-data-keys",
            "mountPath": "/var/run/mcp-operator/data-keys",
            "readOnly": True,
        }  # no subPath: the kubelet updates the files on rotation
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MCP_DATA_KEYS_PATH"] == "/var/run/mcp-operator/data-keys/keyring.json"


def test_disabled_means_no_mount_and_no_env() -> None:
    for spec in pod_specs(render(server())):
        assert "mcp-operator-data-keys" not in {v["name"] for v in spec["volumes"]}
        assert "MCP_DATA_KEYS_PATH" not in {e["name"] for e in spec["containers"][0]["env"]}


@pytest.mark.parametrize(
    ("block", "path", "fragment"),
    [
        (
            {"rotation": {"every": "5m", "publishAhead": "10m"}, "retention": "8h"},
            "rotation.every",
            "publishAhead",
        ),
        (
            {
                "rotation": {"every": "5s", "publishAhead": "2s", "propagation": "1s"},
                "retention": "8m",
            },
            "rotation.every",
            "at least 10s",
        ),
        ({"retention": "5m"}, "retention", "longer than rotation.publishAhead"),
        ({"retention": "soon"}, "retention", ""),
        # a new key must reach every pod (kubelet: ~2m) before it encrypts
        ({"rotation": {"publishAhead": "0s"}, "retention": "1s"}, "rotation.publishAhead", "2m"),
        (
            {"rotation": {"every": "1h", "publishAhead": "90s"}, "retention": "10h"},
            "rotation.publishAhead",
            "2m",
        ),
        # 30m with the default retention (2160h) would be 4,320 keys: past a Secret's 1 MiB
        ({"rotation": {"every": "30m"}}, "retention", "at most 100 times rotation.every"),
    ],
)
def test_bad_schedules_are_refused_with_the_field_path(
    block: Obj, path: str, fragment: str
) -> None:
    with pytest.raises(InvalidSpec) as info:
        server({"enabled": True, **block})
    [problem] = info.value.problems
    assert problem.path == f"spec.dataEncryption.{path}", problem
    assert fragment in problem.message


def test_a_compressed_schedule_for_tests_is_accepted() -> None:
    block = {
        "enabled": True,
        "rotation": {"every": "20s", "publishAhead": "4s", "propagation": "2s"},
        "retention": "25s",
    }
    assert server(block).spec.data_encryption.retention == "25s"


def test_the_largest_accepted_keyring_stays_far_below_a_secrets_mib() -> None:
    """retention = 100 x every is accepted; the ring it allows (retired + active + pending
    keys) encodes to well under 1 MiB, and status can mirror every key."""
    from datetime import UTC, datetime, timedelta

    from mcp_operator.api.models import MAX_DATA_KEYS_STATUS
    from mcp_operator.keys import datastore
    from mcp_operator.keys.schedule import KeyRecord, KeyRing

    ok = server({"enabled": True, "rotation": {"every": "1h"}, "retention": "100h"})
    assert ok.spec.data_encryption.retention == "100h"
    with pytest.raises(InvalidSpec):
        server({"enabled": True, "rotation": {"every": "1h"}, "retention": "101h"})
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    materials = [datastore.generate() for _ in range(102)]
    keys = (
        *(
            KeyRecord(
                kid=m.kid,
                alg=datastore.ALGORITHM,
                created=t0 + timedelta(hours=i),
                published=t0 + timedelta(hours=i),
                activated=t0 + timedelta(hours=i),
                retired=None if i == 100 else t0 + timedelta(hours=i + 1),
                hold=timedelta(hours=100),
            )
            for i, m in enumerate(materials[:101])
        ),
        KeyRecord(kid=materials[101].kid, alg=datastore.ALGORITHM, created=t0),
    )
    data = datastore.encode(KeyRing(keys=keys), {m.kid: m for m in materials})
    size = sum(len(k) + len(v) for k, v in data.items())
    assert size < 64 * 1024, size
    assert len(keys) <= MAX_DATA_KEYS_STATUS
