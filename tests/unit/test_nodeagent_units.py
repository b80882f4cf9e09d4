"""Unit tests of the node agent's pure parts: env, image map, IPs, probes, volumes, status."""

from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from mcp_devcluster.nodeagent import podstatus
from mcp_devcluster.nodeagent.container import BackoffPolicy, ContainerRunner
from mcp_devcluster.nodeagent.envvars import ConfigError, expand, resolve_env
from mcp_devcluster.nodeagent.images import (
    ImageMap,
    ImageRule,
    build_argv,
    parse_rules,
    split_image,
)
from mcp_devcluster.nodeagent.ipam import (
    DEFAULT_POD_CIDR,
    DEV_POD_RANGE,
    IpAllocator,
    ensure_local_range,
    is_local_address,
    listening_addresses,
    local_route_for,
    random_pod_cidr,
)
from mcp_devcluster.nodeagent.probes import ProbeContext, ProbeTracker, run_probe
from mcp_devcluster.nodeagent.proxy import default_service_cidr
from mcp_devcluster.nodeagent.volumes import PodVolumes, atomic_write, mounts_env

POD: dict[str, Any] = {
    "metadata": {"name": "p", "namespace": "ns", "uid": "u1", "labels": {"app": "x"}},
    "spec": {"nodeName": "mcp-local"},
    "status": {"podIP": "127.1.0.7"},
}


class FakeSources:
    """Secrets/ConfigMaps in memory."""

    def __init__(self) -> None:
        self.secrets: dict[str, dict[str, str]] = {"ns/s": {"token": "t0p", "user": "bob"}}
        self.config_maps: dict[str, dict[str, str]] = {"ns/cm": {"mode": "dev", "a.conf": "x=1"}}

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get(f"{namespace}/{name}")

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.config_maps.get(f"{namespace}/{name}")

    def secret_bytes(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        data = self.secret_data(namespace, name)
        return None if data is None else {k: v.encode() for k, v in data.items()}

    def config_map_bytes(self, namespace: str, name: str) -> Mapping[str, bytes] | None:
        data = self.config_map_data(namespace, name)
        return None if data is None else {k: v.encode() for k, v in data.items()}

    def service_account_token(
        self, pod: Mapping[str, Any], audience: str | None, seconds: int
    ) -> bytes:
        return f"token-of-{pod['spec'].get('serviceAccountName')}-{audience}-{seconds}".encode()


# -- env -----------------------------------------------------------------------------------
def test_env_resolves_values_refs_fields_and_env_from() -> None:
    container = {
        "envFrom": [
            {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
            {"secretRef": {"name": "s"}},
        ],
        "env": [
            {"name": "PLAIN", "value": "v"},
            {"name": "EXPANDED", "value": "$(PLAIN)-$(CM_mode)-$$(PLAIN)-$(NOPE)"},
            {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "s", "key": "token"}}},
            {"name": "MODE", "valueFrom": {"configMapKeyRef": {"name": "cm", "key": "mode"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
            {
                "name": "OPT",
                "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k", "optional": True}},
            },
        ],
    }
    env = resolve_env(container, POD, FakeSources())
    assert env["CM_mode"] == "dev" and env["token"] == "t0p" and env["user"] == "bob"
    assert env["EXPANDED"] == "v-dev-$(PLAIN)-$(NOPE)"
    assert (env["TOKEN"], env["MODE"], env["IP"]) == ("t0p", "dev", "127.1.0.7")
    assert (env["NAME"], env["NS"], env["APP"]) == ("p", "ns", "x")
    assert "OPT" not in env


@pytest.mark.parametrize(
    "item",
    [
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "missing", "key": "k"}}},
        {"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "missing"}}},
        {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "missing", "key": "k"}}},
    ],
)
def test_env_missing_required_source_is_config_error(item: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        resolve_env({"env": [item]}, POD, FakeSources())


def test_env_from_optional_missing_is_skipped_and_required_missing_fails() -> None:
    optional = {"envFrom": [{"secretRef": {"name": "missing", "optional": True}}]}
    assert resolve_env(optional, POD, FakeSources()) == {}
    with pytest.raises(ConfigError, match='configmap "gone" not found'):
        resolve_env({"envFrom": [{"configMapRef": {"name": "gone"}}]}, POD, FakeSources())


def test_expand_escapes() -> None:
    assert expand("$(A)$$(A)$(B)", {"A": "1"}) == "1$(A)$(B)"


# -- image map -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("redis", ("redis", "latest")),
        ("redis:7", ("redis", "7")),
        ("docker.io/library/redis:7.2", ("redis", "7.2")),
        ("localhost:5000/x/y:1", ("localhost:5000/x/y", "1")),
        ("ghcr.io/a/b@sha256:abc", ("ghcr.io/a/b", "sha256:abc")),
    ],
)
def test_split_image(image: str, expected: tuple[str, str]) -> None:
    assert split_image(image) == expected


def test_default_map_matches_example_and_redis_only() -> None:
    images = ImageMap()
    assert images.lookup("ghcr.io/mcp-operator/example-server:dev") is not None
    assert images.lookup("ghcr.io/mcp-operator/example-server") is not None
    assert images.lookup("redis:7-alpine") is not None
    assert images.lookup("bitnami/redis:7") is not None
    assert images.lookup("docker.io/library/redis:7") is not None
    assert images.lookup("nginx:1") is None
    assert images.lookup("ghcr.io/mcp-operator/other:dev") is None


def test_argv_entrypoint_command_args_and_bind_args() -> None:
    rule = ImageMap().lookup("redis:7")
    assert rule is not None
    values = {"pod_ip": "127.1.0.9"}
    assert build_argv(rule, None, ["--maxmemory", "1mb"], values) == [
        "redis-server",
        "--maxmemory",
        "1mb",
        "--bind",
        "127.1.0.9",
        "--protected-mode",
        "no",
    ]
    assert build_argv(rule, ["my-redis"], None, values)[:3] == ["my-redis", "--bind", "127.1.0.9"]
    example = ImageMap().lookup("ghcr.io/mcp-operator/example-server:v1")
    assert example is not None
    assert build_argv(example, None, ["--stateless"], values) == [
        sys.executable,
        "-m",
        "mcp_example_server",
        "--stateless",
        "--host",
        "127.1.0.9",
    ]


def test_map_file_rules_come_first(tmp_path: Path) -> None:
    path = tmp_path / "map.yaml"
    path.write_text(
        "images:\n  - image: 'redis:6*'\n    command: [valkey-server]\n    env: {A: b}\n"
    )
    images = ImageMap.load(path)
    rule = images.lookup("redis:6.2")
    assert rule is not None and rule.command == ("valkey-server",) and rule.env == {"A": "b"}
    assert images.lookup("redis:7") is not None and images.lookup("redis:7").command == (
        "redis-server",
    )  # type: ignore[union-attr]
    with pytest.raises(ValueError):
        parse_rules({"images": [{"image": "x"}]})


def test_rule_without_tag_matches_any_tag() -> None:
    assert ImageRule("ghcr.io/a/b", ("x",)).matches("ghcr.io/a/b:1.2")


# -- IP allocation -------------------------------------------------------------------------
def test_ip_allocation_is_unique_round_robin_and_skips_busy() -> None:
    alloc = IpAllocator("127.9.0.0/16", busy=lambda: {"127.9.0.2"})
    first = [alloc.allocate() for _ in range(3)]
    assert first == ["127.9.0.1", "127.9.0.3", "127.9.0.4"]
    alloc.release("127.9.0.1")
    assert alloc.allocate() == "127.9.0.5"  # a freed address is not reused at once
    assert alloc.reserve("127.9.0.1") and not alloc.reserve("127.9.0.3")
    assert not alloc.reserve("10.0.0.1") and not alloc.reserve("127.9.0.2")  # foreign, busy
    assert alloc.reserve("127.200.0.1")  # outside the CIDR but loopback and free: kept


def test_pod_cidrs_come_from_the_one_locally_routed_dev_range() -> None:
    dev = ipaddress.IPv4Network(DEV_POD_RANGE)
    for _ in range(50):
        cidr = ipaddress.IPv4Network(random_pod_cidr())
        assert cidr.prefixlen == 22 and cidr.subnet_of(dev) and not cidr.is_loopback
        service = ipaddress.IPv4Network(default_service_cidr(str(cidr)))
        assert service.subnet_of(cidr)
        assert local_route_for(str(cidr)) == DEV_POD_RANGE  # one route serves every agent
    assert local_route_for(DEFAULT_POD_CIDR) == DEV_POD_RANGE
    assert local_route_for("192.168.77.0/24") == "192.168.77.0/24"


def test_a_range_the_host_uses_is_never_made_local(monkeypatch: pytest.MonkeyPatch) -> None:
    """A local route hijacks its whole range: a nameserver inside it would go dark."""
    from mcp_devcluster.nodeagent import ipam

    monkeypatch.setattr(ipam, "is_local_address", lambda ip: False)
    monkeypatch.setattr(
        ipam, "_in_use_networks", lambda ip_cmd: [ipaddress.IPv4Network("10.244.9.53/32")]
    )
    ran: list[object] = []
    monkeypatch.setattr(ipam.subprocess, "run", lambda *a, **k: ran.append(a))
    with pytest.raises(ipam.LocalRangeError, match=r"10\.244\.9\.53/32"):
        ensure_local_range("10.244.4.0/22")
    assert ran == []  # no route added


def test_loopback_pod_cidr_needs_no_route() -> None:
    ensure_local_range("127.9.0.0/16")  # no `ip` call, no error, even unprivileged
    assert is_local_address("127.9.0.1")
    assert not is_local_address("192.0.2.254")  # TEST-NET-1: never local


def test_ip_allocation_exhausts_small_cidr() -> None:
    alloc = IpAllocator("127.9.9.0/30", busy=set)
    assert {alloc.allocate(), alloc.allocate()} == {"127.9.9.1", "127.9.9.2"}
    with pytest.raises(RuntimeError):
        alloc.allocate()


def test_listening_addresses_sees_a_listener() -> None:
    with socket.socket() as sock:
        sock.bind(("127.8.7.6", 0))
        sock.listen()
        assert "127.8.7.6" in listening_addresses()


# -- probes --------------------------------------------------------------------------------
class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        code = 200 if self.path == "/ok" else 302 if self.path == "/moved" else 500
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.8.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def _ctx(port: int = 0, env: Mapping[str, str] | None = None) -> ProbeContext:
    return ProbeContext(pod_ip="127.8.0.1", ports={"http": port}, env=env or {}, cwd="/")


def test_http_probe_status_ranges_and_named_port(http_server: int) -> None:
    assert run_probe({"httpGet": {"path": "/ok", "port": "http"}}, _ctx(http_server))[0]
    assert run_probe({"httpGet": {"path": "/moved", "port": http_server}}, _ctx())[0]
    ok, message = run_probe({"httpGet": {"path": "/bad", "port": http_server}}, _ctx())
    assert not ok and "500" in message


def test_tcp_probe_open_and_closed(http_server: int) -> None:
    assert run_probe({"tcpSocket": {"port": http_server}}, _ctx())[0]
    with socket.socket() as sock:
        sock.bind(("127.8.0.1", 0))
        free = sock.getsockname()[1]
    assert not run_probe({"tcpSocket": {"port": free}}, _ctx())[0]


def test_exec_probe_exit_status_and_env_expansion() -> None:
    ok = {"exec": {"command": [sys.executable, "-c", "import sys; sys.exit('$(X)' != 'y')"]}}
    assert run_probe(ok, _ctx(env={"X": "y"}))[0]
    ok_, message = run_probe(
        {"exec": {"command": [sys.executable, "-c", "raise SystemExit(3)"]}}, _ctx()
    )
    assert not ok_ and "exit 3" in message


def test_unsupported_probe_fails() -> None:
    assert not run_probe({"grpc": {"port": 1}}, _ctx())[0]


def test_probe_tracker_thresholds_and_initial_delay() -> None:
    probe = {
        "periodSeconds": 2,
        "initialDelaySeconds": 5,
        "successThreshold": 2,
        "failureThreshold": 2,
    }
    readiness = ProbeTracker(probe, started_at=100.0, initial=False)
    assert not readiness.due(104.9) and readiness.due(105.0)
    assert not readiness.record(True, "", 105.0) and not readiness.result
    assert readiness.record(True, "", 107.0) and readiness.result
    assert readiness.next_at == 109.0
    assert not readiness.record(False, "x", 109.0) and readiness.result
    assert readiness.record(False, "x", 111.0) and not readiness.result
    liveness = ProbeTracker({"failureThreshold": 1}, started_at=0.0, initial=True)
    assert liveness.record(False, "dead", 0.0) and not liveness.result and liveness.failed_out()


def test_backoff_policy() -> None:
    policy = BackoffPolicy(base=10, cap=60)
    assert [policy.delay(n) for n in (1, 2, 3, 4, 5)] == [0, 10, 20, 40, 60]


# -- volumes -------------------------------------------------------------------------------
def test_atomic_write_publishes_through_data_symlink(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert atomic_write(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    assert (target / "a").read_text() == "1" and (target / "dir" / "b").read_text() == "2"
    assert (target / "a").is_symlink() and (target / "..data").is_symlink()
    assert not atomic_write(target, {"a": (b"1", 0o644), "dir/b": (b"2", 0o600)})
    old = (target / "..data").resolve()
    assert atomic_write(target, {"a": (b"3", 0o644)})
    assert (target / "a").read_text() == "3" and not (target / "dir").exists() and not old.exists()


def test_pod_volumes_secret_items_config_map_and_empty_dir(tmp_path: Path) -> None:
    volumes = [
        {
            "name": "sec",
            "secret": {"secretName": "s", "items": [{"key": "token", "path": "t/token"}]},
        },
        {"name": "cfg", "configMap": {"name": "cm"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "opt", "secret": {"secretName": "missing", "optional": True}},
    ]
    pv = PodVolumes(tmp_path, volumes)
    sources = FakeSources()
    assert sorted(pv.sync(POD, sources)) == ["cfg", "opt", "sec"]
    assert (pv.dirs["sec"] / "t" / "token").read_text() == "t0p"
    assert (pv.dirs["cfg"] / "a.conf").read_text() == "x=1" and pv.dirs["scratch"].is_dir()
    sources.config_maps["ns/cm"]["a.conf"] = "x=2"
    assert pv.sync(POD, sources) == ["cfg"]
    assert (pv.dirs["cfg"] / "a.conf").read_text() == "x=2"
    assert pv.references() == {("secret", "s"), ("configmap", "cm"), ("secret", "missing")}
    mounts = json.loads(
        mounts_env(
            [
                {"name": "sec", "mountPath": "/etc/s"},
                {"name": "cfg", "mountPath": "/etc/a.conf", "subPath": "a.conf"},
            ],
            pv.dirs,
        )
    )
    assert mounts == {"/etc/s": str(pv.dirs["sec"]), "/etc/a.conf": str(pv.dirs["cfg"] / "a.conf")}


def test_pod_volumes_missing_required_secret_blocks(tmp_path: Path) -> None:
    pv = PodVolumes(tmp_path, [{"name": "v", "secret": {"secretName": "nope"}}])
    with pytest.raises(ConfigError):
        pv.sync(POD, FakeSources())


def test_secret_decoding_round_trip() -> None:
    from mcp_devcluster.nodeagent.envvars import decode_secret

    assert decode_secret(
        {"data": {"k": base64.b64encode(b"v").decode()}, "stringData": {"s": "t"}}
    ) == {
        "k": "v",
        "s": "t",
    }


# -- pod status ----------------------------------------------------------------------------
def _runner(ready: bool) -> ContainerRunner:
    runner = ContainerRunner({"name": "c", "image": "i"}, "p", lambda: None, BackoffPolicy())
    if ready:
        runner.proc = object()  # type: ignore[assignment]
    return runner


def _conds(pod: dict[str, Any], ready: bool) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in podstatus.conditions(pod, [_runner(ready)], True)}


def test_ready_requires_containers_and_every_gate() -> None:
    gated = {**POD, "spec": {"readinessGates": [{"conditionType": "x/healthy"}]}}
    conds = _conds(gated, ready=True)
    assert conds["ContainersReady"]["status"] == "True"
    assert (
        conds["Ready"]["status"] == "False" and conds["Ready"]["reason"] == "ReadinessGatesNotReady"
    )
    gated["status"] = {"conditions": [{"type": "x/healthy", "status": "False"}]}
    assert _conds(gated, ready=True)["Ready"]["status"] == "False"
    gated["status"] = {"conditions": [{"type": "x/healthy", "status": "True"}]}
    ready = _conds(gated, ready=True)["Ready"]
    assert ready["status"] == "True" and ready["reason"] is None  # null clears a stale reason
    assert _conds(gated, ready=False)["Ready"]["reason"] == "ContainersNotReady"


def test_only_owned_conditions_are_written() -> None:
    gated = {**POD, "spec": {"readinessGates": [{"conditionType": "x/healthy"}]}}
    types = [c["type"] for c in podstatus.conditions(gated, [_runner(True)], True)]
    assert types == list(podstatus.OWNED_CONDITIONS)


def test_transition_time_changes_only_with_status() -> None:
    clock = podstatus.TransitionClock(
        [{"type": "Ready", "status": "True", "lastTransitionTime": "T0"}]
    )
    assert clock.stamp([{"type": "Ready", "status": "True"}])[0]["lastTransitionTime"] == "T0"
    assert clock.stamp([{"type": "Ready", "status": "False"}])[0]["lastTransitionTime"] != "T0"


def test_phase() -> None:
    never = _runner(False)
    assert podstatus.phase([never], True) == "Pending"
    assert podstatus.phase([_runner(True)], True) == "Running"
    done = _runner(False)
    done.done, done.terminated = True, {"exitCode": 0}
    assert podstatus.phase([done], True) == "Succeeded"
    done.terminated = {"exitCode": 1}
    assert podstatus.phase([done], True) == "Failed"


def test_node_specs_spread_nodes_over_zones_round_robin() -> None:
    from mcp_devcluster.nodeagent.agent import NodeSpec, node_specs

    assert node_specs("n", 3, 2) == [
        NodeSpec("n", "zone-a"),
        NodeSpec("n-2", "zone-b"),
        NodeSpec("n-3", "zone-a"),
    ]
    assert node_specs("n", 1, 1) == [NodeSpec("n", "zone-a")]
    for count, zones in ((0, 1), (2, 3), (3, 0)):
        with pytest.raises(ValueError):
            node_specs("n", count, zones)


def test_node_labels_carry_topology_only_with_a_zone() -> None:
    from mcp_devcluster.nodeagent.node import node_labels

    zoned = node_labels("n", "zone-b")
    assert zoned["topology.kubernetes.io/zone"] == "zone-b"
    assert zoned["topology.kubernetes.io/region"] == "local"
    assert zoned["kubernetes.io/hostname"] == "n"
    assert "topology.kubernetes.io/zone" not in node_labels("n")


def test_redis_config_paths_map_to_the_mounted_rendered_files(tmp_path: Path) -> None:
    """The agent runs redis-server on the rendered files as mounted: the config path and the
    ACL file path are mapped to the volume's host directory; nothing else is changed."""
    from mcp_devcluster.nodeagent.images import map_config_paths

    conf_dir = tmp_path / "config"
    conf_dir.mkdir()
    (conf_dir / "redis.conf").write_text("maxmemory 1048576\naclfile /etc/redis/users.acl\n")
    rule = ImageMap().lookup("redis:7.4.2")
    assert rule is not None
    argv = build_argv(rule, ["redis-server"], ["/etc/redis/redis.conf"], {"pod_ip": "10.244.0.5"})
    mapped = map_config_paths(argv, rule, {"/etc/redis": str(conf_dir)})
    assert mapped == [
        "redis-server",
        f"{conf_dir}/redis.conf",
        "--bind",
        "10.244.0.5",
        "--protected-mode",
        "no",
        "--aclfile",
        f"{conf_dir}/users.acl",
    ]
    example = ImageMap().lookup("ghcr.io/mcp-operator/example-server:1")
    assert example is not None
    assert map_config_paths(["x", "/etc/redis/redis.conf"], example, {"/etc/redis": "/h"}) == [
        "x",
        "/etc/redis/redis.conf",
    ]


def test_projected_kube_api_access_volume_gets_a_minted_token() -> None:
    """What a current API server's admission puts on every pod with automount on."""
    from mcp_devcluster.nodeagent.volumes import volume_files

    pod = {"metadata": {"namespace": "ns", "name": "p"}, "spec": {"serviceAccountName": "reader"}}
    volume = {
        "name": "kube-api-access-x",
        "projected": {
            "defaultMode": 0o644,
            "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "cm", "items": [{"key": "mode", "path": "ca.crt"}]}},
            ],
        },
    }
    files = volume_files(volume, pod, FakeSources())
    assert files == {
        "token": (b"token-of-reader-None-3607", 0o644),
        "ca.crt": (b"dev", 0o644),
    }
