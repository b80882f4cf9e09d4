"""The prober's self-doubt with hysteresis, as a closed loop: a fleet of health loops shares
one :class:`Doubt`; each round's verdict freezes (or not) what the next round sees.

What a user would notice before the fix (a 20-server steady-state run on a loaded machine):
doubt flipped on and off every few seconds, every flip posted a ``ProberDoubt`` or
``ProberTrusted`` Event on every server, and the rounds between flips counted their
timeouts into breakers and status -- 3 Events/s and 1.3 status writes/s with nothing changed.
"""

from __future__ import annotations

import random

from mcp_operator.health.doubt import Doubt, DoubtSettings, RoundReport
from tests.unit.health_sim import FakePorts, Operator, World, server, set_tier


def test_doubt_starts_at_once_and_ends_only_after_clear_s_without_the_condition() -> None:
    doubt = Doubt(DoubtSettings(clear_s=10.0))
    rng = random.Random(7)
    servers = [f"s{i}" for i in range(10)]
    flips: list[tuple[float, bool]] = []
    state = False
    last_bad = None
    at = 100.0
    # 60 s of a loaded machine: each round 40-80 % of the servers see timeouts, so the raw
    # condition (>= 55 %) holds in some rounds and not in others.
    while at < 160.0:
        share = rng.choice([0.4, 0.5, 0.6, 0.8])
        for name in servers:
            failing = rng.random() < share
            doubt.report(RoundReport(name, at, probes=2, suspect=2 if failing else 0))
            now = doubt.verdict(at) is not None
            if now != state:
                flips.append((at, now))
                state = now
        if doubt._condition(at) is not None:
            last_bad = at
        at += 2.0
    assert [f[1] for f in flips] == [True], flips  # entered once, never left while flapping
    assert flips[0][0] <= 102.0  # fail-static is immediate (first or second round)
    # Then healthy rounds: doubt holds for clear_s after the condition last held, then ends.
    while state:
        for name in servers:
            doubt.report(RoundReport(name, at, probes=2, suspect=0))
            state = doubt.verdict(at) is not None
        at += 2.0
    assert last_bad is not None
    ended = at - 2.0
    assert 10.0 <= ended - last_bad <= 12.0, (last_bad, ended)


def test_one_late_round_is_not_fleet_doubt_but_a_fleet_wide_stall_is() -> None:
    doubt = Doubt()
    for i in range(6):
        doubt.report(RoundReport(f"s{i}", 100.0, probes=2, suspect=0))
    late = RoundReport("s0", 102.0, probes=2, suspect=0, late_s=2.0)
    doubt.report(late)
    assert doubt.round_is_late(late) and doubt.verdict(102.0) is None
    for i in range(6):  # the event loop stalled: every server's round ran late
        doubt.report(RoundReport(f"s{i}", 104.0, probes=2, suspect=0, late_s=2.0))
    assert "ran late" in (doubt.verdict(104.0) or "")


class _Keyed(FakePorts):
    def __init__(self, world: World, name: str) -> None:
        super().__init__(world)
        self.name = name

    @property
    def key(self) -> tuple[str, str]:
        return ("ns", self.name)


def test_a_fleet_of_flapping_timeouts_announces_once_and_writes_nothing() -> None:
    """Closed loop: 8 servers, one shared Doubt; for 40 rounds about half of the servers'
    probes time out each round (a starved machine). Each server posts one ProberDoubt and,
    once probes are fine for clear_s, one ProberTrusted; no status changes, no gate moves,
    no switch in between."""
    shared = Doubt()
    rng = random.Random(3)
    fleet: list[tuple[World, Operator]] = []
    for i in range(8):
        world = World(server())  # failureThreshold 2
        op = Operator(world)
        op.loop.doubt = shared
        op.loop.ports = _Keyed(world, f"s{i}")
        fleet.append((world, op))

    def round_all() -> None:
        for _, op in fleet:
            op.round()

    for _ in range(4):  # settle healthy
        round_all()
    frozen_at: list[int] | None = None
    for _ in range(40):
        share = rng.choice([0.4, 0.6, 0.7])
        for world, _ in fleet:
            set_tier(world, "primary", "timeout" if rng.random() < share else "ok")
            set_tier(world, "backup", "timeout" if rng.random() < share else "ok")
        round_all()
        if frozen_at is None and all(op.loop.doubting for _, op in fleet):
            # The servers that reported before the quorum of failures was reached counted
            # theirs (the inherent lag of detection); from here on nothing may be written.
            frozen_at = [w.changed_writes for w, _ in fleet]
    assert frozen_at is not None
    assert [w.changed_writes for w, _ in fleet] == frozen_at
    for world, _ in fleet:
        set_tier(world, "primary", "ok")
        set_tier(world, "backup", "ok")
    for _ in range(15):  # interval 1 s: > clear_s of healthy rounds
        round_all()
    for world, _ in fleet:
        kinds = [e.reason for e in world.events]
        assert kinds.count("ProberDoubt") == 1 and kinds.count("ProberTrusted") == 1, kinds
        assert world.selector == "primary" and "FailedOver" not in kinds
        assert all(world.gate(n) for n in world.pods)
