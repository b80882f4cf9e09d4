"""The node agent's per-container series (nodeagent/metrics): what MCPServerMemoryHigh reads
in the harness, in the real exporters' names and labels."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from mcp_devcluster.nodeagent.metrics import (
    ContainerSample,
    exposition,
    group_rss_bytes,
    quantity_bytes,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [("256Mi", 256 * 2**20), ("1Gi", 2**30), ("1G", 10**9), ("1048576", 2**20), ("1.5Ki", 1536)],
)
def test_memory_quantities(text: str, value: int) -> None:
    assert quantity_bytes(text) == value


def test_not_a_quantity() -> None:
    assert quantity_bytes("lots") is None


def test_exposition_names_and_labels() -> None:
    samples = [
        ContainerSample("shop", "weather-primary-a-b", "mcp", "n1", 42, "256Mi"),
        ContainerSample("shop", "weather-primary-a-b", "side", "n1", None, None),  # not running
    ]
    text = exposition(samples, rss=lambda pid: pid * 1000)
    assert (
        'container_memory_working_set_bytes{namespace="shop",pod="weather-primary-a-b",'
        'container="mcp"} 42000'
    ) in text
    assert (
        'kube_pod_container_resource_limits{namespace="shop",pod="weather-primary-a-b",'
        'container="mcp",resource="memory",unit="byte",node="n1"} 268435456'
    ) in text
    assert 'container="side"' not in text  # no process, no limit: no series


def test_group_rss_counts_every_process_of_the_group() -> None:
    """A child in its own session (as the agent starts containers) holding ~64 MiB."""
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; b = bytearray(64 * 2**20); time.sleep(30)"],
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 10
        while group_rss_bytes(child.pid) < 64 * 2**20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert 64 * 2**20 <= group_rss_bytes(child.pid) < 256 * 2**20
        assert group_rss_bytes(2**22 + 7) == 0  # no such group
    finally:
        child.kill()
        child.wait()
