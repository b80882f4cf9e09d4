"""The server's PrometheusRule: alerts on the operator's own metrics, as a pure function.

Every expression is scoped to one server by ``{namespace="NS", server="NAME"}`` and keeps
those two labels (``by (namespace, server)``), so an alert names its server and a rule
never fires for another one. The rule is rendered only when the caller has seen the
``monitoring.coreos.com/v1`` API (:data:`MONITORING_API`); what is left out, and why, is
decided here: alerts about features the server does not use are never rendered.

Metric names used here are checked against the operator's registry (and an allow-list of
cAdvisor and kube-state-metrics series) by ``tests/unit/test_alerts.py``; the expressions
are checked and unit-tested by ``promtool`` (``tests/unit/test_promtool.py``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mcp_operator.api.durations import parse_duration
from mcp_operator.api.models import AlertSpec, MCPServer, Severity
from mcp_operator.metrics import PREFIX
from mcp_operator.render import meta
from mcp_operator.render.context import RenderContext

Obj = dict[str, Any]
MONITORING_API = "monitoring.coreos.com/v1"
PROMETHEUS_RULE_KIND = "PrometheusRule"
# The MCP container's name in both tiers' pods (render/workload.py).
MCP_CONTAINER = "mcp"


@dataclass(frozen=True)
class Default:
    """An alert's defaults when the spec leaves ``for``/``severity`` unset."""

    for_: str
    severity: Severity


DEFAULTS: dict[str, Default] = {
    "MCPServerDown": Default("1m", "critical"),
    "MCPServerFailedOver": Default("5m", "warning"),
    "MCPServerFailoverFlapping": Default("0s", "warning"),
    "MCPServerBackupUnavailable": Default("10m", "warning"),
    "MCPServerProbeErrorRateHigh": Default("10m", "warning"),
    "MCPServerProbeLatencyHigh": Default("10m", "warning"),
    "MCPServerMemoryHigh": Default("15m", "warning"),
    "MCPServerSigningKeyRotationOverdue": Default("5m", "warning"),
    "MCPServerCacheDown": Default("5m", "warning"),
    "MCPServerProbeMisconfigured": Default("10m", "warning"),
}
ALERT_NAMES = tuple(DEFAULTS)


def prom_duration(text: str) -> str:
    """A spec duration (Go style, may hold decimals: ``1.5m``) as Prometheus reads it."""
    millis = round(parse_duration(text).total_seconds() * 1000)
    if millis % 1000:
        return f"{millis}ms"
    seconds = millis // 1000
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = (f"{hours}h" if hours else "") + (f"{minutes}m" if minutes else "")
    return out + (f"{secs}s" if secs else "") or "0s"


def _selector(server: MCPServer, **extra: str) -> str:
    """The label matchers that scope an expression to this server."""
    pairs = {"namespace": server.metadata.namespace or "default", "server": server.metadata.name}
    pairs.update(extra)
    return "{" + ",".join(f'{k}="{v}"' for k, v in pairs.items()) + "}"


def _pod_regex(server: MCPServer) -> str:
    """Pods of this server's Deployments (NAME-TIER-<rs hash>-<pod hash>) and no other's:
    the hashes hold no '-', so server ``a``'s regex never matches ``a-primary``'s pods."""
    return f"{server.metadata.name}-(primary|backup)-[a-z0-9]+-[a-z0-9]+"


def _m(name: str) -> str:
    return f"{PREFIX}_{name}"


def expressions(server: MCPServer) -> dict[str, str]:
    """Each applicable alert's PromQL expression, by alert name."""
    spec = server.spec
    alerts = spec.monitoring.prometheus_rule.alerts
    sel = _selector(server)
    by = "by (namespace, server)"
    out = {
        "MCPServerDown": f"max {by} ({_m('tier_healthy')}{sel}) == 0",
        "MCPServerProbeMisconfigured": f"max {by} ({_m('misconfigured')}{sel}) == 1",
    }
    ratio = alerts.probe_error_rate_high
    window = prom_duration(ratio.window)
    out["MCPServerProbeErrorRateHigh"] = (
        f"sum {by} (rate({_m('probes_total')}{_selector(server, outcome='unhealthy')}[{window}]))"
        f" / sum {by} (rate({_m('probes_total')}{sel}[{window}])) > {ratio.ratio:g}"
    )
    latency = alerts.probe_latency_high
    out["MCPServerProbeLatencyHigh"] = (
        f"histogram_quantile(0.95, sum by (namespace, server, le) "
        f"(rate({_m('probe_duration_seconds_bucket')}{sel}[{prom_duration(latency.window)}])))"
        f" > {latency.seconds:g}"
    )
    # cAdvisor and kube-state-metrics series know pods, not servers.
    namespace = server.metadata.namespace or "default"
    pods = f'{{namespace="{namespace}",pod=~"{_pod_regex(server)}",container="{MCP_CONTAINER}"'
    limits = pods + ',resource="memory"}'
    pods += "}"
    out["MCPServerMemoryHigh"] = (
        f"max by (namespace, pod) (container_memory_working_set_bytes{pods})"
        f" / on (namespace, pod) max by (namespace, pod) "
        f"(kube_pod_container_resource_limits{limits}) > {alerts.memory_high.ratio:g}"
    )
    if spec.backup.enabled:
        out["MCPServerFailedOver"] = (
            f"max {by} ({_m('active_tier')}{_selector(server, tier='backup')}) == 1"
        )
        flap = alerts.failover_flapping
        out["MCPServerFailoverFlapping"] = (
            f"sum {by} (changes({_m('active_tier')}{_selector(server, tier='backup')}"
            f"[{prom_duration(flap.window)}])) >= {flap.switches}"
        )
    if spec.backup.enabled and spec.backup.standby == "hot":
        out["MCPServerBackupUnavailable"] = (
            f"max {by} ({_m('tier_healthy')}{_selector(server, tier='backup')}) == 0"
            f" and on (namespace, server) "
            f"max {by} ({_m('tier_healthy')}{_selector(server, tier='primary')}) == 1"
        )
    if spec.auth.enabled:
        grace = parse_duration(alerts.signing_key_rotation_overdue.grace).total_seconds()
        out["MCPServerSigningKeyRotationOverdue"] = (
            f"time() - max {by} ({_m('signing_key_next_rotation_timestamp_seconds')}{sel})"
            f" > {grace:g}"
        )
    if spec.cache.enabled:
        out["MCPServerCacheDown"] = f"max {by} ({_m('cache_ready')}{sel}) == 0"
    return {name: out[name] for name in ALERT_NAMES if name in out}


_TEXT: dict[str, tuple[str, str]] = {
    "MCPServerDown": (
        "MCP server {{ $labels.namespace }}/{{ $labels.server }} is down",
        "No tier of {{ $labels.namespace }}/{{ $labels.server }} passes MCP health: clients "
        "get no answers.",
    ),
    "MCPServerFailedOver": (
        "MCP server {{ $labels.namespace }}/{{ $labels.server }} is served by its backup",
        "The primary tier failed; traffic has been on the backup tier for a while. The "
        "operator fails back once the primary is healthy again.",
    ),
    "MCPServerFailoverFlapping": (
        "MCP server {{ $labels.namespace }}/{{ $labels.server }} switches tiers too often",
        "Traffic switched between primary and backup {{ $value }} times recently.",
    ),
    "MCPServerBackupUnavailable": (
        "MCP server {{ $labels.namespace }}/{{ $labels.server }} has no healthy backup",
        "The primary serves but the backup tier fails MCP health: a primary failure now "
        "is an outage.",
    ),
    "MCPServerProbeErrorRateHigh": (
        "MCP probes of {{ $labels.namespace }}/{{ $labels.server }} fail often",
        "{{ $value | humanizePercentage }} of the operator's MCP probes are unhealthy.",
    ),
    "MCPServerProbeLatencyHigh": (
        "MCP probes of {{ $labels.namespace }}/{{ $labels.server }} are slow",
        "The 95th percentile of MCP probe durations is {{ $value | humanizeDuration }}.",
    ),
    "MCPServerMemoryHigh": (
        "Pod {{ $labels.namespace }}/{{ $labels.pod }} nears its memory limit",
        "The MCP container's working set is {{ $value | humanizePercentage }} of its "
        "memory limit; the kernel kills it at 100%.",
    ),
    "MCPServerSigningKeyRotationOverdue": (
        "Signing key rotation of {{ $labels.namespace }}/{{ $labels.server }} is overdue",
        "The next signing key is {{ $value | humanizeDuration }} past its due time.",
    ),
    "MCPServerCacheDown": (
        "Cache of MCP server {{ $labels.namespace }}/{{ $labels.server }} is down",
        "The server's cache does not answer an authenticated PING.",
    ),
    "MCPServerProbeMisconfigured": (
        "MCP probes of {{ $labels.namespace }}/{{ $labels.server }} are misconfigured",
        "The operator cannot probe the server as configured (e.g. a missing token Secret); "
        "see the MCPServer's Misconfigured condition.",
    ),
}

# Alert name -> the field of spec.monitoring.prometheusRule.alerts that configures it.
FIELDS: dict[str, str] = {
    "MCPServerDown": "down",
    "MCPServerFailedOver": "failed_over",
    "MCPServerFailoverFlapping": "failover_flapping",
    "MCPServerBackupUnavailable": "backup_unavailable",
    "MCPServerProbeErrorRateHigh": "probe_error_rate_high",
    "MCPServerProbeLatencyHigh": "probe_latency_high",
    "MCPServerMemoryHigh": "memory_high",
    "MCPServerSigningKeyRotationOverdue": "signing_key_rotation_overdue",
    "MCPServerCacheDown": "cache_down",
    "MCPServerProbeMisconfigured": "probe_misconfigured",
}


def rules(server: MCPServer) -> list[Obj]:
    """The enabled, applicable alerting rules, in a stable order."""
    spec = server.spec.monitoring.prometheus_rule
    base = spec.runbook_base_url
    out = []
    for name, expr in expressions(server).items():
        alert: AlertSpec = getattr(spec.alerts, FIELDS[name])
        if not alert.enabled:
            continue
        default = DEFAULTS[name]
        summary, description = _TEXT[name]
        out.append(
            {
                "alert": name,
                "expr": expr,
                "for": prom_duration(alert.for_ or default.for_),
                "labels": {"severity": alert.severity or default.severity},
                "annotations": {
                    "summary": summary,
                    "description": description,
                    "runbook_url": f"{base}#{name.lower()}",
                },
            }
        )
    return out


def group_name(server: MCPServer) -> str:
    return f"mcp-operator.{server.metadata.namespace or 'default'}.{server.metadata.name}"


def rule_spec(server: MCPServer) -> Obj:
    """The PrometheusRule's ``spec`` (also a valid Prometheus rule file: ``groups``)."""
    return {"groups": [{"name": group_name(server), "rules": rules(server)}]}


def wanted(server: MCPServer, ctx: RenderContext) -> bool:
    """Whether the PrometheusRule should exist: asked for and the API is served."""
    return (
        server.spec.monitoring.prometheus_rule.enabled
        and MONITORING_API in ctx.capabilities.api_versions
    )


def prometheus_rule(server: MCPServer, ctx: RenderContext) -> Obj | None:
    """The PrometheusRule ``NAME``, or None when not wanted (see :func:`wanted`)."""
    if not wanted(server, ctx):
        return None
    metadata = meta.metadata(server, meta.child_name(server), "alerts", ctx.owner_uid)
    # The operator's own labels win: the informer and the child index find the rule by them.
    metadata["labels"] = {**server.spec.monitoring.prometheus_rule.labels, **metadata["labels"]}
    return {
        "apiVersion": MONITORING_API,
        "kind": PROMETHEUS_RULE_KIND,
        "metadata": metadata,
        "spec": rule_spec(server),
    }
