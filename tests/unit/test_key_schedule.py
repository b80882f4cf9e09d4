"""The signing-key schedule over simulated months, as a closed loop.

Each round feeds the policy's decision back: the ring it returns is persisted (through the
real Secret codec), the JWKS ConfigMap is "applied" from it, and the next round observes
that ConfigMap. Verifiers see the ConfigMap with a propagation lag smaller than
``publishAhead`` (a kubelet's ConfigMap volume refresh). A client mints a token with the
persisted active key in every round and checks all unexpired tokens against what the
verifiers see. The kill variant crashes the controller at random points between its I/O
steps and re-creates it from the persisted Secret only.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mcp_operator.keys import keygen, store
from mcp_operator.keys.schedule import (
    KeyRing,
    Requests,
    Settings,
    decide,
    next_deadline,
    next_rotation,
)

START = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = Settings(
    algorithm="ES256",
    every=timedelta(days=7),
    publish_ahead=timedelta(minutes=10),
    token_ttl=timedelta(hours=1),
    leeway=timedelta(seconds=30),
)
NO_REQUESTS = Requests()
LAG = timedelta(minutes=2)  # verifier propagation, < publishAhead


@dataclass
class Token:
    kid: str
    signed: datetime
    exp: datetime
    exempt: bool  # signed by a key that, by design, was not published ahead (first key)


@dataclass
class World:
    """The cluster: the Secret (persisted), the ConfigMap history, tokens out there."""

    rng: random.Random
    secret: dict[str, str] | None = None
    jwks_history: list[tuple[datetime, frozenset[str]]] = field(default_factory=list)
    tokens: list[Token] = field(default_factory=list)
    activations: dict[str, datetime] = field(default_factory=dict)
    exempt_kids: set[str] = field(default_factory=set)
    events: list[str] = field(default_factory=list)

    def live_kids(self) -> frozenset[str]:
        return self.jwks_history[-1][1] if self.jwks_history else frozenset()

    def verifier_view(self, now: datetime) -> frozenset[str]:
        seen: frozenset[str] = frozenset()
        for when, kids in self.jwks_history:
            if when <= now - LAG:
                seen = kids
        return seen

    def persisted(self) -> tuple[KeyRing, dict[str, keygen.KeyMaterial]]:
        if self.secret is None:
            return KeyRing(), {}
        text = self.secret[store.DATA_KEY]
        if text not in _DECODED:  # decoding loads every PEM: memoised for speed
            _DECODED.clear()
            _DECODED[text] = store.decode(self.secret)
        return _DECODED[text]


_DECODED: dict[str, tuple[KeyRing, dict[str, keygen.KeyMaterial]]] = {}


class Controller:
    """The I/O steps of the real controller, with a crash possible between any two."""

    def __init__(self, world: World, crash_p: float = 0.0) -> None:
        self.world = world
        self.crash_p = crash_p
        self.ring, self.materials = world.persisted()  # resume from the cluster only

    def _crash(self) -> bool:
        return self.world.rng.random() < self.crash_p

    def step(self, now: datetime, requests: Requests = NO_REQUESTS) -> bool:
        """One pass; returns False when the process "died" during it."""
        fresh: dict[str, keygen.KeyMaterial] = {}

        def new_kid(alg: keygen.Algorithm) -> str:
            material = keygen.generate(alg)
            fresh[material.kid] = material
            return material.kid

        plan = decide(self.ring, SETTINGS, now, self.world.live_kids(), requests, new_kid)
        if self._crash():
            return False
        materials = {**self.materials, **fresh}
        materials = {k: v for k, v in materials.items() if k in plan.ring.kids()}
        if plan.ring != self.ring:
            self.world.secret = store.encode(plan.ring, materials)
        self.ring, self.materials = plan.ring, materials
        for event in plan.events:
            if event.reason == "KeyActivated":
                self.world.exempt_kids.add(plan.ring.active.kid if plan.ring.active else "")
            self.world.events.append(event.reason)
        if self._crash():
            return False
        kids = frozenset(plan.ring.kids())
        if kids != self.world.live_kids():
            self.world.jwks_history.append((now, kids))
        return True


def check(world: World, now: datetime) -> None:
    ring, _ = world.persisted()
    assert sum(1 for k in ring.keys if k.phase == "active") <= 1, "two active keys"
    active = ring.active
    if active is not None:
        world.activations.setdefault(active.kid, now)
        if active.kid not in world.exempt_kids:
            assert active.published is not None
            assert active.activated is not None
            assert active.activated - active.published >= SETTINGS.publish_ahead
            # the first token of the key must verify everywhere at once
            assert active.kid in world.verifier_view(now), "active key not yet seen by verifiers"
        world.tokens.append(
            Token(active.kid, now, now + SETTINGS.token_ttl, active.kid in world.exempt_kids)
        )
    world.tokens = [t for t in world.tokens if t.exp + SETTINGS.leeway > now]
    view = world.verifier_view(now)
    for token in world.tokens:
        if token.exempt and token.signed < world.activations[token.kid] + LAG:
            continue
        assert token.kid in view, f"an unexpired token of {token.kid} fails at {now}"
        assert token.kid in ring.kids(), "a key was dropped while its tokens are valid"


def simulate(seed: int, days: int, crash_p: float, requests_p: float = 0.0) -> World:
    rng = random.Random(seed)
    world = World(rng)
    controller = Controller(world, crash_p)
    now = START
    restarts = 0
    while now < START + timedelta(days=days):
        requests = Requests()
        if rng.random() < requests_p:
            requests = Requests(rotate=now.isoformat())
        if not controller.step(now, requests):
            restarts += 1
            controller = Controller(world, crash_p)  # a restarted operator
        check(world, now)
        deadline = next_deadline(controller.ring, SETTINGS)
        step = timedelta(seconds=rng.uniform(1, 900))
        if deadline is not None and now < deadline < now + step and rng.random() < 0.5:
            step = deadline - now
        now += step
    assert crash_p == 0 or restarts > 20
    return world


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_three_months_of_scheduled_rotation(seed: int) -> None:
    world = simulate(seed, days=90, crash_p=0.0)
    ring, _ = world.persisted()
    assert 12 <= ring.rotations <= 14  # every 7 days over 90, plus the first key
    assert world.events.count("KeyRotated") == ring.rotations - 1
    assert "KeyRemoved" in world.events
    assert len(ring.keys) <= 3  # retired keys really leave the JWKS


@pytest.mark.parametrize("seed", range(4, 10))
def test_killed_at_random_points_never_loses_keys(seed: int) -> None:
    """Crashes between decide, the Secret write and the ConfigMap apply: every check of
    :func:`check` still holds, with dozens of restarts per simulated month."""
    world = simulate(seed, days=30, crash_p=0.05)
    ring, _ = world.persisted()
    assert ring.rotations >= 4


def test_manual_rotations_keep_the_overlap() -> None:
    world = simulate(11, days=20, crash_p=0.02, requests_p=0.01)
    assert "RotationRequested" in world.events
    ring, _ = world.persisted()
    assert ring.rotations > 6  # more than the schedule alone would do


_KIDS = iter(range(10**6))


def _run(
    ring: KeyRing, now: datetime, live: frozenset[str], req: Requests = NO_REQUESTS
) -> KeyRing:
    return decide(ring, SETTINGS, now, live, req, lambda alg: f"k{next(_KIDS)}").ring


def test_first_key_signs_at_once_then_next_key_waits_for_publication() -> None:
    ring = _run(KeyRing(), START, frozenset())
    assert ring.active is not None and ring.rotations == 1
    first = ring.active.kid
    later = START + SETTINGS.every - SETTINGS.publish_ahead
    ring = _run(ring, later, frozenset({first}))
    assert ring.next is not None and ring.next.published is None
    # not seen in the ConfigMap: never activates, however late
    stuck = _run(ring, later + timedelta(days=3), frozenset({first}))
    assert stuck.active is not None and stuck.active.kid == first
    seen = _run(ring, later + timedelta(seconds=5), frozenset({first, ring.next.kid}))
    assert seen.next is not None and seen.next.published is not None
    rotated = _run(seen, later + timedelta(seconds=5) + SETTINGS.publish_ahead, frozenset())
    assert rotated.active is not None and rotated.active.kid == ring.next.kid
    assert next_rotation(rotated, SETTINGS) == rotated.active.activated + SETTINGS.every


def test_revoking_the_active_key_activates_another_at_once() -> None:
    ring = _run(KeyRing(), START, frozenset())
    kid = ring.active.kid if ring.active else ""
    plan = decide(ring, SETTINGS, START, frozenset({kid}), Requests(revoke_kid=kid), lambda a: "n")
    assert kid not in plan.ring.kids() and plan.ring.active is not None
    assert plan.ring.active.kid == "n"
    assert [e.reason for e in plan.events] == ["KeyRevoked", "KeyActivated"]
    assert all(e.warning for e in plan.events)
    again = decide(plan.ring, SETTINGS, START, frozenset(), Requests(revoke_kid=kid), lambda a: "x")
    assert again.ring.active is not None and again.ring.active.kid == "n"  # processed once


def test_algorithm_change_rotates_with_overlap() -> None:
    ring = _run(KeyRing(), START, frozenset())
    other = Settings(**{**SETTINGS.__dict__, "algorithm": "EdDSA"})
    plan = decide(ring, other, START, frozenset(), Requests(), lambda a: "ed")
    assert plan.ring.next is not None and plan.ring.next.alg == "EdDSA"
    assert plan.ring.active is not None and plan.ring.active.alg == "ES256"


def test_garbage_secret_is_unreadable_not_replaced() -> None:
    for data in ({}, {"keyring.json": "!!"}, {"keyring.json": "eyJ2ZXJzaW9uIjogMX0="}):
        with pytest.raises(store.UnreadableKeys) as info:
            store.decode(data)
        assert "PRIVATE" not in str(info.value)
