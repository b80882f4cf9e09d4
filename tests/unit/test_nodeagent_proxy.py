"""Unit tests of the kube-proxy stand-in's pure parts: which Services and ports are proxied,
which endpoints are routable, the address range and the round-robin choice."""

from __future__ import annotations

from typing import Any

import pytest

from mcp_devcluster.nodeagent.ipam import IpAllocator
from mcp_devcluster.nodeagent.proxy import (
    Backend,
    RoundRobin,
    ServicePort,
    annotation_value,
    default_service_cidr,
    parse_proxy_address,
    proxied_ports,
    ready_backends,
    slice_owner,
)


def service(name: str = "weather", **spec: Any) -> dict[str, Any]:
    ports = spec.pop("ports", [{"name": "mcp", "port": 8080, "targetPort": "mcp"}])
    return {"metadata": {"name": name, "namespace": "ns"}, "spec": {"ports": ports, **spec}}


def endpoint_slice(
    port: int, *endpoints: tuple[str, bool | None], name: str = "mcp", svc: str = "weather"
) -> dict[str, Any]:
    def ep(ip: str, ready: bool | None) -> dict[str, Any]:
        return {"addresses": [ip], "conditions": {} if ready is None else {"ready": ready}}

    return {
        "metadata": {"namespace": "ns", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": name, "port": port, "protocol": "TCP"}],
        "endpoints": [ep(ip, ready) for ip, ready in endpoints],
    }


def test_clusterip_tcp_ports_are_proxied_others_are_not() -> None:
    assert proxied_ports(service()) == [ServicePort("mcp", 8080)]
    udp = service(ports=[{"name": "dns", "port": 53, "protocol": "UDP"}, {"port": 80}])
    assert proxied_ports(udp) == [ServicePort("", 80)]
    assert proxied_ports(service(clusterIP="None")) == []
    assert proxied_ports(service(type="ExternalName")) == []
    api_server = service() | {"metadata": {"name": "kubernetes", "namespace": "default"}}
    assert proxied_ports(api_server) == []


def test_only_ready_endpoints_of_the_named_port_are_backends() -> None:
    slices = [
        endpoint_slice(8080, ("127.1.0.3", True), ("127.1.0.2", False), ("127.1.0.4", None)),
        # a rollout to a new port: the new pods sit in their own slice with their own port
        endpoint_slice(9090, ("127.1.0.9", True)),
        endpoint_slice(7000, ("127.1.0.8", True), name="metrics"),
        endpoint_slice(8080, ("127.1.0.7", True), svc="other"),
    ]
    mine = [s for s in slices if slice_owner(s) == "ns/weather"]
    assert ready_backends(mine, "mcp") == [
        Backend("127.1.0.3", 8080),
        Backend("127.1.0.4", 8080),  # ready unset means ready (discovery/v1)
        Backend("127.1.0.9", 9090),
    ]
    assert ready_backends(mine, "metrics") == [Backend("127.1.0.8", 7000)]
    assert ready_backends([endpoint_slice(8080, ("127.1.0.2", False))], "mcp") == []


def test_duplicate_addresses_across_slices_count_once() -> None:
    slices = [endpoint_slice(8080, ("127.1.0.3", True)), endpoint_slice(8080, ("127.1.0.3", True))]
    assert ready_backends(slices, "mcp") == [Backend("127.1.0.3", 8080)]


def test_round_robin_rotates_and_an_empty_table_has_no_backend() -> None:
    rr = RoundRobin()
    table = [Backend("127.1.0.1", 1), Backend("127.1.0.2", 1)]
    assert {rr.pick(table), rr.pick(table)} == set(table)
    assert rr.pick([]) is None


def test_annotation_round_trips() -> None:
    ports = [ServicePort("mcp", 8080), ServicePort("metrics", 9090)]
    value = annotation_value("127.1.255.1", ports)
    assert value == "127.1.255.1:8080,127.1.255.1:9090"
    assert parse_proxy_address(value) == [("127.1.255.1", 8080), ("127.1.255.1", 9090)]


def test_service_range_is_carved_from_the_pod_cidr_and_pods_never_get_it() -> None:
    assert default_service_cidr("127.7.0.0/16") == "127.7.255.0/24"
    with pytest.raises(ValueError):
        default_service_cidr("127.7.0.0/25")
    pods = IpAllocator("127.7.0.0/16", busy=set, exclude="127.7.255.0/24")
    pods._next = 0xFF00 - 2  # jump near the end of the range: it wraps past the service /24
    got = [pods.allocate() for _ in range(4)]
    assert not any(ip.startswith("127.7.255.") for ip in got), got
