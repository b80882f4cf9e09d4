"""The reconciler's pure parts: conditions, drift detection, what status says."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta

from mcp_operator.api.models import MCPServer, TierStatus
from mcp_operator.reconcile import conditions, status
from mcp_operator.reconcile.children import ChildIndex, comparable, is_applied
from mcp_operator.reconcile.conditions import Want
from mcp_operator.render import RenderContext, render

T0 = datetime(2026, 11, 25, 3, 0, tzinfo=UTC)
SERVER = MCPServer.model_validate(
    {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "prod"},
        "spec": {"image": "ghcr.io/acme/weather:1"},
    }
)


def test_transition_time_moves_only_when_status_flips() -> None:
    first = conditions.merge([], [Want("Ready", "False", "NoReadyPods", "starting")], 1, T0)
    later = T0 + timedelta(seconds=30)
    same = conditions.merge(first, [Want("Ready", "False", "NoHealthyTier", "down")], 2, later)
    assert same[0].last_transition_time == T0
    assert (same[0].reason, same[0].observed_generation) == ("NoHealthyTier", 2)
    flipped = conditions.merge(same, [Want("Ready", "True", "Available", "ok")], 2, later)
    assert flipped[0].last_transition_time == later


def test_conditions_are_ordered_ready_first_and_never_have_empty_messages() -> None:
    merged = conditions.merge(
        [],
        [
            Want("FailedOver", "False", "ServingFromPrimary"),
            Want("Reconciled", "True", "Applied"),
            Want("Ready", "True", "Available"),
        ],
        1,
        T0,
    )
    assert [c.type for c in merged] == ["Ready", "Reconciled", "FailedOver"]
    assert all(c.message for c in merged)


def test_untouched_conditions_are_kept() -> None:
    merged = conditions.merge([], [Want("Misconfigured", "True", "ProbeRejected", "401")], 1, T0)
    merged = conditions.merge(merged, [Want("Ready", "True", "Available")], 1, T0)
    assert {c.type for c in merged} == {"Ready", "Misconfigured"}


def test_live_object_with_server_defaults_counts_as_applied() -> None:
    desired = next(o for o in render(SERVER) if o["kind"] == "Service")
    live = copy.deepcopy(comparable(desired))
    live["spec"]["clusterIP"] = "10.96.0.7"  # the server adds fields of its own
    live["spec"]["sessionAffinity"] = "None"
    live["metadata"]["resourceVersion"] = "42"
    assert is_applied(comparable(desired), live)


def test_hand_edit_or_deletion_of_an_owned_field_is_drift() -> None:
    desired = next(o for o in render(SERVER) if o["kind"] == "Service")
    edited = copy.deepcopy(comparable(desired))
    edited["spec"]["selector"] = {**edited["spec"]["selector"], "mcp-operator.dev/tier": "backup"}
    assert not is_applied(comparable(desired), edited)
    assert not is_applied(comparable(desired), None)


def test_switching_the_active_tier_is_a_change_to_apply() -> None:
    primary = next(o for o in render(SERVER) if o["kind"] == "Service")
    backup = next(
        o for o in render(SERVER, RenderContext(active_tier="backup")) if o["kind"] == "Service"
    )
    assert not is_applied(comparable(backup), comparable(primary))


def test_child_index_groups_by_owner_and_forgets() -> None:
    index = ChildIndex()
    svc = next(o for o in render(SERVER) if o["kind"] == "Service")
    assert index.observe("Service", svc, deleted=False) == ("prod", "weather")
    assert ("Service", "weather") in index.children(("prod", "weather"))
    index.observe("Service", svc, deleted=True)
    assert index.children(("prod", "weather")) == {}
    assert (
        index.observe("Service", {"metadata": {"name": "x", "namespace": "prod"}}, deleted=False)
        is None
    )


def test_ready_summarises_for_a_human() -> None:
    ok = status.Outcome("Applied")
    serving = TierStatus(ready_replicas=2, replicas=2)
    assert status.ready_condition(SERVER, ok, serving, no_healthy_tier=False).status == "True"
    assert (
        status.ready_condition(SERVER, ok, serving, no_healthy_tier=True).reason == "NoHealthyTier"
    )
    assert (
        status.ready_condition(SERVER, ok, TierStatus(), no_healthy_tier=False).reason
        == "NoReadyPods"
    )
    bad = status.Outcome("InvalidSpec", "spec.port: must be ≤ 65535")
    cond = status.ready_condition(SERVER, bad, serving, no_healthy_tier=False)
    assert (cond.status, cond.reason) == ("False", "InvalidSpec")
    assert "spec.port" in cond.message
    paused = status.ready_condition(SERVER, status.Outcome("Paused"), serving, False)
    assert (paused.status, paused.reason) == ("Unknown", "Paused")


def test_tier_counts_read_the_deployment() -> None:
    dep = {"spec": {"replicas": 3}, "status": {"readyReplicas": 1}}
    assert status.tier_status(TierStatus(), dep).summary == "1/3"
    assert status.tier_status(TierStatus(), None).summary == "-"


def test_named_list_reordered_by_server_side_apply_counts_as_applied() -> None:
    """SSA appends an env var added to the middle of ours: that must not look like drift
    (it did, and the operator re-applied such a Deployment for ever)."""
    want = {"env": [{"name": "HOME", "value": "/home"}, {"name": "A", "value": "1"}]}
    live = {"env": [{"name": "A", "value": "1"}, {"name": "HOME", "value": "/home"}]}
    assert is_applied(want, live)
    assert not is_applied(want, {"env": [{"name": "A", "value": "2"}, live["env"][1]]})
    assert not is_applied(want, {"env": [live["env"][0]]})
    # Unnamed lists (args, command) keep their order.
    assert not is_applied({"args": ["a", "b"]}, {"args": ["b", "a"]})
