"""The metric names a PromQL expression reads, and where each may come from.

Not a PromQL parser: label matchers, strings, grouping clauses, ranges and numbers are
removed, then every remaining identifier that is not a function call or a keyword is a
metric name. Enough for the operator's own rules and panels (a test feeds it known
expressions to keep it honest).
"""

from __future__ import annotations

import re

from prometheus_client import REGISTRY

import mcp_operator.metrics  # noqa: F401  (registers the operator's metrics)

KEYWORDS = {
    "and",
    "or",
    "unless",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "offset",
    "inf",
    "nan",
}
# Series of standard exporters the alerts and panels read (not the operator's registry).
ALLOWED_FOREIGN = {
    # cAdvisor (kubelet /metrics/cadvisor)
    "container_memory_working_set_bytes",
    # kube-state-metrics
    "kube_pod_container_resource_limits",
    # Prometheus itself: the scrape's health of a target
    "up",
}

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGE = re.compile(r"\[[^\]]*\]")
_IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names ``expr`` selects."""
    text = _STRING.sub('""', expr)
    text = re.sub(r"\$\{?[A-Za-z_][A-Za-z0-9_]*\}?", "x", text)  # Grafana $variables
    text = _MATCHERS.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    text = _RANGE.sub(" ", text)
    names = set()
    for match in _IDENT.finditer(text):
        word = match.group(0)
        rest = text[match.end() :].lstrip()
        if word.lower() in KEYWORDS or rest.startswith("("):
            continue
        if re.fullmatch(r"[0-9.eE+-]+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def registry_names() -> set[str]:
    """Every sample name the operator's registry can expose (``_bucket``, ``_total`` ...)."""
    names: set[str] = set()
    for collector in list(REGISTRY._collector_to_names):
        names.update(REGISTRY._collector_to_names[collector])
    for metric in REGISTRY.collect():
        names.add(metric.name)
        if metric.type == "histogram":
            names.update(f"{metric.name}{s}" for s in ("_bucket", "_count", "_sum"))
        if metric.type == "counter":
            names.add(f"{metric.name}_total")
    return names


def unknown(expr: str) -> set[str]:
    """Names ``expr`` reads that neither the operator nor an allowed exporter exposes."""
    return metric_names(expr) - registry_names() - ALLOWED_FOREIGN
