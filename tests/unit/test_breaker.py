"""The circuit breaker: transitions, restart safety (status round-trip), tier verdicts."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from mcp_operator.health.breaker import (
    BreakerPhase,
    BreakerSettings,
    BreakerState,
    step,
    tier_round_ok,
)
from mcp_operator.health.probe import Outcome, ProbeResult

T0 = datetime(2026, 11, 25, 0, 0, tzinfo=UTC)
S = BreakerSettings(failure_threshold=3, success_threshold=2, recovery_timeout_s=30)
CLOSED, OPEN, HALF = BreakerPhase.CLOSED, BreakerPhase.OPEN, BreakerPhase.HALF_OPEN


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def run(rounds: list[tuple[float, bool | None]], state: BreakerState | None = None) -> BreakerState:
    state = state or BreakerState()
    for when, ok in rounds:
        state = step(state, ok, at(when), S)
    return state


@pytest.mark.parametrize(
    ("story", "rounds", "phase"),
    [
        ("healthy server stays closed", [(0, True), (2, True), (4, True)], CLOSED),
        ("two blips do not open", [(0, False), (2, False)], CLOSED),
        ("three consecutive failures open", [(0, False), (2, False), (4, False)], OPEN),
        (
            "a success in between resets the count",
            [(0, False), (2, False), (4, True), (6, False), (8, False)],
            CLOSED,
        ),
        (
            "open ignores successes before the recovery timeout",
            [(0, False), (2, False), (4, False), (10, True), (20, True)],
            OPEN,
        ),
        (
            "first round after the timeout is a half-open trial",
            [(0, False), (2, False), (4, False), (34, True)],
            HALF,
        ),
        (
            "half-open closes after success_threshold successes",
            [(0, False), (2, False), (4, False), (34, True), (36, True)],
            CLOSED,
        ),
        (
            "half-open reopens on a failure",
            [(0, False), (2, False), (4, False), (34, True), (36, False)],
            OPEN,
        ),
        (
            "a failed trial after the timeout reopens at once",
            [(0, False), (2, False), (4, False), (34, False)],
            OPEN,
        ),
        (
            "misconfigured rounds (None) never open the breaker",
            [(0, None), (2, None), (4, None), (6, None)],
            CLOSED,
        ),
        (
            "misconfigured rounds do not reset the failure count either",
            [(0, False), (2, None), (4, False), (6, None), (8, False)],
            OPEN,
        ),
    ],
)
def test_transitions(
    story: str, rounds: list[tuple[float, bool | None]], phase: BreakerPhase
) -> None:
    assert run(rounds).phase is phase, story


def test_reopen_restarts_the_recovery_timer() -> None:
    state = run([(0, False), (2, False), (4, False), (34, True), (36, False)])
    assert state.since == at(36)
    assert step(state, True, at(60), S).phase is OPEN  # 24 s after reopening
    assert step(state, True, at(66), S).phase is HALF


def test_closed_since_is_when_it_closed() -> None:
    state = run([(0, False), (2, False), (4, False), (34, True), (36, True), (38, True)])
    assert state.phase is CLOSED
    assert state.since == at(36)


def test_state_round_trips_through_status_dict() -> None:
    state = run([(0, False), (2, False), (4, False)])
    data = state.to_dict()
    assert data == {"phase": "open", "failures": 3, "successes": 0, "since": "2026-11-25T00:00:04Z"}
    assert BreakerState.from_dict(data) == state


def test_restart_mid_story_behaves_like_no_restart() -> None:
    """Breaker state is rebuilt from status, not from memory."""
    rng = random.Random(7)
    rounds: list[tuple[float, bool | None]] = [
        (i * 2.0, rng.choice([True, False, False, None])) for i in range(400)
    ]
    uninterrupted = run(rounds)
    state = BreakerState()
    for when, ok in rounds:
        state = BreakerState.from_dict(step(state, ok, at(when), S).to_dict())
    assert state == uninterrupted


@pytest.mark.parametrize(
    "garbage",
    [None, {}, {"phase": "exploded"}, {"failures": "many"}, {"since": 12}, {"since": "yesterday"}],
)
def test_unreadable_status_yields_fresh_breaker(garbage: dict[str, object] | None) -> None:
    assert BreakerState.from_dict(garbage) == BreakerState()


def test_invariants_hold_under_random_rounds() -> None:
    """Property test (seeded, no hypothesis): counts stay within thresholds, and the breaker
    only ever opens after failure_threshold consecutive failures or a failed trial."""
    for seed in range(50):
        rng = random.Random(seed)
        state, now, streak = BreakerState(), 0.0, 0
        for _ in range(300):
            now += rng.choice([1.0, 2.0, 15.0, 40.0])
            ok = rng.choice([True, False, None])
            before = state
            state = step(state, ok, at(now), S)
            streak = streak + 1 if ok is False else (streak if ok is None else 0)
            assert 0 <= state.failures <= S.failure_threshold
            assert 0 <= state.successes < S.success_threshold
            if before.phase is CLOSED and state.phase is OPEN:
                assert streak >= S.failure_threshold
            if state.phase is CLOSED and before.phase is not CLOSED:
                assert ok is True


def pr(outcome: Outcome) -> ProbeResult:
    return ProbeResult(outcome, "modern", 0.01, "")


H, U, M = Outcome.HEALTHY, Outcome.UNHEALTHY, Outcome.MISCONFIGURED


@pytest.mark.parametrize(
    ("outcomes", "min_healthy", "ok"),
    [
        ([H, H], 1, True),
        ([H, U], 1, True),
        ([U, U], 1, False),
        ([], 1, False),  # no pods at all: the tier cannot serve
        ([M, M], 1, None),  # only misconfigured: no verdict
        ([M, U], 1, False),
        ([H, M], 1, True),
        ([H, M], 2, None),  # the shortfall is only misconfiguration
        ([H, U, H], 2, True),
        ([H, U, U], 2, False),
    ],
)
def test_tier_round(outcomes: list[Outcome], min_healthy: int, ok: bool | None) -> None:
    verdict = tier_round_ok([pr(o) for o in outcomes], min_healthy=min_healthy)
    assert verdict.ok is ok
    assert (verdict.healthy, verdict.unhealthy, verdict.misconfigured) == (
        outcomes.count(H),
        outcomes.count(U),
        outcomes.count(M),
    )


def test_tier_round_accepts_bare_outcomes() -> None:
    assert tier_round_ok([H, U]).ok is True


def test_settings_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        BreakerSettings(failure_threshold=0)
