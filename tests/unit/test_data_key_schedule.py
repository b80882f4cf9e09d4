"""The data-encryption keyring over simulated months, as a closed loop.

Each round feeds the decision back: the shared schedule decides from the ring decoded
from the persisted Secret (the real codec), the new ring is written back, and the next
round observes that Secret. Pods see the Secret with a lag smaller than ``publishAhead``
(a kubelet's Secret volume refresh), each pod its own. Every round a random pod encrypts
and another random pod decrypts with the real helper; stored ciphertexts are re-checked
with a fresh pod every round: they open until their key's retention has passed and are
refused after it. The crash variant kills the controller between its steps and recreates
it from the persisted Secret only.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest

from mcp_operator.auth import datakeys
from mcp_operator.auth.datakeys import DataKey, DecryptError, Keyring
from mcp_operator.keys import datastore
from mcp_operator.keys.schedule import KeyRing, Requests, Settings, decide, next_deadline

START = datetime(2026, 1, 1, tzinfo=UTC)
SETTINGS = Settings(
    algorithm=datastore.ALGORITHM,
    every=timedelta(days=7),
    publish_ahead=timedelta(minutes=10),
    token_ttl=timedelta(days=21),  # retention
    leeway=timedelta(0),
)
NO_REQUESTS = Requests()
LAG = timedelta(minutes=3)  # Secret volume propagation, < publishAhead


@dataclass
class Stored:
    kid: str
    blob: bytes
    aad: bytes
    refused: int = 0  # times checked after its key was removed


@dataclass
class World:
    rng: random.Random
    history: list[tuple[datetime, bytes]] = field(default_factory=list)  # keyring.json writes
    stored: list[Stored] = field(default_factory=list)
    removed_at: dict[str, datetime] = field(default_factory=dict)
    activations: list[str] = field(default_factory=list)
    max_keys: int = 0

    def secret(self) -> dict[str, str] | None:
        if not self.history:
            return None
        return {datakeys.FILE: base64.b64encode(self.history[-1][1]).decode()}

    def persisted(self) -> tuple[KeyRing, dict[str, DataKey]]:
        data = self.secret()
        if data is None:
            return KeyRing(), {}
        if self.history[-1][1] not in _DECODED:  # memoised for speed
            _DECODED.clear()
            _DECODED[self.history[-1][1]] = datastore.decode(data)
        return _DECODED[self.history[-1][1]]

    def pod_view(self, now: datetime, lag: timedelta) -> Keyring | None:
        """What a pod whose volume refreshed ``lag`` ago reads."""
        seen = None
        for when, raw in reversed(self.history):
            if when <= now - lag:
                seen = raw
                break
        if seen is None:
            return None
        if seen not in _PARSED:
            _PARSED[seen] = datakeys.parse(seen)
        return _PARSED[seen]


_PARSED: dict[bytes, Keyring] = {}
_DECODED: dict[bytes, tuple[KeyRing, dict[str, DataKey]]] = {}


class Controller:
    """The real loop's steps (decide → write Secret), with a crash possible between them."""

    def __init__(self, world: World, crash_p: float = 0.0) -> None:
        self.world, self.crash_p = world, crash_p
        self.ring, self.materials = world.persisted()  # resume from the cluster only

    def step(self, now: datetime, requests: Requests = NO_REQUESTS) -> bool:
        fresh: dict[str, DataKey] = {}

        def new_kid(_alg: str) -> str:
            key = datastore.generate()
            fresh[key.kid] = key
            return key.kid

        live = frozenset(self.world.persisted()[1])
        plan = decide(self.ring, SETTINGS, now, live, requests, new_kid)
        if self.world.rng.random() < self.crash_p:
            return False  # died before writing: nothing happened
        materials = {k: v for k, v in {**self.materials, **fresh}.items() if k in plan.ring.kids()}
        if plan.ring != self.ring or not self.world.history:
            self.world.history.append((now, datastore.document(plan.ring, materials)))
        for kid in set(self.ring.kids()) - set(plan.ring.kids()):
            self.world.removed_at[kid] = now
        self.ring, self.materials = plan.ring, materials
        return True


def round_trip(world: World, now: datetime) -> None:
    """Pods seal for each other: the freshest and the stalest possible views (both ways)
    and a random pair, all within LAG of now."""
    rng = world.rng
    for writer_lag, reader_lag in ((0.0, 1.0), (1.0, 0.0), (rng.random(), rng.random())):
        writer = world.pod_view(now, LAG * writer_lag)
        reader = world.pod_view(now, LAG * reader_lag)
        if writer is None or reader is None:
            return  # pods are still ContainerCreating (the volume is not optional)
        aad = f"record:{rng.random()}".encode()
        blob = datakeys.seal(writer.keys[writer.active], b"payload", aad, "records")
        assert datakeys.open_sealed(reader, blob, aad, "records") == b"payload"
    same_key = [s for s in world.stored if s.kid == writer.active]
    if len(same_key) >= 3:  # a bounded sample per key keeps the check cheap
        world.stored.remove(rng.choice(same_key))
    world.stored.append(Stored(writer.active, blob, aad))


def check(world: World, now: datetime) -> None:
    ring, _ = world.persisted()
    assert sum(1 for k in ring.keys if k.phase == "active") == 1, "exactly one active key"
    if not world.activations or world.activations[-1] != ring.active.kid:  # type: ignore[union-attr]
        world.activations.append(ring.active.kid)  # type: ignore[union-attr]
    world.max_keys = max(world.max_keys, len(ring.keys))
    fresh = world.pod_view(now, timedelta(0))
    assert fresh is not None
    for item in world.stored:
        removed = world.removed_at.get(item.kid)
        if removed is None:
            assert datakeys.open_sealed(fresh, item.blob, item.aad, "records") == b"payload"
        else:
            with pytest.raises(DecryptError, match="unknown kid"):
                datakeys.open_sealed(fresh, item.blob, item.aad, "records")
    world.stored = [s for s in world.stored if s.kid not in world.removed_at or s.refused < 3]
    for s in world.stored:
        s.refused += s.kid in world.removed_at


def simulate(days: int, seed: int, crash_p: float = 0.0) -> World:
    world = World(random.Random(seed))
    controller = Controller(world, crash_p)
    now = START
    end = START + timedelta(days=days)
    while now < end:
        if not controller.step(now):
            controller = Controller(world)  # restarted: state from the Secret only
            continue
        check(world, now)
        round_trip(world, now)
        deadline = next_deadline(controller.ring, SETTINGS)
        step = timedelta(minutes=world.rng.uniform(1, 90))
        if deadline is not None and now < deadline < now + step:
            step = deadline - now + timedelta(seconds=world.rng.uniform(0, 30))
        # a pending key is observed in the Secret by the very next pass (~1 s later)
        if any(k.published is None for k in controller.ring.keys):
            step = timedelta(seconds=1)
        now += step
    return world


def test_half_a_year_of_weekly_rotations_every_pod_reads_every_pod() -> None:
    world = simulate(days=182, seed=1)
    # a rotation every 7 days (+ publishAhead slack): ~26, first key included
    assert 25 <= len(world.activations) <= 27, len(world.activations)
    # retention 21 days / rotation 7 days: at most active + next + 3 retained
    assert world.max_keys <= 5, world.max_keys
    assert len(world.removed_at) >= 20


def test_retired_key_decrypts_until_retention_then_is_removed() -> None:
    world = World(random.Random(3))
    controller = Controller(world)
    controller.step(START)
    first = controller.ring.active
    assert first is not None
    blob = datakeys.seal(world.persisted()[1][first.kid], b"old", b"", "records")
    now = START
    retired_at: datetime | None = None
    while first.kid not in world.removed_at:
        now += timedelta(minutes=5)
        controller.step(now)
        record = next((k for k in controller.ring.keys if k.kid == first.kid), None)
        if record is not None and record.retired is not None:
            retired_at = retired_at or record.retired
            assert datakeys.open_sealed(world.pod_view(now, timedelta(0)), blob, b"", "records")  # type: ignore[arg-type]
    assert retired_at is not None
    assert world.removed_at[first.kid] - retired_at >= SETTINGS.token_ttl
    assert world.removed_at[first.kid] - retired_at < SETTINGS.token_ttl + timedelta(minutes=5)


def test_a_new_key_is_mounted_publish_ahead_before_it_encrypts() -> None:
    world = simulate(days=30, seed=5)
    ring, _ = world.persisted()
    for key in ring.keys:
        if key.activated is not None and key.published is not None and key.created != START:
            assert key.activated - key.published >= SETTINGS.publish_ahead


@pytest.mark.parametrize("seed", [11, 12])
def test_crashes_between_steps_lose_nothing(seed: int) -> None:
    world = simulate(days=60, seed=seed, crash_p=0.3)
    assert 8 <= len(world.activations) <= 10, len(world.activations)
    assert world.max_keys <= 5


def test_manual_rotation_request_is_processed_once() -> None:
    world = World(random.Random(7))
    controller = Controller(world)
    controller.step(START)
    first = controller.ring.active
    request = Requests(rotate="2026-01-01T00:05:00Z")
    now = START
    for _ in range(30):
        now += timedelta(minutes=1)
        controller.step(now, request)
    assert controller.ring.active != first and controller.ring.rotations == 2
    assert controller.ring.last_rotate_request == request.rotate
    assert controller.ring.rotate_due is None  # the record closed
