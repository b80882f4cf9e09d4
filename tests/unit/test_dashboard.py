"""The Grafana fleet dashboard (charts/mcp-operator/files/dashboards): a dashboard Grafana
imports, with panels on what an on-call person asks, reading only series that exist.
(That every query runs without error on a real Prometheus: tests/e2e/test_monitoring.py.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.unit.promql import metric_names, unknown

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "mcp-operator" / "files" / "dashboards" / "mcp-operator-fleet.json"


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[tuple[str, str]]:
    """(panel title, expr) of every panel target."""
    return [(p["title"], t["expr"]) for p in dashboard()["panels"] for t in p["targets"]]


def test_structure_grafana_imports() -> None:
    d = dashboard()
    assert d["uid"] == "mcp-operator-fleet" and d["title"]
    assert isinstance(d["schemaVersion"], int)
    ids = [p["id"] for p in d["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    variables = {v["name"] for v in d["templating"]["list"]}
    assert variables == {"datasource", "namespace", "server"}
    for panel in d["panels"]:
        assert panel["title"] and panel["description"], panel["id"]
        assert panel["type"] in {"stat", "timeseries", "state-timeline", "piechart"}
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24 and grid["h"] > 0
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs))


def test_panels_do_not_overlap() -> None:
    cells: set[tuple[int, int]] = set()
    for panel in dashboard()["panels"]:
        g = panel["gridPos"]
        mine = {
            (x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine


def test_every_query_reads_only_existing_metrics() -> None:
    for title, expr in queries():
        assert metric_names(expr), (title, expr)
        assert not unknown(expr), (title, unknown(expr))
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            assert "mcp_operator_tier_healthy" in variable["definition"]


def test_per_server_panels_follow_the_variables() -> None:
    for title, expr in queries():
        if "namespace" in expr or "server" in expr:
            if 'namespace=~"$namespace"' not in expr:
                continue
            assert 'server=~"$server"' in expr, title


def test_the_fleet_questions_have_panels() -> None:
    """Servers by state, tier health, probe latency, failovers, key age, cache."""
    used = set().union(*(metric_names(e) for _, e in queries()))
    for metric in (
        "mcp_operator_condition",
        "mcp_operator_tier_healthy",
        "mcp_operator_active_tier",
        "mcp_operator_probe_duration_seconds_bucket",
        "mcp_operator_probes_total",
        "mcp_operator_failovers_total",
        "mcp_operator_signing_key_age_seconds",
        "mcp_operator_cache_ready",
        "mcp_operator_reconcile_errors_total",
    ):
        assert metric in used, f"no panel shows {metric}"
