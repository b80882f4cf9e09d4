"""Monitoring end to end, on the real control plane and a real Prometheus (Debian's).

* Without the Prometheus Operator's PrometheusRule CRD a server says
  ``MonitoringReady=False`` (``PrometheusRuleCRDNotInstalled``) and the operator does not
  loop on errors; once the CRD is installed (the Prometheus Operator's own, checked in as
  tests/prometheus/monitoring.coreos.com_prometheusrules.yaml, so its schema judges the rule)
  the rule appears, without restarting the operator. Deleted, it comes back; disabled, it goes.
* Prometheus scrapes the operator's /metrics and loads the rule the operator made; a killed
  primary takes ``MCPServerFailedOver`` pending -> firing within ``for`` + the scrape
  interval, and failback resolves it. Every dashboard panel's query runs without error.
* ``MCPServerMemoryHigh`` on real measurements: the node agent exports each container's
  resident set and memory limit as cAdvisor's and kube-state-metrics' series
  (devcluster nodeagent/metrics); a server whose threshold its pod is above fires, one
  whose threshold its pod is below stays silent.

The session operator re-reads discovery every 2 s (tests/e2e/ops.py). The CRD is removed
again at the end of each test, so other tests see the cluster as before.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_devcluster.faults import kept_dead
from mcp_devcluster.prometheus import Prometheus
from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from tests.conftest import wait_established
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply, wait_condition
from tests.e2e.test_failover import start_healthy, tier_ips, wait_selector

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CRD_FILE = ROOT / "tests" / "prometheus" / "monitoring.coreos.com_prometheusrules.yaml"
CRD_NAME = "prometheusrules.monitoring.coreos.com"
DASHBOARD = ROOT / "charts" / "mcp-operator" / "files" / "dashboards" / "mcp-operator-fleet.json"
NAME = "weather"
FAILED_OVER_FOR_S = 4
MEMORY_FOR_S = 2
MEMORY_LIMIT = 256 * 2**20  # 256Mi
SCRAPE_S = 1.0


def install_crd(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "-f", str(CRD_FILE))
    wait_established(kubectl, CRD_NAME)


def remove_crd(kubectl: Kubectl) -> None:
    kubectl("delete", "crd", CRD_NAME, "--ignore-not-found", "--wait=true", timeout=60)


def the_rule(kubectl: Kubectl, ns: str, name: str = NAME) -> dict[str, Any] | None:
    result = kubectl("get", "prometheusrules", name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


@pytest.fixture
def op(operator: OperatorProcess) -> OperatorProcess:
    return operator


@pytest.fixture
def rule_crd(kubectl: Kubectl) -> Iterator[None]:
    install_crd(kubectl)
    try:
        yield
    finally:
        remove_crd(kubectl)


def test_rule_appears_once_the_crd_is_installed_without_restart(
    op: OperatorProcess, kubectl: Kubectl, unique_ns: str
) -> None:
    remove_crd(kubectl)
    log_before = op.log_path.read_text(errors="replace") if op.log_path.exists() else ""
    pid = op.proc.pid if op.proc else None
    manifest = server_manifest(
        NAME, unique_ns, monitoring={"prometheusRule": {"labels": {"release": "prom"}}}
    )
    apply(kubectl, manifest)
    obj = wait_condition(
        kubectl,
        unique_ns,
        NAME,
        "MonitoringReady",
        "False",
        timeout=60,
        reason="PrometheusRuleCRDNotInstalled",
    )
    assert "monitoring.coreos.com/v1" in (condition(obj, "MonitoringReady") or {})["message"]
    # The workloads are reconciled regardless.
    assert (condition(obj, "Reconciled") or {})["status"] == "True"
    time.sleep(5)  # a few discovery rounds without the API: no error loop
    log = op.log_path.read_text(errors="replace")[len(log_before) :]
    noise = [ln for ln in log.splitlines() if "PrometheusRule" in ln and "failed" in ln]
    assert not noise, noise
    errors = [
        ln
        for ln in op.metrics().splitlines()
        if ln.startswith("mcp_operator_reconcile_errors_total{") and unique_ns in ln
    ]
    assert not errors, errors

    try:
        install_crd(kubectl)
        rule = wait_for(
            lambda: the_rule(kubectl, unique_ns), timeout=30, what="PrometheusRule appears"
        )
        assert op.alive and (op.proc.pid if op.proc else None) == pid, "operator restarted"
        assert rule["metadata"]["labels"]["release"] == "prom"
        uid = get_json(kubectl, "mcpserver", NAME, "-n", unique_ns)["metadata"]["uid"]
        assert rule["metadata"]["ownerReferences"][0]["uid"] == uid
        alerts = [r["alert"] for r in rule["spec"]["groups"][0]["rules"]]
        assert "MCPServerDown" in alerts and "MCPServerFailedOver" in alerts
        obj = wait_condition(
            kubectl,
            unique_ns,
            NAME,
            "MonitoringReady",
            "True",
            timeout=30,
            reason="PrometheusRuleApplied",
        )
        assert f"{len(alerts)} alerts" in (condition(obj, "MonitoringReady") or {})["message"]

        # Deleted by hand: the watch sees it and the rule is re-created.
        first_uid = rule["metadata"]["uid"]
        kubectl("delete", "prometheusrule", NAME, "-n", unique_ns)
        wait_for(
            lambda: (
                (the_rule(kubectl, unique_ns) or {}).get("metadata", {}).get("uid")
                not in (None, first_uid)
            ),
            timeout=30,
            what="PrometheusRule re-created",
        )
        # Switched off: pruned.
        manifest["spec"]["monitoring"]["prometheusRule"]["enabled"] = False
        apply(kubectl, manifest)
        wait_for(lambda: the_rule(kubectl, unique_ns) is None, timeout=30, what="rule pruned")
        wait_condition(
            kubectl,
            unique_ns,
            NAME,
            "MonitoringReady",
            "True",
            timeout=30,
            reason="PrometheusRuleDisabled",
        )
    finally:
        remove_crd(kubectl)


def _panel_query(expr: str, ns: str) -> str:
    return (
        expr.replace("$namespace", ns)
        .replace("$server", ".*")
        .replace("$__rate_interval", "1m")
        .replace("$__range", "5m")
    )


def test_real_prometheus_fires_failed_over_and_runs_every_panel(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    unique_ns: str,
    rule_crd: None,
    tmp_path: Path,
) -> None:
    monitoring = {"prometheusRule": {"alerts": {"failedOver": {"for": f"{FAILED_OVER_FOR_S}s"}}}}
    primary, _ = start_healthy(kubectl, unique_ns, monitoring=monitoring)
    rule = wait_for(lambda: the_rule(kubectl, unique_ns), timeout=30, what="PrometheusRule")
    (failed_over,) = [
        r for r in rule["spec"]["groups"][0]["rules"] if r["alert"] == "MCPServerFailedOver"
    ]
    assert failed_over["for"] == f"{FAILED_OVER_FOR_S}s"
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))  # what the Prometheus Operator loads

    prom = Prometheus(
        tmp_path / "prometheus",
        targets=[f"127.0.0.1:{op.metrics_port}"],
        rule_files=[rules_file],
        interval=SCRAPE_S,
    ).start()
    try:
        wait_for(
            lambda: "MCPServerFailedOver" in prom.rules_loaded(), timeout=30, what="rules loaded"
        )
        series = f'mcp_operator_active_tier{{namespace="{unique_ns}",server="{NAME}"}}'
        wait_for(lambda: len(prom.query(series)) == 2, timeout=30, what="active_tier scraped")
        assert prom.alerts("MCPServerFailedOver") == []

        seen: dict[str, float] = {}
        with kept_dead(node_agent.pid, primary):
            wait_selector(kubectl, unique_ns, "backup", timeout=30)
            deadline = time.monotonic() + FAILED_OVER_FOR_S + 30
            while "firing" not in seen and time.monotonic() < deadline:
                for alert in prom.alerts("MCPServerFailedOver"):
                    seen.setdefault(alert["state"], time.monotonic())
                time.sleep(0.1)
            assert "pending" in seen, f"never pending: {seen}"
            assert "firing" in seen, f"never firing: {seen}\n{prom.log_tail()}"
            took = seen["firing"] - seen["pending"]
            # for + one scrape + one evaluation (both SCRAPE_S) + polling slack.
            assert took <= FAILED_OVER_FOR_S + 2 * SCRAPE_S + 1.0, f"pending->firing {took:.1f}s"
            (alert,) = prom.alerts("MCPServerFailedOver")
            assert alert["labels"]["namespace"] == unique_ns
            assert alert["labels"]["server"] == NAME
            assert alert["labels"]["severity"] == "warning"
            assert alert["annotations"]["runbook_url"].endswith("#mcpserverfailedover")
        # The primary comes back; failback after the cooldown resolves the alert.
        wait_selector(kubectl, unique_ns, "primary", timeout=60)
        resolved_at = wait_for(
            lambda: time.monotonic() if not prom.alerts("MCPServerFailedOver") else None,
            timeout=20,
            what="MCPServerFailedOver resolved after failback",
        )
        print(
            f"\nMCPServerFailedOver: pending->firing {took:.1f}s (for {FAILED_OVER_FOR_S}s, "
            f"scrape {SCRAPE_S:.0f}s); resolved {resolved_at - seen['firing']:.1f}s after firing"
        )
        assert tier_ips(kubectl, unique_ns, "primary")

        # Every dashboard panel's query, against the same Prometheus.
        dashboard = json.loads(DASHBOARD.read_text())
        empty = []
        for panel in dashboard["panels"]:
            for target in panel["targets"]:
                result = prom.query(_panel_query(target["expr"], unique_ns))  # raises on error
                if not result:
                    empty.append(panel["title"])
        for variable in dashboard["templating"]["list"]:
            if variable["type"] == "query":
                prom.api("series", **{"match[]": "mcp_operator_tier_healthy"})
        # Panels on what this server has must show data (auth and cache are off here).
        for title in ("Tier health", "Active tier", "Probe latency p95", "Probe outcomes"):
            assert title not in empty, f"panel {title!r} has no data"
    finally:
        prom.stop()


def test_real_prometheus_fires_memory_high_from_the_node_agents_series(
    op: OperatorProcess,
    node_agent: NodeAgentProcess,
    kubectl: Kubectl,
    unique_ns: str,
    rule_crd: None,
    tmp_path: Path,
) -> None:
    """Two servers with the same 256Mi memory limit: ``hungry`` alerts at 5% of it (13 MiB:
    any running example server is above that), ``roomy`` at 95% (243 MiB: far above one).
    The series are the node agent's measurements of the real processes, scraped like a
    kubelet's and kube-state-metrics'; the rules are the ones the operator applied."""
    resources = {"requests": {"memory": "64Mi"}, "limits": {"memory": "256Mi"}}
    files = []
    for name, ratio in (("hungry", 0.05), ("roomy", 0.95)):
        memory = {"memoryHigh": {"ratio": ratio, "for": f"{MEMORY_FOR_S}s"}}
        apply(
            kubectl,
            server_manifest(
                name,
                unique_ns,
                backup={"enabled": False},
                failover={"enabled": False},
                resources=resources,
                monitoring={"prometheusRule": {"alerts": memory}},
            ),
        )
        rule = wait_for(
            lambda n=name: the_rule(kubectl, unique_ns, n), timeout=30, what=f"{name}'s rule"
        )
        files.append(tmp_path / f"{name}.rules.yaml")
        files[-1].write_text(yaml.safe_dump(rule["spec"]))
    assert node_agent.metrics_port, "the session node agent exports no metrics"
    prom = Prometheus(
        tmp_path / "prometheus",
        targets=[f"127.0.0.1:{op.metrics_port}", f"127.0.0.1:{node_agent.metrics_port}"],
        rule_files=files,
        interval=SCRAPE_S,
    ).start()
    try:
        working = f'container_memory_working_set_bytes{{namespace="{unique_ns}",container="mcp"}}'

        def measured() -> dict[str, list[float]] | None:
            found: dict[str, list[float]] = {}
            for r in prom.query(working):  # by server: a rollout may show two pods of one
                found.setdefault(r["metric"]["pod"].split("-")[0], []).append(float(r["value"][1]))
            return found if {"hungry", "roomy"} <= set(found) else None

        rss = wait_for(measured, timeout=90, what="both servers' pods measured")
        limits = prom.query(
            f'kube_pod_container_resource_limits{{namespace="{unique_ns}",resource="memory"}}'
        )
        assert len(limits) >= 2 and {float(r["value"][1]) for r in limits} == {MEMORY_LIMIT}
        # The premise of each case, on the measurements themselves.
        assert min(rss["hungry"]) > 0.05 * MEMORY_LIMIT, rss
        assert max(rss["roomy"]) < 0.95 * MEMORY_LIMIT, rss

        seen: dict[str, float] = {}
        deadline = time.monotonic() + MEMORY_FOR_S + 30
        while "firing" not in seen and time.monotonic() < deadline:
            for alert in prom.alerts("MCPServerMemoryHigh"):
                assert alert["labels"]["pod"].startswith("hungry-"), alert  # never roomy's
                seen.setdefault(alert["state"], time.monotonic())
            time.sleep(0.1)
        assert "pending" in seen and "firing" in seen, f"{seen}\n{prom.log_tail()}"
        assert seen["firing"] - seen["pending"] >= MEMORY_FOR_S - SCRAPE_S
        # One alert per pod of hungry's (primary.replicas defaults to 2), each firing in time.
        hungry_pods = {
            r["metric"]["pod"]
            for r in prom.query(working)
            if r["metric"]["pod"].startswith("hungry-")
        }
        wait_for(
            lambda: (
                {
                    a["labels"]["pod"]
                    for a in prom.alerts("MCPServerMemoryHigh")
                    if a["state"] == "firing"
                }
                == hungry_pods
            ),
            timeout=MEMORY_FOR_S + 3 * SCRAPE_S,
            what=f"MCPServerMemoryHigh firing for every pod of hungry's: {hungry_pods}",
        )
        for alert in prom.alerts("MCPServerMemoryHigh"):
            assert alert["labels"]["namespace"] == unique_ns
            assert alert["labels"]["severity"] == "warning"
            assert alert["annotations"]["runbook_url"].endswith("#mcpservermemoryhigh")
        sets = ", ".join(f"{k} {max(v) / 2**20:.0f} MiB" for k, v in sorted(rss.items()))
        print(f"\nMCPServerMemoryHigh: working sets {sets} of 256 MiB; hungry (5%) fired")
    finally:
        prom.stop()
