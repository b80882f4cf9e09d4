"""The cache password loop's I/O edge (keys/cachecontroller.py) against a fake API server,
a fake Redis ACL and a reconcile stand-in that renders the tiers' stamps from the Secret (the
real ones are in tests/e2e/test_cache_rotation.py): a whole rotation with a fresh loop —
as after a ``kill -9`` — for every pass, the upgrade of an old Secret, Redis out of reach,
and a concurrent writer."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import REGISTRY

from mcp_operator.api.models import MCPServerStatus
from mcp_operator.api.validation import parse_server
from mcp_operator.keys import cachecontroller
from mcp_operator.keys.redisacl import RedisError
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile.cache import credential_of
from mcp_operator.reconcile.slots import ApiSlots
from mcp_operator.render import cache

Obj = dict[str, Any]
LABELS = {"namespace": "tools", "server": "weather"}
ROTATIONS = "mcp_operator_cache_password_rotations_total"
T0 = datetime(2026, 1, 1, tzinfo=UTC)
BODY: Obj = {
    "apiVersion": "mcp-operator.dev/v1alpha1",
    "kind": "MCPServer",
    "metadata": {"name": "weather", "namespace": "tools", "annotations": {}},
    "spec": {
        "image": "ghcr.io/example/mcp:1",
        "backup": {"enabled": True},
        "cache": {"enabled": True, "credentialRotation": {"every": "1h", "propagation": "5s"}},
    },
}


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def plain(obj: Obj, key: str) -> str | None:
    value = obj["data"].get(key)
    return base64.b64decode(value).decode() if value else None


class World:
    """The Secret, the live Redis ACL of user mcp, the tiers' Deployments."""

    def __init__(self, operator_password: str | None = "op-secret", recorded: bool = True) -> None:
        data = {"username": "mcp", "password": "pw-zero", "monitorPassword": "mon"}
        if operator_password:
            data["operatorPassword"] = operator_password
        if recorded:
            doc = {"phase": "Stable", "rotations": 0, "lastRotation": T0.isoformat()}
            data["rotation"] = json.dumps(doc)
        self.secret: Obj = {
            "metadata": {
                "name": "weather-cache-auth",
                "resourceVersion": "1",
                "creationTimestamp": "2026-01-01T00:00:00Z",
            },
            "data": {k: b64(v) for k, v in data.items()},
        }
        self.live = {cache.password_hash("pw-zero")}
        self.now = T0
        self.reachable = True
        self.cache_ips = ["10.0.0.9"]
        self.down: set[str] = set()
        self.conflicts = 0
        self.patches = 0
        self.deployments: dict[tuple[str, str], Obj] = {}
        self.events: list[tuple[str, str, str]] = []
        self.render()

    # -- the API server ---------------------------------------------------------------------

    async def get(self, _v: str, kind: str, _ns: str, name: str) -> Obj | None:
        assert kind == "Secret" and name in ("weather-cache-auth", "weather-cache-config")
        return self.secret if name == "weather-cache-auth" else self.config

    async def list(self, _v: str, kind: str, _ns: str, label_selector: str = "") -> list[Obj]:
        assert kind == "Pod"
        if label_selector.startswith(cache.CACHE_LABEL):
            return [
                {"metadata": {}, "status": {"podIP": ip, "phase": "Running"}}
                for ip in self.cache_ips
            ]
        tier = label_selector.rsplit("=", 1)[1]
        dep = self.deployments[("Deployment", f"weather-{tier}")]
        return [{"metadata": dep["spec"]["template"]["metadata"], "status": {"phase": "Running"}}]

    async def patch(self, _v: str, kind: str, _ns: str, name: str, body: Obj) -> Obj:
        if self.conflicts:
            self.conflicts -= 1
            raise ApiError(409, "Conflict", "the object has been modified")
        assert body["metadata"]["resourceVersion"] == self.secret["metadata"]["resourceVersion"]
        data = dict(self.secret["data"])
        for key, value in body["data"].items():
            if value is None:
                data.pop(key, None)
            else:
                data[key] = value
        version = str(int(self.secret["metadata"]["resourceVersion"]) + 1)
        self.secret = {**self.secret, "data": data}
        self.secret["metadata"] = {**self.secret["metadata"], "resourceVersion": version}
        self.patches += 1
        return self.secret

    # -- the reconcile (woken by every write) and a rollout that completes at once ---------

    def render(self) -> None:
        cred = credential_of(self.secret, "weather-cache-auth")
        hashes = sorted({cred.password_hash or "", *cred.extra_hashes})
        self.config = {"data": {"users.acl": b64(cache.acl_file(tuple(hashes), "m" * 64))}}
        tiers = dict(cred.tier_hashes)
        for tier in ("primary", "backup"):
            wanted = tiers.get(tier, cred.password_hash)
            assert wanted is not None
            stamp = cache.credential_stamp(wanted)
            self.deployments[("Deployment", f"weather-{tier}")] = {
                "metadata": {"generation": 1},
                "spec": {
                    "replicas": 1,
                    "template": {"metadata": {"annotations": {cache.CREDENTIAL_ANNOTATION: stamp}}},
                },
                "status": {"observedGeneration": 1, "replicas": 1, "updatedReplicas": 1,
                           "readyReplicas": 1},
            }  # fmt: skip

    # -- Redis -------------------------------------------------------------------------------

    def connection(self, host: str, port: int, user: str, password: str) -> Any:
        world = self

        class Fake:
            async def __aenter__(self) -> Fake:
                if not world.reachable or host in world.down:
                    raise RedisError("cannot connect to 10.0.0.9:6379: ConnectionRefusedError")
                assert (host, port, user) == ("10.0.0.9", 6379, "mcp-operator")
                if password != plain(world.secret, "operatorPassword"):
                    raise RedisError("WRONGPASS invalid username-password pair")
                return self

            async def __aexit__(self, *exc: object) -> None:
                return None

            async def converge(
                self, name: str, wanted: frozenset[str], may_change: Any
            ) -> frozenset[str]:
                assert name == "mcp" and wanted
                if may_change():
                    world.live |= wanted
                    world.live &= wanted
                return frozenset(world.live)

        return Fake()


def loop_for(world: World, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A fresh loop: nothing in memory, as after a restart."""
    monkeypatch.setattr(cachecontroller, "Connection", world.connection)
    shared = SimpleNamespace(
        client=world,
        clock=lambda: world.now,
        post_event=lambda _b, kind, reason, message: world.events.append((kind, reason, message)),
        index=SimpleNamespace(children=lambda _key: world.deployments),
        api_slots=ApiSlots(2),
    )

    async def write_status() -> None:
        return None

    worker = SimpleNamespace(
        key=("tools", "weather"),
        body=BODY,
        server=parse_server(BODY),
        shared=shared,
        status=MCPServerStatus(),
        lock=asyncio.Lock(),
        cache_credential_conditions=[],
        cache_credential_status=None,
        write_status=write_status,
        wake=world.render,
    )
    return cachecontroller.CachePasswordLoop(worker)  # type: ignore[arg-type]


async def test_a_whole_rotation_with_a_fresh_loop_for_every_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    server = parse_server(BODY)
    world.now = T0 + timedelta(hours=1, minutes=7)  # due (every 1h + jitter < 6 min)
    done_before = REGISTRY.get_sample_value(ROTATIONS, LABELS) or 0.0
    rotating_seen: set[float | None] = set()
    for _ in range(30):
        loop = loop_for(world, monkeypatch)
        await loop.sync(server)
        world.now += timedelta(seconds=2)
        rotating_seen.add(REGISTRY.get_sample_value("mcp_operator_cache_password_rotating", LABELS))
        # what Redis accepts always includes what every tier's pods were started with
        assert cache.password_hash("pw-zero") in world.live or world.patches >= 5
        if loop.state.phase == "Stable" and loop.state.rotations == 1:
            break
    reasons = [r for _, r, _ in world.events]
    assert reasons == [
        "CachePasswordAdding", "CachePasswordSwitched", "CachePasswordRolling",
        "CachePasswordRolling", "CachePasswordRemoving", "CachePasswordRotated",
    ]  # fmt: skip
    new = plain(world.secret, "password")
    assert new not in (None, "pw-zero") and "nextPassword" not in world.secret["data"]
    assert world.live == {cache.password_hash(new or "")}
    condition = loop.worker.cache_credential_conditions[0]
    assert (condition.status, condition.reason) == ("True", "CachePasswordStable")
    assert (REGISTRY.get_sample_value(ROTATIONS, LABELS) or 0.0) == done_before + 1
    assert rotating_seen == {0.0, 1.0}
    age = REGISTRY.get_sample_value("mcp_operator_cache_password_age_seconds", LABELS)
    assert age is not None and 0 <= age < 60
    for _, _, message in world.events:
        for secret in ("pw-zero", new or "", "op-secret", "mon"):
            assert secret not in message


@pytest.mark.parametrize("operator_password", [None, "op-secret"])
async def test_an_old_secret_is_recorded_as_rotated_now_not_rotated_at_once(
    monkeypatch: pytest.MonkeyPatch, operator_password: str | None
) -> None:
    """A Secret from before rotation existed, created long before ``every``: the upgrade
    records "rotated now" (with the operator's Redis user when missing) and nothing rotates
    until ``every`` plus the server's jitter has passed."""
    world = World(operator_password=operator_password, recorded=False)
    world.now = T0 + timedelta(days=60)
    upgraded = world.now
    await loop_for(world, monkeypatch).sync(parse_server(BODY))
    added = plain(world.secret, "operatorPassword")
    assert added and len(added) >= 9
    assert plain(world.secret, "password") == "pw-zero" and world.events == []
    rotation = json.loads(plain(world.secret, "rotation") or "{}")
    assert (rotation["phase"], rotation["rotations"]) == ("Stable", 0)
    assert datetime.fromisoformat(rotation["lastRotation"]) == upgraded
    for _ in range(3):
        world.now += timedelta(minutes=10)
        await loop_for(world, monkeypatch).sync(parse_server(BODY))
    assert world.events == [] and "nextPassword" not in world.secret["data"]
    world.now = upgraded + timedelta(hours=1, minutes=7)  # every 1h + jitter < 6 min
    await loop_for(world, monkeypatch).sync(parse_server(BODY))
    assert [r for _, r, _ in world.events] == ["CachePasswordAdding"]


def test_servers_created_together_do_not_rotate_in_lockstep() -> None:
    """The jitter is deterministic per server (its uid) and below a tenth of ``every``."""
    dues = set()
    for i in range(50):
        body = {**BODY, "metadata": {**BODY["metadata"], "name": f"s{i}", "uid": f"uid-{i}"}}
        settings = cachecontroller.settings_of(parse_server(body))
        assert settings == cachecontroller.settings_of(parse_server(body))  # stable
        assert timedelta(0) <= settings.jitter < timedelta(minutes=6)
        state = cachecontroller.State(current="h", last_rotation=T0)
        dues.add(cachecontroller.rotation.next_due(state, settings))
    assert len(dues) == 50
    assert max(dues) - min(dues) > timedelta(minutes=4)  # type: ignore[operator]


async def test_redis_out_of_reach_holds_the_rotation_before_any_pod_gets_the_new_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    world.reachable = False
    world.now = T0 + timedelta(hours=2)
    for _ in range(5):
        loop = loop_for(world, monkeypatch)
        await loop.sync(parse_server(BODY))
        world.now += timedelta(seconds=5)
    assert plain(world.secret, "password") == "pw-zero"  # what pods read is unchanged
    assert loop.state.phase == "Adding"
    condition = loop.worker.cache_credential_conditions[0]
    assert (condition.status, condition.reason) == ("False", "CachePasswordRedisUnreachable")
    assert "ConnectionRefusedError" in condition.message
    world.reachable = True
    for _ in range(12):
        loop = loop_for(world, monkeypatch)
        await loop.sync(parse_server(BODY))
        world.now += timedelta(seconds=5)
    assert loop.state.rotations == 1


async def test_a_concurrent_writer_wins_and_nothing_is_announced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    world.now = T0 + timedelta(hours=2)
    world.conflicts = 1
    loop = loop_for(world, monkeypatch)
    await loop.sync(parse_server(BODY))
    assert world.events == [] and "nextPassword" not in world.secret["data"]
    assert loop.next_poll == 0.0  # re-read at once
    await loop.sync(parse_server(BODY))
    assert [r for _, r, _ in world.events] == ["CachePasswordAdding"]


async def test_a_rotation_held_past_the_bound_is_reported_stalled_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    world.reachable = False
    world.now = T0 + timedelta(hours=2)
    loop = loop_for(world, monkeypatch)
    for _ in range(8):  # one loop (in memory), passes 5 minutes apart
        await loop.sync(parse_server(BODY))
        world.now += timedelta(minutes=5)
    condition = loop.worker.cache_credential_conditions[0]
    assert (condition.status, condition.reason) == ("False", "CachePasswordRotationStalled")
    assert "Adding" in condition.message and "out of reach" in condition.message
    warnings = [(k, r) for k, r, _ in world.events if k == "Warning"]
    assert warnings == [("Warning", "CachePasswordRotationStalled")]
    world.reachable = True
    for _ in range(6):
        await loop.sync(parse_server(BODY))
        world.now += timedelta(seconds=5)
    condition = loop.worker.cache_credential_conditions[0]
    assert condition.reason in ("CachePasswordRotating", "CachePasswordStable")


async def test_a_broken_rotation_entry_mid_rotation_is_re_read_at_the_poll_period_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    world.now = T0 + timedelta(hours=2)
    loop = loop_for(world, monkeypatch)
    await loop.sync(parse_server(BODY))
    assert loop.state.phase == "Adding"
    world.secret["data"]["rotation"] = b64("{broken")
    await loop.sync(parse_server(BODY))
    condition = loop.worker.cache_credential_conditions[0]
    assert condition.reason == "CachePasswordStateUnreadable" and "{broken" not in condition.message
    assert not loop._due(parse_server(BODY))  # not every second: the next poll


async def test_every_reachable_cache_pod_is_converged_when_one_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = World()
    world.cache_ips, world.down = ["10.0.0.8", "10.0.0.9"], {"10.0.0.8"}
    world.now = T0 + timedelta(hours=2)
    loop = loop_for(world, monkeypatch)
    await loop.sync(parse_server(BODY))  # Stable -> Adding
    await loop.sync(parse_server(BODY))  # tells Redis
    assert cache.password_hash(plain(world.secret, "nextPassword") or "") in world.live
    condition = loop.worker.cache_credential_conditions[0]
    assert condition.reason == "CachePasswordRedisUnreachable" and "10.0.0.8" in condition.message
    assert loop.state.phase == "Adding"  # not all pods seen: no switch
