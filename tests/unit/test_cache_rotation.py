"""The cache password rotation (keys/cacherotation.py) as a closed loop.

A small simulated world: the Secret (the persisted state), a Redis that accepts a set of
password hashes, two tiers of pods that read the Secret's password when they start (seeing
it up to ``propagation`` late, as a kubelet's cache may) and authenticate every tick. Each
round the edge does what the real loop does — read the state, make Redis accept what the
state says, observe, decide, write, render the tiers' stamps — and may be killed between any
two of those steps. Redis may restart at any moment and then accepts what its ACL file
says -- the file as rendered into ``NAME-cache-config``, seen through a Secret volume up to
``propagation`` late. The world's clients count every refused authentication.
"""

from __future__ import annotations

import contextlib
import itertools
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mcp_operator.keys import cacherotation as rot
from mcp_operator.keys.cacherotation import Observed, Settings, State

T0 = datetime(2026, 1, 1, tzinfo=UTC)
TICK = timedelta(seconds=5)


class Killed(Exception):
    pass


@dataclass
class Pod:
    stamp: str  # the template's credential stamp it was created from
    held: str  # the password (hash) it read at start
    ready_at: datetime


@dataclass
class Tier:
    replicas: int
    stamp: str = ""
    pods: list[Pod] = field(default_factory=list)

    def rolled(self, now: datetime) -> bool:
        return len(self.pods) == self.replicas and all(
            p.stamp == self.stamp and p.ready_at <= now for p in self.pods
        )


@dataclass
class World:
    settings: Settings
    rng: random.Random
    now: datetime = T0
    counter: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    state: State = field(default_factory=lambda: State(current="h0", last_rotation=T0))
    history: list[tuple[datetime, str]] = field(default_factory=lambda: [(T0, "h0")])
    live: set[str] = field(default_factory=lambda: {"h0"})
    tiers: dict[str, Tier] = field(default_factory=dict)
    failures: int = 0
    auths: int = 0
    events: list[str] = field(default_factory=list)
    request: str | None = None
    max_live: int = 1
    kills: int = 0
    step: timedelta = TICK
    files: list[tuple[datetime, frozenset[str]]] = field(
        default_factory=lambda: [(T0, frozenset({"h0"}))]
    )
    restart_rate: float = 0.0
    restarts: int = 0
    active: rot.Tier | None = None  # status.activeTier
    restamped: list[str] = field(default_factory=list)  # tiers, in the order they rolled

    def __post_init__(self) -> None:
        for name, replicas in (("primary", 2), ("backup", 1)):
            tier = Tier(replicas, stamp="h0")
            tier.pods = [Pod("h0", "h0", T0) for _ in range(replicas)]
            self.tiers[name] = tier

    def secret_seen(self, lag: timedelta) -> str:
        """The Secret's password as a kubelet cache ``lag`` behind saw it."""
        at = self.now - lag
        seen = self.history[0][1]
        for when, value in self.history:
            if when <= at:
                seen = value
        return seen

    def file_seen(self, lag: timedelta) -> frozenset[str]:
        """The stored ACL file as a kubelet ``lag`` behind synced it to the Redis pod."""
        at, seen = self.now - lag, self.files[0][1]
        for when, value in self.files:
            if when <= at:
                seen = value
        return seen

    def render_file(self, hashes: frozenset[str]) -> None:
        if hashes != self.files[-1][1]:
            self.files.append((self.now, hashes))

    def write(self, state: State) -> None:
        if state.current != self.state.current:
            self.history.append((self.now, state.current))
        self.state = state

    def new_hash(self) -> str:
        return f"h{next(self.counter)}"

    # -- the world moves ------------------------------------------------------------------

    def tick(self) -> None:
        self.now += self.step
        if self.rng.random() < self.restart_rate:  # Redis restarts from its (lagging) file
            self.restarts += 1
            self.live = set(self.file_seen(self.settings.propagation * self.rng.random()))
        for tier in self.tiers.values():
            self._roll_one(tier)
            if self.rng.random() < 0.002 and tier.pods:  # a pod crashes and is replaced
                gone = tier.pods.pop(self.rng.randrange(len(tier.pods)))
                tier.pods.append(self._start(gone.stamp))
            for pod in tier.pods:
                self.auths += 1
                if pod.held not in self.live:
                    self.failures += 1

    def _start(self, stamp: str) -> Pod:
        lag = self.settings.propagation * self.rng.random()
        return Pod(stamp, self.secret_seen(lag), self.now + self.step * self.rng.randint(1, 3))

    def _roll_one(self, tier: Tier) -> None:
        """A rolling update: one old pod replaced per tick (surge 1, then delete)."""
        old = [p for p in tier.pods if p.stamp != tier.stamp]
        if old:
            tier.pods.remove(old[0])
            tier.pods.append(self._start(tier.stamp))

    # -- the operator's edge, killable between steps ----------------------------------------

    def edge(self, kill_at: int | None = None, stale_render: bool = False) -> None:
        step = itertools.count()

        def point() -> None:
            if next(step) == kill_at:
                self.kills += 1
                raise Killed

        state = self.state  # read from the Secret
        point()
        wanted = rot.accepted(state)
        for h in sorted(wanted - self.live):  # add first ...
            self.live.add(h)
            self.max_live = max(self.max_live, len(self.live))
            point()
        for h in sorted(self.live - wanted):  # ... then remove
            self.live.discard(h)
            point()
        assert state.current in self.live
        seen = Observed(
            live=frozenset(self.live),
            backup_rolled=self._rolled("backup", state),
            primary_rolled=self._rolled("primary", state),
            request=self.request,
            file=self.files[-1][1],
            active=self.active,
        )
        plan = rot.decide(state, self.settings, self.now, seen, self.new_hash)
        point()
        self.write(plan.state)
        self.events += [e.reason for e in plan.events]
        point()
        rendered = state if stale_render else plan.state  # a reconcile that read it earlier
        self.render_file(rot.accepted(rendered))
        for name, tier in self.tiers.items():
            stamp = rot.tier_hash(rendered, name)  # type: ignore[arg-type]
            if stamp != tier.stamp:
                self.restamped.append(name)
            tier.stamp = stamp

    def _rolled(self, name: str, state: State) -> bool:
        tier = self.tiers[name]
        return tier.stamp == rot.tier_hash(state, name) and tier.rolled(self.now)  # type: ignore[arg-type]


def run(world: World, until: datetime, kill_rate: float = 0.0, stale_rate: float = 0.0) -> None:
    while world.now < until:
        kill = world.rng.randrange(8) if world.rng.random() < kill_rate else None
        with contextlib.suppress(Killed):
            world.edge(kill, stale_render=world.rng.random() < stale_rate)
        world.tick()
        check_invariants(world)


def check_invariants(world: World) -> None:
    state = world.state
    assert state.current in world.live or state.phase == "Stable"
    assert len(rot.accepted(state)) <= 2
    # Once both tiers run the new password no pod holds the retired one.
    if state.phase == "Removing":
        held = {p.held for t in world.tiers.values() for p in t.pods}
        assert held == {state.current}, (state, held)


def test_months_of_weekly_rotations_never_refuse_a_client() -> None:
    settings = Settings(every=timedelta(days=7), propagation=timedelta(minutes=2))
    world = World(settings, random.Random(1), step=timedelta(minutes=1))
    run(world, T0 + timedelta(days=92))
    # every 7 days after the previous rotation completed (each takes some minutes)
    assert world.state.rotations == 13
    assert world.failures == 0 and world.auths > 390_000
    assert world.max_live == 2  # never more than two passwords at once
    assert world.events.count("CachePasswordRotated") == 13
    # every pod now holds the newest password and Redis accepts only it
    assert world.live == {world.state.current}
    assert {p.held for t in world.tiers.values() for p in t.pods} == {world.state.current}
    # one full walk per rotation, in order
    walk = ["CachePasswordAdding", "CachePasswordSwitched", "CachePasswordRolling",
            "CachePasswordRolling", "CachePasswordRemoving", "CachePasswordRotated"]  # fmt: skip
    assert world.events == walk * 13


@pytest.mark.parametrize("seed", range(6))
def test_kills_at_random_points_and_stale_renders_never_refuse_a_client(seed: int) -> None:
    settings = Settings(every=timedelta(minutes=10), propagation=timedelta(seconds=30))
    world = World(settings, random.Random(seed))
    run(world, T0 + timedelta(days=2), kill_rate=0.3, stale_rate=0.2)
    assert world.kills > 1000
    assert world.failures == 0
    assert world.state.rotations >= 230
    assert world.max_live == 2


@pytest.mark.parametrize("phase", rot.PHASES)
@pytest.mark.parametrize("kill_at", range(5))
def test_a_kill_at_every_step_of_every_phase_resumes(phase: str, kill_at: int) -> None:
    """Walk to ``phase``, kill the edge at step ``kill_at`` of that round, then let it run:
    the rotation completes, nothing was refused, Redis ends with the new password only."""
    settings = Settings(every=timedelta(minutes=10), propagation=timedelta(seconds=30))
    world = World(settings, random.Random(kill_at))
    while world.state.phase != phase or world.now < T0 + timedelta(minutes=10):
        world.edge()
        world.tick()
    start = world.state.rotations
    try:
        world.edge(kill_at)
    except Killed:
        killed = True
    else:  # a round has 3 kill points plus one per Redis change it makes
        killed = False
    assert killed or kill_at >= 3
    world.tick()
    run(world, world.now + timedelta(minutes=9))
    assert world.failures == 0
    # Stable at the due time: the rotation starts after the kill; else it completes
    assert world.state.rotations == start + 1 and world.state.phase == "Stable"
    assert world.live == {world.state.current}


def test_a_manual_request_rotates_once_even_when_the_schedule_is_off() -> None:
    settings = Settings(every=None, propagation=timedelta(seconds=10))
    world = World(settings, random.Random(3))
    run(world, T0 + timedelta(days=3))
    assert world.state.rotations == 0 and rot.next_due(world.state, settings) is None
    world.request = "2026-01-04T00:00:00Z"
    run(world, world.now + timedelta(hours=1))
    assert world.state.rotations == 1 and world.state.last_request == world.request
    assert world.failures == 0
    run(world, world.now + timedelta(hours=1))  # the same request is not processed again
    assert world.state.rotations == 1


def test_redis_unreachable_holds_the_rotation_before_anything_uses_the_new_password() -> None:
    settings = Settings(every=timedelta(minutes=1), propagation=timedelta(seconds=1))
    state = State(current="a", last_rotation=T0)
    later = T0 + timedelta(minutes=2)
    plan = rot.decide(state, settings, later, Observed(), lambda: "b")
    assert plan.state.phase == "Adding" and plan.state.next == "b"
    assert rot.tier_hash(plan.state, "primary") == "a" == rot.tier_hash(plan.state, "backup")
    for _ in range(3):  # no live observation: no progress, the Secret's password unchanged
        plan = rot.decide(plan.state, settings, later, Observed(live=None), lambda: "c")
        assert plan.state.phase == "Adding" and plan.state.current == "a"
    only_old = Observed(live=frozenset({"a"}))
    assert rot.decide(plan.state, settings, later, only_old, lambda: "c").state.phase == "Adding"


def test_a_stuck_backup_tier_keeps_both_passwords() -> None:
    settings = Settings(every=timedelta(minutes=1), propagation=timedelta(seconds=0))
    state = State(current="b", previous="a", phase="RollingBackup", since=T0, last_rotation=T0)
    for minutes in range(1, 60):
        now = T0 + timedelta(minutes=minutes)
        seen = Observed(live=frozenset({"a", "b"}), primary_rolled=True)
        plan = rot.decide(state, settings, now, seen, lambda: "c")
        assert plan.state == state and rot.accepted(plan.state) == {"a", "b"}
    assert rot.describe(state).startswith("waiting for the backup tier")


def test_state_functions() -> None:
    base = State(current="b", previous="a", last_rotation=T0)
    settings = Settings(every=timedelta(hours=1), propagation=timedelta(seconds=30))
    stamps = {
        p: (rot.tier_hash(replace_phase(base, p), "backup"),
            rot.tier_hash(replace_phase(base, p), "primary"))
        for p in ("Propagating", "RollingBackup", "RollingPrimary", "Removing")
    }  # fmt: skip
    assert stamps == {
        "Propagating": ("a", "a"),
        "RollingBackup": ("b", "a"),
        "RollingPrimary": ("b", "b"),
        "Removing": ("b", "b"),
    }
    assert rot.accepted(replace_phase(base, "Removing")) == {"b"}
    assert rot.next_due(State(current="x", last_rotation=T0), settings) == T0 + timedelta(hours=1)
    assert rot.next_due(replace_phase(base, "Propagating"), settings) is None
    propagating = State(current="b", previous="a", phase="Propagating", since=T0)
    assert rot.deadline(propagating, settings) == T0 + timedelta(seconds=30)


def replace_phase(state: State, phase: rot.Phase) -> State:
    from dataclasses import replace

    return replace(state, phase=phase, since=T0)


@pytest.mark.parametrize("seed", range(4))
def test_redis_restarting_from_its_lagging_file_at_any_moment_never_refuses_a_client(
    seed: int,
) -> None:
    """Redis restarts at random (about every 10 minutes) and loads its ACL file as a
    kubelet up to ``propagation`` late synced it; the operator is killed and renders stale
    meanwhile. The password is only switched once the file has carried the new hash for
    ``propagation``, so no restart ever loads a file without a password some pod holds."""
    settings = Settings(every=timedelta(minutes=10), propagation=timedelta(seconds=30))
    world = World(settings, random.Random(100 + seed), restart_rate=0.01)
    run(world, T0 + timedelta(days=1), kill_rate=0.2, stale_rate=0.2)
    assert world.restarts > 100
    assert world.state.rotations >= 100
    assert world.failures == 0


def test_adding_waits_for_the_stored_file_and_its_kubelet_sync() -> None:
    """Closed loop on the decision alone: live Redis accepts both passwords at once, but the
    switch waits for the stored file to list the new hash and then ``propagation``."""
    settings = Settings(every=timedelta(minutes=1), propagation=timedelta(seconds=90))
    state = State(current="h0", phase="Adding", since=T0, next="h1")
    both = frozenset({"h0", "h1"})
    now, switched_at = T0, None
    for second in range(0, 300, 5):
        now = T0 + timedelta(seconds=second)
        file = frozenset({"h0"}) if second < 60 else both  # rendered at 60 s
        plan = rot.decide(state, settings, now, Observed(live=both, file=file), lambda: "x")
        state = plan.state
        if state.phase == "Propagating" and switched_at is None:
            switched_at = now
    assert switched_at == T0 + timedelta(seconds=150)
    # a file re-rendered without the new hash restarts the allowance
    adding = State(current="h0", phase="Adding", since=T0, next="h1", file_since=T0)
    plan = rot.decide(
        adding, settings, T0 + timedelta(hours=1), Observed(both, file=frozenset({"h0"})), str
    )
    assert plan.state.phase == "Adding" and plan.state.file_since is None


def test_a_stuck_tier_is_reported_stalled_after_the_bound_and_clears_when_it_rolls() -> None:
    """Closed loop: a backup tier that never becomes ready holds the rotation (both
    passwords valid); past the bound it is reported stalled; once it rolls the rotation moves
    on and is no longer stalled."""
    settings = Settings(every=timedelta(hours=1), propagation=timedelta(seconds=30))
    assert rot.stall_bound(settings) == timedelta(minutes=15)
    assert rot.stall_bound(Settings(None, timedelta(minutes=10))) == timedelta(minutes=30)
    state = State(current="b", previous="a", phase="RollingBackup", since=T0, last_rotation=T0)
    stalled_from = None
    for minutes in range(1, 40):
        now = T0 + timedelta(minutes=minutes)
        seen = Observed(live=frozenset({"a", "b"}), backup_rolled=minutes >= 30)
        state = rot.decide(state, settings, now, seen, lambda: "c").state
        if rot.stalled(state, settings, now) and stalled_from is None:
            stalled_from = minutes
        if minutes >= 30:
            assert state.phase == "RollingPrimary" and not rot.stalled(state, settings, now)
    assert stalled_from == 16
    assert not rot.stalled(State(current="a", since=T0), settings, T0 + timedelta(days=9))


@pytest.mark.parametrize(("active", "order"), [(None, ["backup", "primary"]),
                                               ("primary", ["backup", "primary"]),
                                               ("backup", ["primary", "backup"])])  # fmt: skip
def test_the_tier_not_serving_rolls_first(active: rot.Tier | None, order: list[str]) -> None:
    """After a failover the backup tier serves: the primary tier rolls first, so the serving
    tier is only touched once the other runs the new password, ready."""
    settings = Settings(every=timedelta(minutes=10), propagation=timedelta(seconds=30))
    world = World(settings, random.Random(3), active=active)
    run(world, T0 + timedelta(minutes=45))
    assert world.state.rotations >= 2 and world.failures == 0
    assert world.restamped == order * world.state.rotations
