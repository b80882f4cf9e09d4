"""The per-server PrometheusRule as a user meets it: which alerts exist for which server,
what they carry, and that every series they read is really exported somewhere."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.render import alerts
from mcp_operator.render.context import CURRENT_API_VERSIONS, Capabilities, RenderContext
from tests.unit.promql import metric_names, unknown

ROOT = Path(__file__).resolve().parents[2]
WITH_MONITORING = RenderContext(
    capabilities=Capabilities(CURRENT_API_VERSIONS | {alerts.MONITORING_API}), owner_uid="u-1"
)


def server(spec: dict[str, Any] | None = None, name: str = "weather") -> Any:
    return parse_server(
        {
            "apiVersion": "mcp-operator.dev/v1alpha1",
            "kind": "MCPServer",
            "metadata": {"name": name, "namespace": "shop"},
            "spec": {"image": "example/weather:1", **(spec or {})},
        }
    )


EVERYTHING = {"auth": {"enabled": True}, "cache": {"enabled": True}}


def names(spec: dict[str, Any] | None = None) -> list[str]:
    return [r["alert"] for r in alerts.rules(server(spec))]


def test_all_ten_alerts_for_a_server_using_every_feature() -> None:
    assert names(EVERYTHING) == list(alerts.ALERT_NAMES)
    assert len(alerts.ALERT_NAMES) == 10


def test_alerts_of_unused_features_are_left_out() -> None:
    default = names()
    assert "MCPServerSigningKeyRotationOverdue" not in default  # no spec.auth
    assert "MCPServerCacheDown" not in default  # no spec.cache
    single = names({"backup": {"enabled": False}})
    for name in ("MCPServerFailedOver", "MCPServerFailoverFlapping", "MCPServerBackupUnavailable"):
        assert name not in single
    cold = names({"backup": {"standby": "cold"}})
    assert "MCPServerBackupUnavailable" not in cold and "MCPServerFailedOver" in cold


def test_every_alert_carries_severity_summary_description_and_a_runbook_anchor() -> None:
    runbooks = (ROOT / "docs" / "runbooks.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9-]", "", h.strip().lower().replace(" ", "-"))
        for h in re.findall(r"^#+ (.*)$", runbooks, re.M)
    }
    for rule in alerts.rules(server(EVERYTHING)):
        assert rule["labels"]["severity"] in ("critical", "warning", "info")
        notes = rule["annotations"]
        assert notes["summary"] and notes["description"]
        url, _, anchor = notes["runbook_url"].partition("#")
        assert url.endswith("docs/runbooks.md")
        assert anchor in anchors, f"docs/runbooks.md has no section {rule['alert']}"


def test_spec_sets_for_severity_thresholds_and_switches_alerts_off() -> None:
    spec = {
        **EVERYTHING,
        "monitoring": {
            "prometheusRule": {
                "runbookBaseURL": "https://wiki.example.com/mcp",
                "alerts": {
                    "down": {"for": "1.5m", "severity": "info"},
                    "failedOver": {"enabled": False},
                    "probeLatencyHigh": {"seconds": 2},
                    "memoryHigh": {"ratio": 0.75},
                    "failoverFlapping": {"switches": 6, "window": "2h"},
                    "signingKeyRotationOverdue": {"grace": "30m"},
                },
            }
        },
    }
    rules = {r["alert"]: r for r in alerts.rules(server(spec))}
    assert "MCPServerFailedOver" not in rules
    assert rules["MCPServerDown"]["for"] == "1m30s"
    assert rules["MCPServerDown"]["labels"] == {"severity": "info"}
    assert rules["MCPServerDown"]["annotations"]["runbook_url"] == (
        "https://wiki.example.com/mcp#mcpserverdown"
    )
    assert rules["MCPServerProbeLatencyHigh"]["expr"].endswith("> 2")
    assert rules["MCPServerMemoryHigh"]["expr"].endswith("> 0.75")
    assert "[2h])) >= 6" in rules["MCPServerFailoverFlapping"]["expr"]
    assert rules["MCPServerSigningKeyRotationOverdue"]["expr"].endswith("> 1800")
    assert rules["MCPServerFailoverFlapping"]["for"] == "0s"


def test_bad_alert_settings_are_refused_with_their_paths() -> None:
    spec = {
        "monitoring": {
            "prometheusRule": {
                "labels": {"bad key!": "x"},
                "alerts": {
                    "down": {"for": "soon", "severity": "page"},
                    "memoryHigh": {"ratio": 1.5},
                    "failoverFlapping": {"switches": 1},
                    "nope": {},
                },
            }
        }
    }
    with pytest.raises(InvalidSpec) as caught:
        server(spec)
    paths = {p.path for p in caught.value.problems}
    base = "spec.monitoring.prometheusRule"
    for path in (
        f"{base}.alerts.down.for",
        f"{base}.alerts.down.severity",
        f"{base}.alerts.memoryHigh.ratio",
        f"{base}.alerts.failoverFlapping.switches",
        f"{base}.alerts.nope",
    ):
        assert path in paths, paths
    assert any(p.startswith(f"{base}.labels") for p in paths), paths


def test_every_expression_is_scoped_to_its_server() -> None:
    for rule in alerts.rules(server(EVERYTHING)):
        expr = rule["expr"]
        assert 'namespace="shop"' in expr
        assert 'server="weather"' in expr or 'pod=~"weather-(primary|backup)-' in expr


def test_every_metric_a_rule_reads_exists() -> None:
    for rule in alerts.rules(server(EVERYTHING)):
        assert metric_names(rule["expr"]), rule["expr"]
        assert not unknown(rule["expr"]), (rule["alert"], unknown(rule["expr"]))


def test_the_metric_name_check_can_fail() -> None:
    assert unknown('sum by (namespace) (rate(mcp_operator_nope_total{a="b"}[5m])) > 1') == {
        "mcp_operator_nope_total"
    }
    assert metric_names(
        'histogram_quantile(0.95, sum by (le) (rate(x_bucket{le="+Inf"}[5m]))) / on (pod) y'
    ) == {"x_bucket", "y"}


def test_the_prometheus_rule_object() -> None:
    spec = {"monitoring": {"prometheusRule": {"labels": {"release": "prom"}}}}
    rule = alerts.prometheus_rule(server(spec), WITH_MONITORING)
    assert rule is not None
    assert (rule["apiVersion"], rule["kind"]) == ("monitoring.coreos.com/v1", "PrometheusRule")
    assert rule["metadata"]["name"] == "weather"
    assert rule["metadata"]["namespace"] == "shop"
    assert rule["metadata"]["labels"]["release"] == "prom"
    assert rule["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "mcp-operator"
    assert rule["metadata"]["ownerReferences"][0]["uid"] == "u-1"
    assert rule["spec"]["groups"][0]["name"] == "mcp-operator.shop.weather"


def test_no_rule_without_the_api_or_when_disabled() -> None:
    assert alerts.prometheus_rule(server(), RenderContext()) is None
    off = {"monitoring": {"prometheusRule": {"enabled": False}}}
    assert alerts.prometheus_rule(server(off), WITH_MONITORING) is None


def test_prom_duration() -> None:
    assert alerts.prom_duration("90s") == "1m30s"
    assert alerts.prom_duration("1h") == "1h"
    assert alerts.prom_duration("0.5s") == "500ms"
    assert alerts.prom_duration("0s") == "0s"
