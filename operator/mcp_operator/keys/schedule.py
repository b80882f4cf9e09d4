"""The signing-key schedule as a pure policy: ring + clock + observations → the next ring.

Publish → activate → retire → remove, the pattern of SPIRE, Keycloak and the Kubernetes
service-account issuer:

* a new key is created ``publishAhead`` before the rotation is due and goes into the JWKS;
* it is *published* only once the live JWKS ConfigMap is seen to contain it (an observation,
  so a crash between writing the Secret and the ConfigMap cannot fake a publication);
* it signs (becomes active) no earlier than ``publishAhead`` after that, so every verifier
  has re-read the JWKS before the first token of the new key reaches it;
* the old key stops signing at that same instant (never two active keys) and stays in the
  JWKS for ``tokenTTL + leeway`` after its last signature (the largest seen while it was
  active), so every token it signed verifies until it expires; then it is removed.

Emergencies break the publish-ahead rule on purpose and say so in an event: the very first
key (nothing to protect yet), a revoked active key, a deleted Secret. No I/O, no randomness:
new ``kid``s come from an injected generator, time from the caller.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Literal

Phase = Literal["next", "active", "retiring"]
# The schedule only compares algorithms for equality: the signing keys use JWS names
# (ES256, EdDSA, RS256), the data-encryption keyring (keys.datakeys) uses "A256GCM".
Algorithm = str
RotationKind = Literal["scheduled", "manual", "algorithm", "emergency", "initial"]
MAX_REVOKED_REMEMBERED = 20


@dataclass(frozen=True)
class Settings:
    """The parts of ``spec.auth`` the schedule reads, as timedeltas."""

    algorithm: Algorithm
    every: timedelta
    publish_ahead: timedelta
    token_ttl: timedelta
    leeway: timedelta

    @property
    def hold(self) -> timedelta:
        """How long a key must stay published after its last signature."""
        return self.token_ttl + self.leeway


@dataclass(frozen=True)
class KeyRecord:
    """One key's life; the private material lives beside it in the Secret, not here."""

    kid: str
    alg: Algorithm
    created: datetime
    published: datetime | None = None
    activated: datetime | None = None
    retired: datetime | None = None
    hold: timedelta = timedelta(0)

    @property
    def phase(self) -> Phase:
        if self.activated is None:
            return "next"
        return "active" if self.retired is None else "retiring"

    @property
    def remove_at(self) -> datetime | None:
        return None if self.retired is None else self.retired + self.hold


@dataclass(frozen=True)
class KeyRing:
    """The whole persisted schedule state."""

    keys: tuple[KeyRecord, ...] = ()
    rotations: int = 0
    last_rotation: datetime | None = None
    rotate_due: datetime | None = None  # set by a manual request, cleared by the rotation
    last_rotate_request: str | None = None
    last_revoke_request: str | None = None
    revoked: tuple[str, ...] = ()

    def find(self, phase: Phase) -> KeyRecord | None:
        return next((k for k in self.keys if k.phase == phase), None)

    @property
    def active(self) -> KeyRecord | None:
        return self.find("active")

    @property
    def next(self) -> KeyRecord | None:
        return self.find("next")

    def kids(self) -> list[str]:
        return [k.kid for k in self.keys]


@dataclass(frozen=True)
class Requests:
    """Imperative annotations as currently set (processed values are in the ring)."""

    rotate: str | None = None
    revoke_kid: str | None = None


@dataclass(frozen=True)
class Event:
    """Something a human should hear about; ``warning`` events are the bad news."""

    reason: str
    message: str
    warning: bool = False
    rotation: RotationKind | None = None


@dataclass
class Plan:
    """The outcome of one decision: the new ring and what to announce."""

    ring: KeyRing
    events: list[Event] = field(default_factory=list)


NewKid = Callable[[Algorithm], str]


def due(ring: KeyRing, settings: Settings) -> datetime | None:
    """When the active key should hand over: the schedule, a manual request or an
    algorithm change, whichever is first."""
    active = ring.active
    if active is None or active.activated is None:
        return None
    candidates = [active.activated + settings.every]
    if ring.rotate_due is not None:
        candidates.append(ring.rotate_due)
    if active.alg != settings.algorithm:
        candidates.append(active.activated)
    return min(candidates)


def decide(
    ring: KeyRing,
    settings: Settings,
    now: datetime,
    live_kids: frozenset[str],
    requests: Requests,
    new_kid: NewKid,
) -> Plan:
    """One level-based step. Feeding the result back with later observations converges;
    calling it twice with the same inputs changes nothing the second time."""
    plan = Plan(ring)
    _revoke(plan, settings, now, requests, new_kid)
    _ensure_active(plan, settings, now, new_kid)
    _mark_published(plan, now, live_kids)
    _manual_request(plan, now, requests)
    _prepare_next(plan, settings, now, new_kid)
    _rotate(plan, settings, now)
    _hold_while_active(plan, settings)
    _remove_expired(plan, now)
    return plan


def _set(plan: Plan, **changes: object) -> None:
    plan.ring = replace(plan.ring, **changes)  # type: ignore[arg-type]


def _replace_key(plan: Plan, kid: str, **changes: object) -> None:
    keys = tuple(replace(k, **changes) if k.kid == kid else k for k in plan.ring.keys)  # type: ignore[arg-type]
    _set(plan, keys=keys)


def _revoke(
    plan: Plan, settings: Settings, now: datetime, requests: Requests, new_kid: NewKid
) -> None:
    kid = requests.revoke_kid
    if not kid or kid == plan.ring.last_revoke_request:
        return
    _set(plan, last_revoke_request=kid)
    victim = next((k for k in plan.ring.keys if k.kid == kid), None)
    if victim is None:
        plan.events.append(Event("RevokeIgnored", f"kid {kid} is not published", warning=True))
        return
    revoked = (*plan.ring.revoked, kid)[-MAX_REVOKED_REMEMBERED:]
    _set(plan, keys=tuple(k for k in plan.ring.keys if k.kid != kid), revoked=revoked)
    plan.events.append(
        Event("KeyRevoked", f"kid {kid} ({victim.phase}) removed from the JWKS", warning=True)
    )
    if victim.phase == "active":
        _activate_now(plan, settings, now, new_kid, "emergency", "the active key was revoked")


def _ensure_active(plan: Plan, settings: Settings, now: datetime, new_kid: NewKid) -> None:
    if plan.ring.active is not None:
        return
    first = not plan.ring.keys and plan.ring.rotations == 0
    kind: RotationKind = "initial" if first else "emergency"
    why = "first signing key" if first else "no active signing key"
    _activate_now(plan, settings, now, new_kid, kind, why)


def _activate_now(
    plan: Plan,
    settings: Settings,
    now: datetime,
    new_kid: NewKid,
    kind: RotationKind,
    why: str,
) -> None:
    """Sign with a key at once: the newest pending key if any, else a fresh one."""
    pending = plan.ring.next
    if pending is None or pending.alg != settings.algorithm:
        pending = KeyRecord(new_kid(settings.algorithm), settings.algorithm, created=now)
        _set(plan, keys=(*plan.ring.keys, pending))
    _replace_key(plan, pending.kid, activated=now, hold=settings.hold)
    _count_rotation(plan, now)
    warning = kind == "emergency"
    message = f"kid {pending.kid} signs now ({why}); not published ahead"
    plan.events.append(Event("KeyActivated", message, warning=warning, rotation=kind))


def _count_rotation(plan: Plan, now: datetime) -> None:
    _set(plan, rotations=plan.ring.rotations + 1, last_rotation=now, rotate_due=None)


def _mark_published(plan: Plan, now: datetime, live_kids: frozenset[str]) -> None:
    for key in plan.ring.keys:
        if key.published is None and key.kid in live_kids:
            _replace_key(plan, key.kid, published=now)
            plan.events.append(Event("KeyPublished", f"kid {key.kid} is in the JWKS"))


def _manual_request(plan: Plan, now: datetime, requests: Requests) -> None:
    value = requests.rotate
    if not value or value == plan.ring.last_rotate_request:
        return
    _set(plan, last_rotate_request=value, rotate_due=now)
    plan.events.append(Event("RotationRequested", f"manual rotation requested ({value})"))


def _prepare_next(plan: Plan, settings: Settings, now: datetime, new_kid: NewKid) -> None:
    when = due(plan.ring, settings)
    pending = plan.ring.next
    if pending is not None and pending.alg != settings.algorithm:
        _set(plan, keys=tuple(k for k in plan.ring.keys if k.kid != pending.kid))
        pending = None
    if when is None or pending is not None or now < when - settings.publish_ahead:
        return
    key = KeyRecord(new_kid(settings.algorithm), settings.algorithm, created=now)
    _set(plan, keys=(*plan.ring.keys, key))


def _rotate(plan: Plan, settings: Settings, now: datetime) -> None:
    when, active, pending = due(plan.ring, settings), plan.ring.active, plan.ring.next
    if when is None or active is None or pending is None or pending.published is None:
        return
    if now < when or now < pending.published + settings.publish_ahead:
        return
    kind: RotationKind = "scheduled"
    if plan.ring.rotate_due is not None and plan.ring.rotate_due <= when:
        kind = "manual"
    elif active.alg != settings.algorithm:
        kind = "algorithm"
    _replace_key(plan, active.kid, retired=now)
    _replace_key(plan, pending.kid, activated=now, hold=settings.hold)
    _count_rotation(plan, now)
    message = f"kid {pending.kid} signs now; kid {active.kid} retires ({kind} rotation)"
    plan.events.append(Event("KeyRotated", message, rotation=kind))


def _hold_while_active(plan: Plan, settings: Settings) -> None:
    """The active key remembers the longest TTL + leeway it may have signed for."""
    active = plan.ring.active
    if active is not None and active.hold < settings.hold:
        _replace_key(plan, active.kid, hold=settings.hold)


def _remove_expired(plan: Plan, now: datetime) -> None:
    for key in plan.ring.keys:
        remove_at = key.remove_at
        if remove_at is not None and now >= remove_at:
            _set(plan, keys=tuple(k for k in plan.ring.keys if k.kid != key.kid))
            plan.events.append(Event("KeyRemoved", f"kid {key.kid} left the JWKS"))


def next_deadline(ring: KeyRing, settings: Settings) -> datetime | None:
    """The earliest instant at which :func:`decide` would act without new observations."""
    times: list[datetime] = []
    when = due(ring, settings)
    pending = ring.next
    if when is not None and pending is None:
        times.append(when - settings.publish_ahead)
    if when is not None and pending is not None and pending.published is not None:
        times.append(max(when, pending.published + settings.publish_ahead))
    times += [k.remove_at for k in ring.keys if k.remove_at is not None]
    return min(times) if times else None


def next_rotation(ring: KeyRing, settings: Settings) -> datetime | None:
    """When the next key will start signing, for status and the metric."""
    when = due(ring, settings)
    pending = ring.next
    if when is None or pending is None or pending.published is None:
        return when
    return max(when, pending.published + settings.publish_ahead)
