"""Argo CD's health check for MCPServer (manifests/argocd/health.lua), run with real Lua 5.1
(the language level of Argo CD's gopher-lua) over the statuses the operator writes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from lupa import lua51

ROOT = Path(__file__).resolve().parents[2]
ARGOCD = ROOT / "manifests" / "argocd"
CM_KEY = "resource.customizations.health.mcp-operator.dev_MCPServer"


def cond(type_: str, status: str, reason: str, generation: int = 3, message: str = "") -> Any:
    return {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "observedGeneration": generation,
        "lastTransitionTime": "2026-11-30T12:00:00Z",
    }


def server(*conditions: Any, generation: int = 3, observed: int | None = 3, **extra: Any) -> Any:
    obj: dict[str, Any] = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "team-a", "generation": generation},
        "spec": {"image": "ghcr.io/mcp-operator/example-server:0.1.0"},
    }
    if conditions or observed is not None:
        obj["status"] = {"conditions": list(conditions), **extra}
        if observed is not None:
            obj["status"]["observedGeneration"] = observed
    return obj


APPLIED = cond("Reconciled", "True", "Applied")
FIXTURES: list[tuple[str, Any, str, str]] = [
    ("no-status-yet", server(observed=None), "Progressing", "Waiting for the operator"),
    (
        "ready",
        server(APPLIED, cond("Ready", "True", "Available", message="2 ready pod(s)")),
        "Healthy",
        "Available: 2 ready pod(s)",
    ),
    (
        "ready-but-older-generation",
        server(APPLIED, cond("Ready", "True", "Available", generation=2), generation=3),
        "Progressing",
        "generation 3",
    ),
    (
        "ready-condition-without-generation-uses-status",
        server(
            {"type": "Ready", "status": "True", "reason": "Available", "message": "ok"},
            observed=2,
        ),
        "Progressing",
        "generation 3",
    ),
    (
        "pods-coming-up",
        server(APPLIED, cond("Ready", "False", "NoReadyPods", message="no ready pods yet")),
        "Progressing",
        "NoReadyPods",
    ),
    (
        "no-healthy-tier-is-not-terminal",
        server(APPLIED, cond("Ready", "False", "NoHealthyTier")),
        "Progressing",
        "NoHealthyTier",
    ),
    (
        "invalid-spec",
        server(
            cond("Reconciled", "False", "InvalidSpec", message="spec.port: too big"),
            cond("Ready", "False", "InvalidSpec", message="spec.port: too big"),
        ),
        "Degraded",
        "InvalidSpec: spec.port: too big",
    ),
    (
        "missing-secret",
        server(
            cond("Reconciled", "False", "MissingReference", message="secret creds not found"),
            cond("Ready", "False", "MissingReference"),
        ),
        "Degraded",
        "secret creds not found",
    ),
    (
        "apply-rejected",
        server(cond("Reconciled", "False", "ApplyFailed"), cond("Ready", "False", "ApplyFailed")),
        "Degraded",
        "ApplyFailed",
    ),
    (
        "invalid-spec-of-an-older-generation-is-being-fixed",
        server(
            cond("Reconciled", "False", "InvalidSpec", generation=2),
            cond("Ready", "False", "InvalidSpec", generation=2),
            generation=3,
            observed=2,
        ),
        "Progressing",
        "generation 3",
    ),
    (
        "paused",
        server(
            cond("Reconciled", "False", "Paused", message="annotation ...=disabled"),
            cond("Ready", "Unknown", "Paused"),
        ),
        "Suspended",
        "Paused",
    ),
    (
        "paused-while-spec-changed",
        server(
            cond("Reconciled", "False", "Paused", generation=2),
            cond("Ready", "Unknown", "Paused", generation=2),
            generation=3,
            observed=2,
        ),
        "Suspended",
        "Paused",
    ),
]


def health_check(script: str, obj: Any) -> dict[str, str]:
    lua = lua51.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = _to_lua(lua, obj)
    result = lua.execute(script)
    return {"status": str(result["status"]), "message": str(result["message"] or "")}


def _to_lua(lua: Any, value: Any) -> Any:
    """JSON → Lua tables, arrays 1-based (as Argo CD converts objects)."""
    if isinstance(value, dict):
        return lua.table_from({k: _to_lua(lua, v) for k, v in value.items()})
    if isinstance(value, list):
        return lua.table_from([_to_lua(lua, v) for v in value])
    return value


@pytest.fixture(scope="module")
def script() -> str:
    return (ARGOCD / "health.lua").read_text()


@pytest.mark.parametrize(
    ("case", "obj", "status", "message"), FIXTURES, ids=[f[0] for f in FIXTURES]
)
def test_health(script: str, case: str, obj: Any, status: str, message: str) -> None:
    result = health_check(script, obj)
    assert result["status"] == status, f"{case}: {result}"
    assert message in result["message"], f"{case}: {result}"


def test_argocd_cm_carries_health_lua_verbatim(script: str) -> None:
    cm = yaml.safe_load((ARGOCD / "argocd-cm.yaml").read_text())
    assert cm["kind"] == "ConfigMap" and cm["metadata"]["name"] == "argocd-cm"
    assert cm["data"][CM_KEY] == script


def test_every_terminal_reason_is_one_the_operator_writes(script: str) -> None:
    """A renamed reason would silently turn a Degraded server Progressing forever."""
    from typing import get_args

    from mcp_operator.reconcile.status import OutcomeKind

    for reason in ("InvalidSpec", "MissingReference", "ApplyFailed"):
        assert reason in get_args(OutcomeKind)
        assert f"{reason} = true" in script


def test_applications_sync_server_side_in_waves() -> None:
    platform = yaml.safe_load((ARGOCD / "platform.yaml").read_text())
    apps = [d for d in yaml.safe_load_all((ARGOCD / "tenant.yaml").read_text())]
    tenant = next(d for d in apps if d["kind"] == "Application")
    for app in (platform, tenant):
        assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
        labels = app["spec"]["syncPolicy"]["managedNamespaceMetadata"]["labels"]
        assert labels["pod-security.kubernetes.io/enforce"] == "restricted"
    wave = "argocd.argoproj.io/sync-wave"
    assert int(platform["metadata"]["annotations"][wave]) < int(
        tenant["metadata"]["annotations"][wave]
    )
    assert platform["spec"]["source"]["path"] == "charts/mcp-operator"
