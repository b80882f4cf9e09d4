"""The per-server cache: rendered objects, the env contract, the credential created once,
and status -- as a user (or an attacker) would notice them."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest

from mcp_operator.api.models import quantity_bytes
from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.kube.client import ApiError
from mcp_operator.reconcile import cache as cache_state
from mcp_operator.render import RenderContext, cache, render

Obj = dict[str, Any]
PASSWORD = "correct-horse-battery-staple"


def server(name: str = "weather", **cache_spec: Any) -> Any:
    return parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": name, "namespace": "tools"},
            "spec": {"image": "ghcr.io/example/mcp:1", "cache": {"enabled": True, **cache_spec}},
        }
    )


MONITOR_PASSWORD = "monitor-pass-word-42"


def ctx() -> RenderContext:
    return RenderContext(
        owner_uid="uid-1",
        cache_password_hash=cache.password_hash(PASSWORD),
        cache_monitor_hash=cache.password_hash(MONITOR_PASSWORD),
    )


def objs(srv: Any) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in render(srv, ctx())}


def config_files(srv: Any) -> dict[str, str]:
    secret = objs(srv)[("Secret", "weather-cache-config")]
    return {k: base64.b64decode(v).decode() for k, v in secret["data"].items()}


def env_of(deployment: Obj) -> list[Obj]:
    env: list[Obj] = deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
    return env


def test_disabled_cache_renders_nothing_and_wires_nothing() -> None:
    srv = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools"},
            "spec": {"image": "x"},
        }
    )
    out = render(srv, ctx())
    assert not [o for o in out if "cache" in o["metadata"]["name"]]
    for o in out:
        if o["kind"] == "Deployment":
            assert not [e for e in env_of(o) if e["name"].startswith("MCP_CACHE_")]


def test_cache_objects_and_their_shape() -> None:
    got = objs(server())
    assert {
        ("Secret", "weather-cache-config"),
        ("Deployment", "weather-cache"),
        ("Service", "weather-cache"),
        ("NetworkPolicy", "weather-cache"),
    } <= set(got)
    # The credential Secret is created once by the operator, never applied by reconcile.
    assert ("Secret", "weather-cache-auth") not in got
    dep = got[("Deployment", "weather-cache")]["spec"]
    assert dep["replicas"] == 1 and dep["strategy"] == {"type": "Recreate"}
    svc = got[("Service", "weather-cache")]["spec"]
    assert svc["selector"] == dep["selector"]["matchLabels"]
    assert svc["ports"][0]["port"] == 6379


def test_restricted_pod_security_readonly_root_and_emptydir_data() -> None:
    pod = objs(server())[("Deployment", "weather-cache")]["spec"]["template"]["spec"]
    [c] = pod["containers"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert pod["automountServiceAccountToken"] is False
    sc = c["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["data"]
    assert volumes["config"]["secret"]["secretName"] == "weather-cache-config"
    mounts = {m["mountPath"]: m for m in c["volumeMounts"]}
    assert "/data" in mounts and mounts["/etc/redis"]["readOnly"] is True


def test_probes_liveness_tcp_readiness_authenticated_ping_without_password_in_argv() -> None:
    [c] = objs(server())[("Deployment", "weather-cache")]["spec"]["template"]["spec"]["containers"]
    assert c["livenessProbe"]["tcpSocket"] == {"port": "redis"}
    script = " ".join(c["readinessProbe"]["exec"]["command"])
    # The monitor user: its password does not rotate under the running Redis pod's env.
    assert "PING" in script and "--user monitor" in script
    assert " -a " not in script and "--pass" not in script
    auth = next(e for e in c["env"] if e["name"] == "REDISCLI_AUTH")
    assert auth["valueFrom"]["secretKeyRef"] == {
        "name": "weather-cache-auth",
        "key": "monitorPassword",
    }


def test_no_password_anywhere_in_the_rendered_objects() -> None:
    text = json.dumps(render(server(), ctx()))
    assert PASSWORD not in text and MONITOR_PASSWORD not in text
    assert base64.b64encode(PASSWORD.encode()).decode() not in text
    encoded_files = "".join(config_files(server()).values())
    assert PASSWORD not in encoded_files


def test_redis_conf_carries_maxmemory_policy_and_no_persistence() -> None:
    conf = config_files(server(maxMemory="64Mi", evictionPolicy="allkeys-lfu"))["redis.conf"]
    lines = set(conf.splitlines())
    assert f"maxmemory {64 * 1024**2}" in lines
    assert "maxmemory-policy allkeys-lfu" in lines
    assert 'save ""' in lines and "appendonly no" in lines
    assert "aclfile /etc/redis/users.acl" in lines


def test_memory_limit_leaves_headroom_above_maxmemory() -> None:
    for size in ("1Mi", "64Mi", "256Mi", "2Gi"):
        srv = server(maxMemory=size)
        [c] = objs(srv)[("Deployment", "weather-cache")]["spec"]["template"]["spec"]["containers"]
        limit = quantity_bytes(c["resources"]["limits"]["memory"])
        assert limit >= quantity_bytes(size) * 1.25 + 32 * 1024**2
        assert c["resources"]["requests"]["memory"] == c["resources"]["limits"]["memory"]


def test_acl_disables_default_user_and_never_grants_dangerous() -> None:
    acl = config_files(server())["users.acl"].splitlines()
    default = next(line for line in acl if line.startswith("user default "))
    assert " off " in default and "-@all" in default and ">" not in default
    mcp = next(line for line in acl if line.startswith("user mcp ")).split()
    assert f"#{cache.password_hash(PASSWORD)}" in mcp
    assert "+@dangerous" not in mcp and "+@all" not in mcp and "allcommands" not in mcp
    # -@dangerous comes after every grant, so no category can bring one back.
    grants = [i for i, rule in enumerate(mcp) if rule.startswith("+")]
    assert mcp.index("-@dangerous") > max(grants)
    monitor = next(line for line in acl if line.startswith("user monitor ")).split()
    assert f"#{cache.password_hash(MONITOR_PASSWORD)}" in monitor
    assert [r for r in monitor if r.startswith(("+", "~", "%", "&"))] == ["+ping", "+info"]


def test_offline_render_gets_an_acl_nobody_can_log_in_with() -> None:
    secret = next(o for o in render(server()) if o["metadata"]["name"] == "weather-cache-config")
    acl = base64.b64decode(secret["data"]["users.acl"]).decode()
    assert f"#{cache.UNKNOWN_PASSWORD_HASH}" in acl


def test_config_change_restarts_redis_and_same_input_renders_the_same() -> None:
    def stamp(srv: Any, c: RenderContext) -> str:
        dep = cache.deployment(srv, c)
        value: str = dep["spec"]["template"]["metadata"]["annotations"][
            cache.CONFIG_HASH_ANNOTATION
        ]
        return value

    assert stamp(server(), ctx()) == stamp(server(), ctx())
    assert stamp(server(maxMemory="64Mi"), ctx()) != stamp(server(), ctx())
    other = RenderContext(owner_uid="uid-1", cache_password_hash=cache.password_hash("new"))
    assert stamp(server(), other) != stamp(server(), ctx())


def test_both_tiers_get_the_env_contract_with_references_only() -> None:
    got = objs(server())
    for tier in ("primary", "backup"):
        env = env_of(got[("Deployment", f"weather-{tier}")])
        names = [e["name"] for e in env]
        wanted = [
            "MCP_CACHE_HOST",
            "MCP_CACHE_PORT",
            "MCP_CACHE_USERNAME",
            "MCP_CACHE_PASSWORD",
            "MCP_CACHE_URL",
        ]
        assert [n for n in names if n.startswith("MCP_CACHE_")] == wanted
        by = {e["name"]: e for e in env}
        assert by["MCP_CACHE_HOST"]["value"] == "weather-cache.tools.svc"
        assert by["MCP_CACHE_PORT"]["value"] == "6379"
        assert by["MCP_CACHE_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "weather-cache-auth",
            "key": "password",
            "optional": True,
        }
        url = by["MCP_CACHE_URL"]["value"]
        # $(VAR) only expands variables defined earlier in the list.
        for ref in ("MCP_CACHE_USERNAME", "MCP_CACHE_PASSWORD", "MCP_CACHE_HOST"):
            assert f"$({ref})" in url and names.index(ref) < names.index("MCP_CACHE_URL")


def test_a_users_own_cache_variable_wins() -> None:
    srv = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools"},
            "spec": {
                "image": "x",
                "cache": {"enabled": True},
                "env": [{"name": "MCP_CACHE_HOST", "value": "elsewhere"}],
            },
        }
    )
    env = env_of(objs(srv)[("Deployment", "weather-primary")])
    hosts = [e for e in env if e["name"] == "MCP_CACHE_HOST"]
    assert hosts == [{"name": "MCP_CACHE_HOST", "value": "elsewhere"}]
    # ...and the URL is built from it, not left with a literal "$(MCP_CACHE_HOST)".
    url = _kubelet_expand(env)["MCP_CACHE_URL"]
    assert url == "redis://mcp:secret@elsewhere:6379/0", url


def _kubelet_expand(env: list[Obj]) -> dict[str, str]:
    """The kubelet's $(VAR) expansion: only variables defined earlier in the list; an
    unknown reference stays as written. Secret values stand in as 'mcp' and 'secret'."""
    import re

    seen: dict[str, str] = {}
    for e in env:
        if "value" in e:
            value = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: seen.get(m.group(1), m.group(0)),
                e["value"],
            )
        else:
            value = "mcp" if e["name"].endswith("USERNAME") else "secret"
        seen[e["name"]] = value
    return seen


def test_the_default_url_expands_to_this_servers_cache() -> None:
    env = env_of(objs(server())[("Deployment", "weather-backup")])
    url = _kubelet_expand(env)["MCP_CACHE_URL"]
    assert url == "redis://mcp:secret@weather-cache.tools.svc:6379/0"


def _matches(selector: Obj, labels: dict[str, str]) -> bool:
    """Kubernetes label-selector semantics (matchLabels + In/NotIn/Exists)."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and labels.get(key) in values:
            return False
        if op == "Exists" and key not in labels:
            return False
    return True


def test_network_policy_selects_the_cache_and_admits_exactly_this_servers_pods() -> None:
    mine, other = objs(server()), objs(server("other"))
    policy = mine[("NetworkPolicy", "weather-cache")]["spec"]

    def pod_labels(rendered: dict[tuple[str, str], Obj], name: str) -> dict[str, str]:
        labels: dict[str, str] = rendered[("Deployment", name)]["spec"]["template"]["metadata"][
            "labels"
        ]
        return labels

    # The policy protects this server's cache pod only.
    assert _matches(policy["podSelector"], pod_labels(mine, "weather-cache"))
    assert not _matches(policy["podSelector"], pod_labels(other, "other-cache"))
    assert policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    # Two peers: this server's pods of either tier, in this namespace (no
    # namespaceSelector), and the operator's pods in the operator's namespace only (it
    # tells Redis a rotated password): a label-only peer across namespaces would admit any
    # pod anyone labels mcp-operator.
    [mcp_peer, operator_peer] = rule["from"]
    assert operator_peer == {
        "namespaceSelector": {
            "matchLabels": {"kubernetes.io/metadata.name": "mcp-operator-system"}
        },
        "podSelector": {"matchLabels": {"mcp-operator.dev/component": "operator"}},
    }
    assert mcp_peer == {
        "podSelector": {
            "matchLabels": {"mcp-operator.dev/server": "weather"},
            "matchExpressions": [
                {"key": "mcp-operator.dev/tier", "operator": "In", "values": ["primary", "backup"]}
            ],
        }
    }

    def admitted(labels: dict[str, str]) -> bool:
        return _matches(mcp_peer["podSelector"], labels)

    assert admitted(pod_labels(mine, "weather-primary"))
    assert admitted(pod_labels(mine, "weather-backup"))
    assert not admitted(pod_labels(other, "other-primary"))
    assert not admitted(pod_labels(other, "other-backup"))
    assert not admitted(pod_labels(other, "other-cache"))
    assert not admitted(pod_labels(mine, "weather-cache"))
    assert not admitted({"app": "random"})


def test_invalid_cache_settings_are_refused_with_paths() -> None:
    with pytest.raises(InvalidSpec) as err:
        server(maxMemory="0", resources={"limits": {"memory": "1Gi"}})
    text = "; ".join(str(p) for p in err.value.problems)
    assert "spec.cache.maxMemory" in text and "spec.cache.resources" in text


# -- the credential Secret, created once ---------------------------------------------------


class FakeSecrets:
    """A dict of Secrets with create-if-absent semantics (409 on conflict)."""

    def __init__(self) -> None:
        self.store: dict[tuple[str | None, str], Obj] = {}
        self.creates = 0
        self.fail_next_create_after_write = False

    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        return self.store.get((namespace, name))

    async def create(self, obj: Obj, fenced: bool = True) -> Obj:
        key = (obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if key in self.store:
            raise ApiError(409, "AlreadyExists", "exists")
        data = {k: base64.b64encode(v.encode()).decode() for k, v in obj["stringData"].items()}
        self.store[key] = {"metadata": obj["metadata"], "data": data}
        self.creates += 1
        if self.fail_next_create_after_write:
            self.fail_next_create_after_write = False
            raise ConnectionError("operator killed after the create reached the API server")
        return self.store[key]

    async def patch(
        self, api_version: str, kind: str, namespace: str | None, name: str, body: Obj
    ) -> Obj:
        found = self.store[(namespace, name)]
        found = {**found, "data": {**found["data"], **body["data"]}}
        self.store[(namespace, name)] = found
        return found


def stored_password(fake: FakeSecrets) -> str:
    secret = fake.store[("tools", "weather-cache-auth")]
    return base64.b64decode(secret["data"]["password"]).decode()


def test_the_secret_is_generated_once_and_never_overwritten() -> None:
    fake, srv = FakeSecrets(), server()
    first = asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
    password = stored_password(fake)
    assert len(password) >= 40 and first.password_hash == cache.password_hash(password)
    assert first.monitor_hash not in (None, first.password_hash)
    for _ in range(5):
        again = asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
        assert again == first
    assert fake.creates == 1 and stored_password(fake) == password
    owner = fake.store[("tools", "weather-cache-auth")]["metadata"]["ownerReferences"][0]
    assert owner["uid"] == "uid-1"


def test_killed_between_create_and_use_resumes_with_the_stored_password() -> None:
    fake, srv = FakeSecrets(), server()
    fake.fail_next_create_after_write = True
    with pytest.raises(ConnectionError):
        asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
    resumed = asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
    assert fake.creates == 1
    assert resumed.password_hash == cache.password_hash(stored_password(fake))


def test_a_concurrent_creator_wins_and_its_password_is_used() -> None:
    fake, srv = FakeSecrets(), server()

    class Racing(FakeSecrets):
        async def get(self, *a: Any) -> Obj | None:
            found = await super().get(*a)
            if found is None and not self.store:  # someone creates it right after our read
                await FakeSecrets.create(
                    self, cache.auth_secret(srv, "theirs", "their-monitor", "uid-1")
                )
                self.creates = 0
            return found

    racing = Racing()
    result = asyncio.run(cache_state.ensure_credential(racing, srv, "uid-1"))
    assert result.password_hash == cache.password_hash("theirs")
    assert stored_password(racing) == "theirs"
    del fake


def test_an_old_secret_gets_the_operators_redis_user_before_the_first_render() -> None:
    """So an upgrade changes the Redis pod template (ACL file, probe) once: one restart."""
    fake, srv = FakeSecrets(), server()
    old = cache.auth_secret(srv, "pw", "mon", "uid-1")
    data = {k: base64.b64encode(v.encode()).decode() for k, v in old["stringData"].items()}
    fake.store[("tools", "weather-cache-auth")] = {
        "metadata": {"resourceVersion": "3"},
        "data": data,
    }
    result = asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
    stored = fake.store[("tools", "weather-cache-auth")]["data"]
    operator = base64.b64decode(stored["operatorPassword"]).decode()
    assert len(operator) >= 40 and result.operator_hash == cache.password_hash(operator)
    assert stored_password(fake) == "pw" and fake.creates == 0
    again = asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
    assert again == result  # added once


def test_an_unusable_secret_is_reported_not_replaced() -> None:
    fake, srv = FakeSecrets(), server()
    fake.store[("tools", "weather-cache-auth")] = {"metadata": {}, "data": {"password": "%%%"}}
    result = asyncio.run(cache_state.ensure_credential(fake, srv, "uid-1"))
    assert result.password_hash is None and "weather-cache-auth" in result.problem
    assert fake.store[("tools", "weather-cache-auth")]["data"] == {"password": "%%%"}
    status, want = cache_state.cache_status(srv, None, result)
    assert want is not None and want.status == "False" and want.reason == "CredentialInvalid"
    assert status.ready is False


def test_status_follows_the_cache_deployment_and_never_shows_the_password() -> None:
    srv = server()
    cred = cache_state.Credential(cache.password_hash(PASSWORD))
    ready = {"status": {"readyReplicas": 1}}
    status, want = cache_state.cache_status(srv, ready, cred)
    assert want is not None and (want.status, want.reason) == ("True", "CacheAvailable")
    assert status.ready is True and status.secret_name == "weather-cache-auth"
    assert status.endpoint == "redis://weather-cache.tools.svc:6379"
    status, want = cache_state.cache_status(srv, {"status": {}}, cred)
    assert want is not None and (want.status, want.reason) == ("False", "CacheUnavailable")
    _, want = cache_state.cache_status(srv, None, cred)
    assert want is not None and want.reason == "CacheNotCreated"
    assert PASSWORD not in status.model_dump_json()
    off = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools"},
            "spec": {"image": "x"},
        }
    )
    assert cache_state.cache_status(off, ready, cred)[1] is None


def _redis_resources(srv: Any) -> Obj:
    dep = objs(srv)[("Deployment", "weather-cache")]
    resources: Obj = dep["spec"]["template"]["spec"]["containers"][0]["resources"]
    return resources


def test_requests_above_a_limit_are_lowered_so_the_api_server_accepts_the_pod() -> None:
    # The API server refuses a container whose request exceeds its limit: every apply of
    # the cache Deployment would fail (ApplyFailed on each pass).
    big = _redis_resources(server(maxMemory="64Mi", resources={"requests": {"memory": "1Gi"}}))
    assert big["limits"]["memory"] == "112Mi" and big["requests"]["memory"] == "112Mi"
    tight = _redis_resources(server(resources={"limits": {"cpu": "10m"}}))
    assert tight["requests"]["cpu"] == "10m" and tight["limits"]["cpu"] == "10m"
    fine = _redis_resources(
        server(resources={"requests": {"cpu": "100m", "memory": "64Mi"}, "limits": {"cpu": "1"}})
    )
    assert fine["requests"] == {"cpu": "100m", "memory": "64Mi"}


# -- reconcile: what the worker applies and deletes ----------------------------------------


class FakeApplier(FakeSecrets):
    """Records applies and deletes; an apply returns the object as the API server would."""

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[tuple[str, str]] = []
        self.deleted: list[tuple[str, str]] = []

    async def apply(self, obj: Obj) -> Obj:
        self.applied.append((obj["kind"], obj["metadata"]["name"]))
        return obj

    async def delete(
        self, api_version: str, kind: str, namespace: str | None, name: str, uid: Any = None
    ) -> bool:
        self.deleted.append((kind, name))
        return False  # already gone (404) is fine


def worker_for(client: Any, body: Obj) -> Any:
    from mcp_operator.reconcile.children import ChildIndex
    from mcp_operator.reconcile.worker import ServerWorker, Shared
    from mcp_operator.render.context import Capabilities

    shared = Shared(client, ChildIndex(), Capabilities(), lambda *a: None)
    return ServerWorker(("tools", "weather"), body, shared)


def test_the_unwatched_config_secret_is_applied_every_pass_so_a_deleted_one_is_restored() -> None:
    # Secrets are not watched: an index fed only by our own applies would call a deleted
    # or edited NAME-cache-config current forever, and the next cache pod would never start.
    fake = FakeApplier()
    srv = server()
    worker = worker_for(fake, {"metadata": {"name": "weather", "namespace": "tools"}})
    wanted = [cache.config_secret(srv, ctx()), cache.service(srv, ctx())]
    for _ in range(3):
        asyncio.run(worker._apply(wanted))
    assert fake.applied.count(("Secret", "weather-cache-config")) == 3
    assert fake.applied.count(("Service", "weather-cache")) == 1  # watched: applied once


def test_turning_the_cache_off_deletes_the_config_secret_even_after_a_restart() -> None:
    fake = FakeApplier()
    body = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "tools", "uid": "uid-1", "generation": 2},
        "spec": {"image": "x", "cache": {"enabled": False}},
        # What the previous operator wrote while the cache was on; this one's index is empty.
        "status": {"cache": {"ready": True, "endpoint": "redis://weather-cache.tools.svc:6379"}},
    }
    worker = worker_for(fake, body)
    outcome = asyncio.run(worker._reconcile())
    assert outcome.ok
    assert ("Secret", "weather-cache-config") in fake.deleted
    assert not [a for a in fake.applied if "cache" in a[1]]


def test_a_broken_auth_secret_cannot_stop_mcp_pods_from_starting() -> None:
    # A required secretKeyRef to a deleted Secret (or one without 'password') is
    # CreateContainerConfigError for every new MCP pod: a cache problem would take serving
    # down. The Redis pod's own reference stays required (it cannot work without it).
    got = objs(server())
    for tier in ("primary", "backup"):
        refs = [
            e["valueFrom"]["secretKeyRef"]
            for e in env_of(got[("Deployment", f"weather-{tier}")])
            if "secretKeyRef" in e.get("valueFrom", {})
            and e["valueFrom"]["secretKeyRef"]["name"] == "weather-cache-auth"
        ]
        assert len(refs) == 2 and all(r.get("optional") is True for r in refs)


def test_a_new_password_rolls_both_tiers_without_the_password_in_the_pod_template() -> None:
    def stamps(c: RenderContext) -> dict[str, str]:
        got = {(o["kind"], o["metadata"]["name"]): o for o in render(server(), c)}
        return {
            tier: got[("Deployment", f"weather-{tier}")]["spec"]["template"]["metadata"][
                "annotations"
            ][cache.CREDENTIAL_ANNOTATION]
            for tier in ("primary", "backup")
        }

    before = stamps(ctx())
    assert before == stamps(ctx())  # same credential: no roll
    regenerated = RenderContext(
        owner_uid="uid-1",
        cache_password_hash=cache.password_hash("a-new-password"),
        cache_monitor_hash=cache.password_hash(MONITOR_PASSWORD),
    )
    after = stamps(regenerated)
    assert after["primary"] != before["primary"] and after["backup"] != before["backup"]
    text = json.dumps(before)
    assert PASSWORD not in text and cache.password_hash(PASSWORD) not in text


class RefusingSecrets(FakeApplier):
    async def get(
        self, api_version: str, kind: str, namespace: str | None, name: str
    ) -> Obj | None:
        if kind == "Secret":
            raise ApiError(403, "Forbidden", "secrets is forbidden")
        return await super().get(api_version, kind, namespace, name)


def test_a_refused_credential_read_is_cache_not_ready_and_the_tiers_are_still_applied() -> None:
    fake = RefusingSecrets()
    body = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "tools", "uid": "uid-1", "generation": 3},
        "spec": {"image": "ghcr.io/example/mcp:2", "cache": {"enabled": True}},
    }
    worker = worker_for(fake, body)
    # The tiers as they run, stamped with the credential they started with.
    for obj in render(server(), ctx()):
        if obj["kind"] == "Deployment" and obj["metadata"]["name"] != "weather-cache":
            worker.shared.index.observe("Deployment", obj, deleted=False)
    outcome = asyncio.run(worker._reconcile())
    assert outcome.ok, outcome  # not ApplyFailed: the tier change (image :2) is applied
    assert ("Deployment", "weather-primary") in fake.applied
    assert not [a for a in fake.applied if a[1].startswith("weather-cache")]
    _, want = cache_state.cache_status(worker.server, None, worker.cache_credential)
    assert want is not None and (want.status, want.reason) == ("False", "CredentialUnavailable")
    assert "weather-cache-auth" in want.message and "forbidden" in want.message
    # The unreadable Secret does not roll the tiers: the running stamp is kept.
    desired = render(worker.server, worker.render_context())
    live = worker.shared.index.children(worker.key)
    from mcp_operator.reconcile.worker import _keep_credential_stamps

    _keep_credential_stamps(desired, live)
    primary = next(o for o in desired if o["metadata"]["name"] == "weather-primary")
    stamp = primary["spec"]["template"]["metadata"]["annotations"][cache.CREDENTIAL_ANNOTATION]
    running = live[("Deployment", "weather-primary")]["spec"]["template"]["metadata"]
    assert stamp == running["annotations"][cache.CREDENTIAL_ANNOTATION]


def test_the_cache_pod_gets_the_servers_placement_and_pull_secrets() -> None:
    # On a tainted node pool or with a private registry mirror the cache pod would never
    # run (Pending / ImagePullBackOff) without spec.pod's settings.
    pod_settings = {
        "imagePullSecrets": [{"name": "mirror-creds"}],
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "mcp"}],
        "nodeSelector": {"pool": "mcp"},
        "priorityClassName": "mcp-high",
        "containerSecurityContext": {"runAsUser": 4242},
    }
    srv = parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": "weather", "namespace": "tools"},
            "spec": {"image": "x", "cache": {"enabled": True}, "pod": pod_settings},
        }
    )
    pod = objs(srv)[("Deployment", "weather-cache")]["spec"]["template"]["spec"]
    assert pod["imagePullSecrets"] == [{"name": "mirror-creds"}]
    assert pod["tolerations"] == [{"key": "dedicated", "operator": "Equal", "value": "mcp"}]
    assert pod["nodeSelector"] == {"pool": "mcp"}
    assert pod["priorityClassName"] == "mcp-high"
    # The MCP container's security overrides are not Redis's: it keeps its own user.
    assert pod["securityContext"]["runAsUser"] == cache.REDIS_UID
    assert "runAsUser" not in pod["containers"][0]["securityContext"]
    # Without spec.pod settings nothing is added.
    plain = objs(server())[("Deployment", "weather-cache")]["spec"]["template"]["spec"]
    assert not {"imagePullSecrets", "tolerations", "nodeSelector", "priorityClassName"} & set(plain)


def test_the_data_path_keeps_the_backup_tiers_live_credential_stamp() -> None:
    """A failover scales the backup tier from the last reconcile's render; it must not
    re-stamp it (a rollout of the tier being promoted) with a credential the password loop
    has moved on from since."""
    from mcp_operator.reconcile.worker import pin_credential_stamp

    def deployment(stamp: str | None) -> Obj:
        annotations = {cache.CREDENTIAL_ANNOTATION: stamp} if stamp else {}
        return {"spec": {"template": {"metadata": {"annotations": annotations}}}}

    desired = deployment("stale")
    pin_credential_stamp(desired, deployment("live"))
    assert desired == deployment("live")
    desired = deployment("stale")
    pin_credential_stamp(desired, deployment(None))
    assert desired == deployment(None)
    desired = deployment("rendered")
    pin_credential_stamp(desired, None)  # no live backup: the data path does not apply it
    assert desired == deployment(None)
