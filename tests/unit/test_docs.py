"""The reference pages cannot fall behind the code.

* docs/api.md is generated from the models, docs/metrics.md from the metrics registry
  (``make docs``): drift tests;
* docs/conditions.md must list every condition type, every reason and every Event reason the
  operator's source can emit. The emitted names are read from the source with ``ast``: the
  CamelCase string constants passed as type/reason to ``Want(...)``, ``Outcome(...)`` and
  ``post_event(...)`` (following a reason held in a local variable to its assignment), so a
  new reason in any module fails here until the page lists it.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

from mcp_operator.api.reference import reference_markdown
from mcp_operator.metrics_reference import (
    LABELS,
    exposed_name,
    labels_of,
    metrics_markdown,
    operator_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
SOURCE = ROOT / "operator" / "mcp_operator"
CONDITIONS = ROOT / "docs" / "conditions.md"
CAMEL = re.compile(r"^[A-Z][A-Za-z0-9]+$")


def test_api_reference_is_generated_and_current() -> None:
    assert (ROOT / "docs" / "api.md").read_text() == reference_markdown(), "run `make docs`"


def test_metrics_reference_is_generated_and_current() -> None:
    assert (ROOT / "docs" / "metrics.md").read_text() == metrics_markdown(), "run `make docs`"


def test_every_metric_label_is_bounded_and_documented() -> None:
    """A new label needs its bounded value set in metrics_reference.LABELS (and so in the
    page); the reference lists every metric of mcp_operator.metrics."""
    used = {label for m in operator_metrics() for label in labels_of(m)}
    assert used <= set(LABELS), f"labels without a documented bound: {used - set(LABELS)}"
    assert len(operator_metrics()) >= 20
    page = (ROOT / "docs" / "metrics.md").read_text()
    for metric in operator_metrics():
        assert f"`{exposed_name(metric)}`" in page


def _constants(node: ast.AST) -> set[str]:
    return {
        n.value
        for n in ast.walk(node)
        if isinstance(n, ast.Constant) and isinstance(n.value, str) and CAMEL.match(n.value)
    }


def _assigned(function: ast.AST, name: str) -> set[str]:
    found: set[str] = set()
    for n in ast.walk(function):
        if isinstance(n, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == name for t in n.targets
        ):
            found |= _constants(n.value)
    return found


def _callee(call: ast.Call) -> str:
    func = call.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def emitted() -> dict[str, set[str]]:
    """{"types": ..., "reasons": ..., "events": ...} found in the operator's source."""
    out: dict[str, set[str]] = {"types": set(), "reasons": set(), "events": set()}
    for path in SOURCE.rglob("*.py"):
        tree = ast.parse(path.read_text())
        functions = [
            n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)
        ]
        for function in functions:
            for call in (n for n in ast.walk(function) if isinstance(n, ast.Call)):
                name, args = _callee(call), call.args
                if name == "Want" and len(args) >= 3:
                    out["types"] |= _constants(args[0])
                    out["reasons"] |= _constants(args[2])
                elif name == "Outcome" and args:
                    out["reasons"] |= _constants(args[0])
                elif name == "post_event" and len(args) >= 3:
                    reason = args[2]
                    out["events"] |= _constants(reason)
                    if isinstance(reason, ast.Name):
                        out["events"] |= _assigned(function, reason.id)
                elif name == "Event" and len(args) >= 2:  # health.round's Event(type, reason)
                    reason = args[1]
                    out["events"] |= _constants(reason)
                    base = reason.value if isinstance(reason, ast.Subscript) else reason
                    if isinstance(base, ast.Name):
                        out["events"] |= _assigned(function, base.id)
    return out


def test_the_scan_finds_what_it_should() -> None:
    """Guards the scanner itself: known emitters must be seen (else the test below is void)."""
    found = emitted()
    assert {"Ready", "Reconciled", "FailedOver", "Misconfigured"} <= found["types"]
    assert {"InvalidSpec", "NoReadyPods", "CircuitOpen", "Recovering"} <= found["reasons"]
    assert {"FailedOver", "FailedBack", "SwitchoverRejected"} <= found["events"]


def test_conditions_page_lists_every_type_reason_and_event() -> None:
    page = CONDITIONS.read_text()
    listed = set(re.findall(r"`([A-Z][A-Za-z0-9]+)`", page))
    found = emitted()
    for kind, names in found.items():
        missing = sorted(names - listed)
        assert not missing, f"docs/conditions.md lacks {kind}: {missing}"


def test_conditions_page_states_the_inverted_polarity() -> None:
    page = CONDITIONS.read_text()
    for kind in ("FailedOver", "Misconfigured"):
        assert re.search(rf"\| `{kind}` \| \*\*`True` is bad\*\*", page), kind


def test_readme_points_to_the_reference_pages() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "docs/api.md" in readme and "docs/conditions.md" in readme
    assert "examples/bad.yaml" in readme and (ROOT / "examples" / "bad.yaml").exists()
