"""The failover policy: scenarios a user would notice, as a table, plus seeded properties."""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from mcp_operator.health.breaker import BreakerPhase
from mcp_operator.health.failover import (
    Cancel,
    Decision,
    Failback,
    FailoverPhase,
    FailoverSettings,
    Hold,
    InProgress,
    InvalidSwitchover,
    NoHealthyTier,
    Observed,
    ScaleUpBackup,
    Standby,
    Stay,
    SwitchTo,
    decide,
    parse_switchover,
)

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
CLOSED, OPEN, HALF = BreakerPhase.CLOSED, BreakerPhase.OPEN, BreakerPhase.HALF_OPEN
HOT = FailoverSettings(cooldown_s=300, flap_max_failovers=3, flap_window_s=3600)
COLD = replace(HOT, standby=Standby.COLD, scale_up_timeout_s=120)
MANUAL = replace(HOT, failback=Failback.MANUAL)
OFF = replace(HOT, enabled=False)


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def obs(**kw: object) -> Observed:
    base: dict[str, object] = {
        "active": "primary",
        "primary": CLOSED,
        "backup": CLOSED,
        "backup_ready_replicas": 1,
        "primary_closed_since": ago(86400),
    }
    base.update(kw)
    return Observed(**base)  # type: ignore[arg-type]


def on_backup(**kw: object) -> Observed:
    return obs(active="backup", **kw)


SWITCH_TO_BACKUP = "backup@2026-11-25T11:59:00Z"
SWITCH_TO_PRIMARY = "primary@2026-11-25T11:59:00Z"

SCENARIOS: list[tuple[str, FailoverSettings, Observed, type[Decision], str | None]] = [
    # story, settings, observed, expected decision type, expected target tier (SwitchTo)
    ("all healthy: nothing happens", HOT, obs(), Stay, None),
    (
        "primary breaker open, hot backup healthy: fail over",
        HOT,
        obs(primary=OPEN),
        SwitchTo,
        "backup",
    ),
    ("primary half-open: wait for its verdict", HOT, obs(primary=HALF), Stay, None),
    (
        "primary open, backup open: no healthy tier",
        HOT,
        obs(primary=OPEN, backup=OPEN),
        NoHealthyTier,
        None,
    ),
    (
        "primary open, backup has no ready pods (hot): no healthy tier",
        HOT,
        obs(primary=OPEN, backup_ready_replicas=0),
        NoHealthyTier,
        None,
    ),
    (
        "primary open, cold backup at zero: scale it up first",
        COLD,
        obs(primary=OPEN, backup=OPEN, backup_ready_replicas=0),
        ScaleUpBackup,
        None,
    ),
    (
        "primary open, cold backup already up and healthy: switch",
        COLD,
        obs(primary=OPEN, backup_ready_replicas=2),
        SwitchTo,
        "backup",
    ),
    ("failover disabled: stay on the failing primary", OFF, obs(primary=OPEN), Stay, None),
    (
        "on backup, primary healthy for less than the cooldown: stay",
        HOT,
        on_backup(primary_closed_since=ago(120)),
        Stay,
        None,
    ),
    (
        "on backup, primary healthy past the cooldown: automatic failback",
        HOT,
        on_backup(primary_closed_since=ago(301)),
        SwitchTo,
        "primary",
    ),
    (
        "on backup, primary closed at an unknown time: no failback yet",
        HOT,
        on_backup(primary_closed_since=None),
        Stay,
        None,
    ),
    ("on backup, primary still open: stay", HOT, on_backup(primary=OPEN), Stay, None),
    ("Manual failback waits for the annotation", MANUAL, on_backup(), Stay, None),
    (
        "Manual failback follows the switchover annotation",
        MANUAL,
        on_backup(switchover=SWITCH_TO_PRIMARY),
        SwitchTo,
        "primary",
    ),
    (
        "on backup and the backup fails while primary is healthy: go back at once",
        HOT,
        on_backup(backup=OPEN, primary_closed_since=ago(10)),
        SwitchTo,
        "primary",
    ),
    (
        "on backup, both failing: no healthy tier, no switching",
        HOT,
        on_backup(backup=OPEN, primary=OPEN),
        NoHealthyTier,
        None,
    ),
    (
        "flap guard: 3 failovers in the last hour hold the failback",
        HOT,
        on_backup(recent_failovers=(ago(3000), ago(1800), ago(600))),
        Hold,
        None,
    ),
    (
        "flap guard: old failovers outside the window do not count",
        HOT,
        on_backup(recent_failovers=(ago(7200), ago(5000), ago(600))),
        SwitchTo,
        "primary",
    ),
    (
        "flap guard never holds traffic on a failing primary",
        HOT,
        obs(primary=OPEN, recent_failovers=(ago(300), ago(200), ago(100))),
        SwitchTo,
        "backup",
    ),
    (
        "switchover to a healthy backup",
        HOT,
        obs(switchover=SWITCH_TO_BACKUP),
        SwitchTo,
        "backup",
    ),
    (
        "switchover already processed: ignored",
        HOT,
        obs(switchover=SWITCH_TO_BACKUP, switchover_processed=SWITCH_TO_BACKUP),
        Stay,
        None,
    ),
    (
        "switchover to an unhealthy backup is rejected",
        HOT,
        obs(switchover=SWITCH_TO_BACKUP, backup=OPEN),
        Stay,
        None,
    ),
    (
        "switchover to the active tier is rejected",
        HOT,
        obs(switchover=SWITCH_TO_PRIMARY),
        Stay,
        None,
    ),
    ("garbage switchover annotation is rejected", HOT, obs(switchover="backup"), Stay, None),
    (
        "switchover to a cold backup scales it first",
        COLD,
        obs(switchover=SWITCH_TO_BACKUP, backup_ready_replicas=0),
        ScaleUpBackup,
        None,
    ),
    (
        "switchover bypasses the flap guard and disabled automation",
        OFF,
        on_backup(switchover=SWITCH_TO_PRIMARY, recent_failovers=(ago(60),) * 5),
        SwitchTo,
        "primary",
    ),
    (
        "restart after recording intent: complete it",
        HOT,
        obs(
            primary=OPEN,
            in_progress=InProgress("backup", FailoverPhase.INTENT, ago(5)),
        ),
        SwitchTo,
        "backup",
    ),
    (
        "recorded intent is completed even if the primary recovered meanwhile",
        HOT,
        obs(in_progress=InProgress("backup", FailoverPhase.INTENT, ago(5))),
        SwitchTo,
        "backup",
    ),
    (
        "recorded intent whose target died is cancelled (the record closes)",
        HOT,
        obs(backup=OPEN, in_progress=InProgress("backup", FailoverPhase.INTENT, ago(5))),
        Cancel,
        None,
    ),
    (
        "recorded intent to a cold backup: scale first",
        COLD,
        obs(
            primary=OPEN,
            backup_ready_replicas=0,
            in_progress=InProgress("backup", FailoverPhase.INTENT, ago(5)),
        ),
        ScaleUpBackup,
        None,
    ),
    (
        "cold backup still scaling within the timeout: keep waiting",
        COLD,
        obs(
            primary=OPEN,
            backup=OPEN,
            backup_ready_replicas=0,
            in_progress=InProgress("backup", FailoverPhase.SCALING, ago(60)),
        ),
        ScaleUpBackup,
        None,
    ),
    (
        "cold backup scaled and healthy: switch",
        COLD,
        obs(
            primary=OPEN,
            backup_ready_replicas=1,
            in_progress=InProgress("backup", FailoverPhase.SCALING, ago(60)),
        ),
        SwitchTo,
        "backup",
    ),
    (
        "cold backup never became healthy: give up (the record closes, backup scales down)",
        COLD,
        obs(
            primary=OPEN,
            backup=OPEN,
            backup_ready_replicas=1,
            in_progress=InProgress("backup", FailoverPhase.SCALING, ago(121)),
        ),
        Cancel,
        None,
    ),
    (
        "a switched record is history: normal rules apply",
        HOT,
        on_backup(
            primary_closed_since=ago(10),
            in_progress=InProgress("backup", FailoverPhase.SWITCHED, ago(600)),
        ),
        Stay,
        None,
    ),
]


@pytest.mark.parametrize(
    ("settings", "observed", "kind", "tier"),
    [pytest.param(s, o, k, t, id=story) for story, s, o, k, t in SCENARIOS],
)
def test_scenario(
    settings: FailoverSettings, observed: Observed, kind: type[Decision], tier: str | None
) -> None:
    decision = decide(settings, observed, NOW)
    assert isinstance(decision, kind), decision
    if isinstance(decision, SwitchTo):
        assert decision.tier == tier
    assert decision.reason


def test_switch_kinds_and_rejections_are_reported() -> None:
    failover = decide(HOT, obs(primary=OPEN), NOW)
    assert isinstance(failover, SwitchTo) and failover.kind == "failover"
    failback = decide(HOT, on_backup(), NOW)
    assert isinstance(failback, SwitchTo) and failback.kind == "failback"
    switchover = decide(HOT, obs(switchover=SWITCH_TO_BACKUP), NOW)
    assert isinstance(switchover, SwitchTo)
    assert (switchover.kind, switchover.switchover) == ("switchover", SWITCH_TO_BACKUP)
    rejected = decide(HOT, obs(switchover=SWITCH_TO_BACKUP, backup=OPEN), NOW)
    assert isinstance(rejected, Stay)
    assert rejected.rejected_switchover == SWITCH_TO_BACKUP
    assert "not healthy" in rejected.reason


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("backup@2026-11-25T11:59:00Z", ("backup", datetime(2026, 11, 25, 11, 59, tzinfo=UTC))),
        ("primary@2026-11-25T12:59:00.5+01:00", ("primary", None)),
        ("primary@2026-11-25t11:59:00z", ("primary", None)),
    ],
)
def test_parse_switchover_valid(value: str, expected: tuple[str, datetime | None]) -> None:
    parsed = parse_switchover(value)
    assert not isinstance(parsed, InvalidSwitchover), parsed
    assert parsed[0] == expected[0]
    assert parsed[1].tzinfo is not None
    if expected[1] is not None:
        assert parsed[1] == expected[1]


@pytest.mark.parametrize(
    "value",
    [
        "",
        "backup",
        "secondary@2026-11-25T11:59:00Z",
        "backup@2026-11-25",
        "backup@2026-11-25T11:59:00",  # no offset
        "backup@2026-13-45T11:59:00Z",
        "backup@yesterday",
    ],
)
def test_parse_switchover_invalid(value: str) -> None:
    assert isinstance(parse_switchover(value), InvalidSwitchover)


def _random_observed(rng: random.Random) -> Observed:
    phases = [CLOSED, OPEN, HALF]
    return Observed(
        active=rng.choice(["primary", "backup"]),
        primary=rng.choice(phases),
        backup=rng.choice(phases),
        backup_ready_replicas=rng.choice([0, 1, 2]),
        primary_closed_since=rng.choice([None, ago(10), ago(1000)]),
        recent_failovers=tuple(ago(rng.uniform(0, 7200)) for _ in range(rng.randint(0, 5))),
        switchover=rng.choice([None, SWITCH_TO_BACKUP, SWITCH_TO_PRIMARY, "junk"]),
        switchover_processed=rng.choice([None, SWITCH_TO_BACKUP]),
        in_progress=rng.choice(
            [
                None,
                InProgress("backup", rng.choice(list(FailoverPhase)), ago(rng.uniform(0, 600))),
                InProgress("primary", FailoverPhase.INTENT, ago(5), "failback"),
            ]
        ),
    )


def _tier_healthy(settings: FailoverSettings, o: Observed, tier: str) -> bool:
    if tier == "primary":
        return o.primary is CLOSED
    return o.backup is CLOSED and o.backup_ready_replicas > 0


def test_properties_over_random_situations() -> None:
    """Seeded property test (hypothesis is not a dependency of the project):

    * the policy never switches to an unhealthy tier, nor to the already-active tier;
    * with no in-progress record and no new switchover, disabled automation never switches;
    * NoHealthyTier is only reported when the target side really has no healthy tier.
    """
    rng = random.Random(1234)
    for _ in range(20_000):
        settings = rng.choice([HOT, COLD, MANUAL, OFF])
        o = _random_observed(rng)
        decision = decide(settings, o, NOW)
        if isinstance(decision, SwitchTo):
            assert _tier_healthy(settings, o, decision.tier), (o, decision)
            assert decision.tier != o.active or o.in_progress is not None, (o, decision)
            explicit = o.in_progress is not None or (
                o.switchover is not None and o.switchover != o.switchover_processed
            )
            if not settings.enabled:
                assert explicit, (o, decision)
        if isinstance(decision, NoHealthyTier):
            assert not (
                _tier_healthy(settings, o, "primary") and _tier_healthy(settings, o, "backup")
            )
