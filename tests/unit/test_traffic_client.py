"""Unit tests of the traffic client's pure parts: where it calls, how it judges a reply and
classifies a failure, how a run is summarised."""

from __future__ import annotations

import httpx

from mcp_devcluster.nodeagent.proxy import NO_ENDPOINT_LOG, PROXY_ANNOTATION
from mcp_devcluster.traffic import (
    Outcome,
    classify,
    judge,
    no_endpoint_resets,
    service_address,
    summarize,
)


def test_address_comes_from_the_proxy_annotation() -> None:
    svc = {"metadata": {"annotations": {PROXY_ANNOTATION: "127.3.255.1:8080,127.3.255.1:81"}}}
    assert service_address(svc) == "http://127.3.255.1:8080"
    assert service_address({"metadata": {}}) is None


def test_replies_are_judged_by_what_the_tool_returned() -> None:
    ok = {"jsonrpc": "2.0", "id": 1, "result": {"structuredContent": {"result": 5}}}
    assert judge(httpx.Response(200, json=ok), 5) == "ok"
    assert judge(httpx.Response(200, json=ok), 6).startswith("wrong result")
    assert judge(httpx.Response(401, json={}), 5) == "HTTP 401"
    error = {"jsonrpc": "2.0", "id": 1, "error": {"code": -32603, "message": "boom"}}
    assert judge(httpx.Response(200, json=error), 5).startswith("JSON-RPC error")


def test_failures_are_classified_as_a_user_would_see_them() -> None:
    assert classify(httpx.ConnectError("refused")) == "refused"
    assert classify(httpx.RemoteProtocolError("closed")) == "refused"
    assert classify(httpx.ReadTimeout("slow")) == "timeout"
    assert classify(ValueError("odd")) == "error"


def test_summary_counts_kinds_and_the_error_window() -> None:
    outcomes = [
        Outcome(0.0, 0.01, "ok"),
        Outcome(1.0, 0.01, "refused", "ConnectError"),
        Outcome(1.05, 2.0, "timeout", "ReadTimeout"),
        Outcome(2.0, 0.01, "ok"),
    ]
    summary = summarize(outcomes)
    assert summary.requests == 4 and summary.failures == 2
    assert summary.failed["refused"] == 1 and summary.failed["timeout"] == 1
    assert abs(summary.window - 2.05) < 1e-9
    assert summarize(outcomes[:1]).window == 0


def test_no_endpoint_resets_are_counted_per_service() -> None:
    log = "\n".join(
        [
            NO_ENDPOINT_LOG.format(key="ns/weather"),
            NO_ENDPOINT_LOG.format(key="ns/weather-primary"),
            NO_ENDPOINT_LOG.format(key="ns/weather"),
        ]
    )
    assert no_endpoint_resets(log, "ns", "weather") == 2
    assert no_endpoint_resets(log, "ns", "weather-primary") == 1
