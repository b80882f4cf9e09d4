"""The alerts, checked and unit-tested by Prometheus' own ``promtool`` (Debian ``prometheus``).

* ``promtool check rules`` on the ``.spec`` of every rendered PrometheusRule: the examples,
  the servers of tests/prometheus/servers.yaml, and every alert switched off in turn;
* ``promtool test rules`` on tests/prometheus/alerts.test.yaml: synthetic series, each alert
  firing at least once and silent at least once.

promtool is installed by hack/install-tools.sh (``make tools``); when it is missing these
tests FAIL, they are never skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from mcp_operator.api.models import MCPServer
from mcp_operator.api.validation import parse_server
from mcp_operator.render import alerts

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "tests" / "prometheus"
LABEL_TEMPLATE = re.compile(r"\{\{ \$labels\.([a-z_]+) \}\}")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("promtool not found: install Debian's prometheus (hack/install-tools.sh)")
    return found


def servers() -> list[MCPServer]:
    return [parse_server(doc) for doc in yaml.safe_load_all((PROM / "servers.yaml").read_text())]


def example_servers() -> list[MCPServer]:
    out = []
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == "MCPServer":
                try:
                    out.append(parse_server(doc))
                except Exception:  # examples/bad.yaml and friends are invalid on purpose
                    continue
    return out


def rule_file(server: MCPServer) -> str:
    return f"{server.metadata.namespace or 'default'}.{server.metadata.name}.rules.yaml"


def write_rules(server: MCPServer, directory: Path) -> Path:
    path = directory / rule_file(server)
    path.write_text(yaml.safe_dump(alerts.rule_spec(server), sort_keys=False))
    return path


def check(paths: list[Path]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", "rules", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_every_rendered_rule_spec_passes_promtool_check(tmp_path: Path) -> None:
    every = servers() + example_servers()
    assert len(every) > 5
    paths = []
    for i, server in enumerate(every):
        (tmp_path / str(i)).mkdir()
        paths.append(write_rules(server, tmp_path / str(i)))
    result = check(paths)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(paths)


def test_promtool_check_with_each_alert_disabled(tmp_path: Path) -> None:
    """Turning any one alert off leaves a valid rule file without that alert."""
    (weather,) = [s for s in servers() if s.metadata.name == "weather"]
    paths = []
    for name, field in alerts.FIELDS.items():
        body = weather.model_dump(mode="json", by_alias=True, exclude_none=True)
        body["spec"]["monitoring"]["prometheusRule"]["alerts"][_camel(field)]["enabled"] = False
        server = parse_server(body)
        assert name not in [r["alert"] for r in alerts.rules(server)]
        (tmp_path / name).mkdir()
        paths.append(write_rules(server, tmp_path / name))
    result = check(paths)
    assert result.returncode == 0, result.stdout + result.stderr


def _camel(snake: str) -> str:
    head, *rest = snake.split("_")
    return head + "".join(p.title() for p in rest)


def _expand(template: str, labels: dict[str, Any]) -> str:
    return LABEL_TEMPLATE.sub(lambda m: str(labels[m.group(1)]), template)


def _fill_annotations(tests: dict[str, Any], rules: dict[str, dict[str, Any]]) -> int:
    """Expected alerts without exp_annotations get the rule's, with $labels expanded; an
    annotation that uses anything else ($value) must be written out in the test file."""
    cases = 0
    for test in tests["tests"]:
        for case in test.get("alert_rule_test") or []:
            cases += 1
            for exp in case.get("exp_alerts") or []:
                if "exp_annotations" in exp:
                    continue
                labels = exp["exp_labels"]
                owner = f"{labels['namespace']}.{labels.get('server', '')}"
                annotations = rules[owner + "/" + case["alertname"]]["annotations"]
                filled = {k: _expand(v, labels) for k, v in annotations.items()}
                assert not any("{{" in v for v in filled.values()), (
                    f"{test['name']}: {case['alertname']} uses $value: spell out exp_annotations"
                )
                exp["exp_annotations"] = filled
    return cases


def test_promtool_unit_tests_fire_and_stay_silent(tmp_path: Path) -> None:
    rules: dict[str, dict[str, Any]] = {}
    for server in servers():
        write_rules(server, tmp_path)
        for rule in alerts.rules(server):
            rules[f"{server.metadata.namespace}.{server.metadata.name}/{rule['alert']}"] = rule
    tests = yaml.safe_load((PROM / "alerts.test.yaml").read_text())
    assert sorted(tests["rule_files"]) == sorted(rule_file(s) for s in servers())
    cases = _fill_annotations(tests, rules)
    assert cases >= 20
    (tmp_path / "alerts.test.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool(), "test", "rules", str(tmp_path / "alerts.test.yaml")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_a_firing_and_a_silent_case() -> None:
    tests = yaml.safe_load((PROM / "alerts.test.yaml").read_text())
    firing: set[str] = set()
    silent: set[str] = set()
    for test in tests["tests"]:
        for case in test.get("alert_rule_test") or []:
            (firing if case.get("exp_alerts") else silent).add(case["alertname"])
    assert firing == set(alerts.ALERT_NAMES)
    assert silent == set(alerts.ALERT_NAMES)
