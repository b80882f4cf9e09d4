"""Metric hygiene: a deleted server leaves no series behind."""

from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

from mcp_operator import metrics


def series_of(namespace: str, server: str) -> list[str]:
    out = []
    for family in REGISTRY.collect():
        for sample in family.samples:
            labels = sample.labels
            if labels.get("namespace") == namespace and labels.get("server") == server:
                out.append(f"{sample.name}{labels}")
    return out


def test_every_per_server_metric_is_forgotten() -> None:
    """Every metric labelled (namespace, server, ...) must be in PER_SERVER."""
    declared = [
        m
        for m in vars(metrics).values()
        if isinstance(m, MetricWrapperBase) and m._labelnames[:2] == ("namespace", "server")
    ]
    missing = [m._name for m in declared if m not in metrics.PER_SERVER]
    assert not missing, f"add to metrics.PER_SERVER so forget() removes them: {missing}"


def test_forget_removes_all_series_of_one_server_only() -> None:
    for server in ("gone", "kept"):
        for metric in metrics.PER_SERVER:
            extra = ["x"] * (len(metric._labelnames) - 2)
            child = metric.labels("ns", server, *extra)
            if hasattr(child, "inc"):
                child.inc()
            elif hasattr(child, "set"):
                child.set(1)
            else:
                child.observe(0.1)
    assert series_of("ns", "gone")
    metrics.forget("ns", "gone")
    assert series_of("ns", "gone") == []
    assert series_of("ns", "kept")
    metrics.forget("ns", "kept")
