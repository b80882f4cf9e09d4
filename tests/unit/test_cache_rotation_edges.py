"""The cache password rotation's edges: the Secret as its state store (keys/cachestore.py),
what each state renders (the ACL file, the tiers' stamps, the config hash that would restart
Redis) and when a tier counts as rolled (keys/cachecontroller.tier_rolled)."""

from __future__ import annotations

import base64
import hashlib
import json
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from mcp_operator.api.validation import parse_server
from mcp_operator.keys import cacherotation as rot
from mcp_operator.keys import cachestore
from mcp_operator.keys.cachecontroller import tier_rolled
from mcp_operator.reconcile.cache import credential_of
from mcp_operator.render import RenderContext, cache, render

Obj = dict[str, Any]
T0 = datetime(2026, 1, 1, tzinfo=UTC)
P0, P1, MON, OP = "password-zero-aaaa", "password-one-bbbb", "monitor-cccc", "operator-dddd"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def secret(**data: str) -> Obj:
    return {
        "metadata": {"name": "weather-cache-auth", "resourceVersion": "7",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "data": {k: b64(v) for k, v in data.items()},
    }  # fmt: skip


def apply_patch(obj: Obj, patch: Obj) -> Obj:
    data = dict(obj["data"])
    for key, value in patch["data"].items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return {**obj, "data": data}


def server(**rotation: Any) -> Any:
    return parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools", "uid": "u"},
            "spec": {
                "image": "ghcr.io/example/mcp:1",
                "backup": {"enabled": True},
                "cache": {"enabled": True, "credentialRotation": rotation},
            },
        }
    )


def test_a_secret_from_before_rotation_is_not_due_until_the_loop_records_it() -> None:
    """Counting from the Secret's creation would rotate every old Secret at once on the
    operator's upgrade: nothing is due until the loop records "now" as the last rotation."""
    stored = cachestore.decode(secret(password=P0, monitorPassword=MON))
    assert stored is not None and not stored.recorded
    assert stored.state == rot.State(current=cache.password_hash(P0))
    settings = rot.Settings(every=timedelta(seconds=10), propagation=timedelta(seconds=1))
    assert rot.next_due(stored.state, settings) is None
    assert stored.operator_password is None  # the reconcile adds one first


def test_a_rotation_round_trips_through_the_secret_without_a_password_in_the_state() -> None:
    obj = secret(password=P0, monitorPassword=MON, operatorPassword=OP)
    stored = cachestore.decode(obj)
    assert stored is not None
    h0, h1 = cache.password_hash(P0), cache.password_hash(P1)
    adding = replace(stored.state, phase="Adding", since=T0, next=h1)
    obj = apply_patch(obj, cachestore.patch(stored, adding, "7", {h1: P1}))
    assert base64.b64decode(obj["data"]["nextPassword"]).decode() == P1
    assert base64.b64decode(obj["data"]["password"]).decode() == P0  # nobody uses P1 yet
    stored = cachestore.decode(obj)
    assert stored is not None and stored.state == adding
    switched = replace(adding, phase="Propagating", current=h1, next=None, previous=h0)
    patch = cachestore.patch(stored, switched, "8", {})
    assert patch["metadata"] == {"resourceVersion": "8"}  # the write's precondition
    obj = apply_patch(obj, patch)
    assert "nextPassword" not in obj["data"]
    assert base64.b64decode(obj["data"]["password"]).decode() == P1
    stored = cachestore.decode(obj)
    assert stored is not None and stored.state == switched
    state_doc = base64.b64decode(obj["data"]["rotation"]).decode()
    for plain in (P0, P1, MON, OP):
        assert plain not in state_doc
    assert json.loads(state_doc)["previous"] == h0  # a hash, never the password


@pytest.mark.parametrize(
    "doc",
    ["not json", json.dumps({"phase": "Dancing"}), json.dumps({"phase": "RollingBackup"}),
     json.dumps({"phase": "Adding"}), json.dumps({"phase": "Stable", "since": "yesterday"})],
)  # fmt: skip
def test_a_broken_rotation_entry_is_reported_without_quoting_it(doc: str) -> None:
    obj = secret(password=P0, monitorPassword=MON, operatorPassword=OP)
    obj["data"]["rotation"] = b64(doc)
    with pytest.raises(cachestore.UnreadableState) as err:
        cachestore.decode(obj)
    assert doc not in str(err.value) and "rotation" in str(err.value)
    # fail static: no hash, so the reconcile keeps the applied ACL file (which may still
    # list a retiring password some pods hold) and the tiers' live stamps
    cred = credential_of(obj, "weather-cache-auth")
    assert cred.password_hash is None and cred.reason == "CredentialInvalid"
    assert "last applied configuration" in cred.problem and doc not in cred.problem


def rendered(state: rot.State) -> dict[tuple[str, str], Obj]:
    srv = server()
    stored_secret = secret(password="x", monitorPassword=MON, operatorPassword=OP)
    cred = credential_of(stored_secret, "weather-cache-auth")
    extra = tuple(sorted(rot.accepted(state) - {state.current}))
    tiers = tuple((t, rot.tier_hash(state, t)) for t in ("primary", "backup"))
    ctx = RenderContext(
        owner_uid="u",
        cache_password_hash=state.current,
        cache_monitor_hash=cred.monitor_hash,
        cache_operator_hash=cred.operator_hash,
        cache_extra_hashes=extra,
        cache_tier_hashes=tiers if state.previous else (),
    )
    return {(o["kind"], o["metadata"]["name"]): o for o in render(srv, ctx)}


def test_every_phase_renders_what_redis_accepts_and_never_restarts_redis() -> None:
    h0, h1 = cache.password_hash(P0), cache.password_hash(P1)
    states = [
        rot.State(current=h0),
        rot.State(current=h0, phase="Adding", next=h1),
        rot.State(current=h1, phase="Propagating", previous=h0),
        rot.State(current=h1, phase="RollingBackup", previous=h0),
        rot.State(current=h1, phase="RollingPrimary", previous=h0),
        rot.State(current=h1, phase="Removing", previous=h0),
        rot.State(current=h1),
    ]
    stamps, config_hashes = [], set()
    for state in states:
        objs = rendered(state)
        acl = base64.b64decode(objs[("Secret", "weather-cache-config")]["data"]["users.acl"])
        mcp_line = next(line for line in acl.decode().splitlines() if line.startswith("user mcp "))
        assert {w[1:] for w in mcp_line.split() if w.startswith("#")} == rot.accepted(state)
        template = objs[("Deployment", "weather-cache")]["spec"]["template"]
        config_hashes.add(template["metadata"]["annotations"][cache.CONFIG_HASH_ANNOTATION])
        stamps.append(
            tuple(
                objs[("Deployment", f"weather-{t}")]["spec"]["template"]["metadata"]["annotations"][
                    cache.CREDENTIAL_ANNOTATION
                ]
                for t in ("backup", "primary")
            )
        )
    assert len(config_hashes) == 1  # a rotation never restarts Redis
    old, new = cache.credential_stamp(h0), cache.credential_stamp(h1)
    # the backup tier rolls first, the primary second; each tier exactly once
    assert stamps == [(old, old), (old, old), (old, old), (new, old), (new, new), (new, new),
                      (new, new)]  # fmt: skip
    # Stable renders the stamp of the version before rotation existed: no roll on upgrade
    assert old == hashlib.sha256(f"credential\0{h0}".encode()).hexdigest()[:16]


def deployment(stamp: str, **status: int) -> Obj:
    return {
        "metadata": {"generation": 3},
        "spec": {"replicas": 2, "template": {"metadata": {"annotations": {
            cache.CREDENTIAL_ANNOTATION: stamp}}}},
        "status": {"observedGeneration": 3, **status},
    }  # fmt: skip


def pod(stamp: str, phase: str = "Running", terminating: bool = False) -> Obj:
    meta: Obj = {"annotations": {cache.CREDENTIAL_ANNOTATION: stamp}}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return {"metadata": meta, "status": {"phase": phase}}


def test_a_tier_is_rolled_only_when_every_pod_runs_the_new_template_and_is_ready() -> None:
    new, old = cache.credential_stamp("h1"), cache.credential_stamp("h0")
    done = {"updatedReplicas": 2, "replicas": 2, "readyReplicas": 2}
    two_new = [pod(new), pod(new)]
    assert tier_rolled(deployment(new, **done), two_new, "h1", exists=True)
    # the template not applied yet; an old pod still terminating (it may still serve)
    assert not tier_rolled(deployment(old, **done), two_new, "h1", exists=True)
    assert not tier_rolled(
        deployment(new, **done), [*two_new, pod(old, terminating=True)], "h1", exists=True
    )
    assert tier_rolled(deployment(new, **done), [*two_new, pod(old, phase="Failed")], "h1", True)
    # surge pod not ready yet / old ReplicaSet still counted / status from an older generation
    assert not tier_rolled(deployment(new, **{**done, "readyReplicas": 1}), two_new, "h1", True)
    assert not tier_rolled(deployment(new, **{**done, "replicas": 3}), two_new, "h1", True)
    stale = deployment(new, **done)
    stale["status"]["observedGeneration"] = 2
    assert not tier_rolled(stale, two_new, "h1", exists=True)
    # no backup tier (off): nothing to roll; a tier that should exist but does not: not rolled
    assert tier_rolled(None, [], "h1", exists=False)
    assert not tier_rolled(None, [], "h1", exists=True)
    # scaled to zero (a cold backup): rolled once the template carries the stamp
    zero = deployment(new)
    zero["spec"]["replicas"] = 0
    assert tier_rolled(zero, [], "h1", exists=True)


def test_the_rotation_spec_defaults_and_bounds() -> None:
    from mcp_operator.api.validation import InvalidSpec

    spec = server().spec.cache.credential_rotation
    assert (spec.enabled, spec.every, spec.propagation) == (True, "720h", "2m")
    for bad in ({"every": "5s"}, {"propagation": "0s"}, {"every": "20s", "propagation": "30s"}):
        with pytest.raises(InvalidSpec):
            server(**bad)


@pytest.mark.parametrize(
    ("reply", "code"),
    [
        (b"-ERR Error in ACL SETUSER modifier '#" + b"ab" * 32 + b"': Syntax error\r\n", "ERR"),
        (b"-WRONGPASS invalid username-password pair or user is disabled.\r\n", "WRONGPASS"),
        (b"-#" + b"cd" * 32 + b" odd\r\n", "an error"),
    ],
)
def test_a_redis_error_reply_yields_its_code_only(reply: bytes, code: str) -> None:
    """A Redis error reply may echo an ACL SETUSER argument (a password hash): only the
    code reaches the exception (hence status, Events and logs)."""
    import asyncio

    from mcp_operator.keys import redisacl

    async def read() -> str:
        reader = asyncio.StreamReader()
        reader.feed_data(reply)
        with pytest.raises(redisacl.RedisError) as err:
            await redisacl._read(reader)
        return str(err.value)

    message = asyncio.run(read())
    assert message == f"Redis replied {code}"
    assert "ab" * 8 not in message and "cd" * 8 not in message


def test_a_deposed_leader_only_observes_the_live_acl() -> None:
    """The leadership fence is asked before every ACL SETUSER: a replica that may no longer
    act neither adds nor removes a password (its successor may have switched to it)."""
    import asyncio

    from mcp_operator.keys import redisacl

    class Recording(redisacl.Connection):
        def __init__(self) -> None:
            super().__init__("h", 1, "u", "p")
            self.live = {b"a" * 64, b"b" * 64}
            self.changes: list[tuple[str, ...]] = []

        async def command(self, *args: str) -> redisacl.Reply:
            if args[:2] == ("ACL", "GETUSER"):
                return [b"flags", [], b"passwords", sorted(self.live)]
            self.changes.append(args)
            return "OK"

    leading = [False]
    redis = Recording()
    wanted = frozenset({"b" * 64, "c" * 64})
    seen = asyncio.run(redis.converge("mcp", wanted, lambda: leading[0]))
    assert redis.changes == [] and seen == {"a" * 64, "b" * 64}
    leading[0] = True
    asyncio.run(redis.converge("mcp", wanted, lambda: leading[0]))
    assert [c[3][0] for c in redis.changes] == ["#", "!"]  # add first, then remove
