"""The cache (Redis) password rotation as a pure state machine: state + clock + observations
→ the next state. No I/O, no randomness: a new password's hash comes from an injected
generator, time from the caller.

Redis lets one ACL user hold several passwords, so a rotation never has a moment in which a
client's password is refused:

``Stable``
    Redis accepts the current password only.
``Adding``
    A new password is stored in the Secret beside the current one (key ``nextPassword``),
    used by nobody yet. Redis is told to accept it too; the phase ends once the live Redis is
    *seen* to accept both (an observation, so a crash between the Secret write and the
    Redis command cannot fake it) *and* the rendered ACL file (the Secret
    ``NAME-cache-config``, read back) has listed the new hash for ``propagation``: Redis
    reloads that file whenever it restarts, and a kubelet refreshes a Secret volume up to a
    minute or more after the Secret changed. Switching earlier would let a Redis restart
    load a file without the password new pods start with.
``Propagating``
    The Secret's ``password`` is the new one; the old one's hash is kept as ``previous`` and
    Redis still accepts both. Pods starting from now on read the new password; the phase
    waits ``propagation`` for the kubelets' Secret caches before anything is rolled.
``RollingBackup``
    The backup tier's pod template is stamped with the new credential, so it rolls; the
    phase ends when the tier's Deployment runs only new pods, all ready.
``RollingPrimary``
    The same for the primary tier. The tier not serving (``status.activeTier``, seen at the
    switch) rolls first: backup then primary, or after a failover primary then backup.
``Removing``
    Redis is told to forget the old password; the phase ends once the live Redis is seen to
    accept the new password only. Then ``Stable`` again.

What Redis must accept (:func:`accepted`) and what each tier's pods must run
(:func:`tier_hash`) are functions of the state alone, so the I/O edge reconciles both as
levels: after a ``kill -9`` at any point the next pass reads the state back from the Secret
and carries on. The old password is only removed once both tiers run the new one, and the
password in use is never removed: :func:`accepted` always contains ``current``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Literal

Phase = Literal["Stable", "Adding", "Propagating", "RollingBackup", "RollingPrimary", "Removing"]
PHASES: tuple[Phase, ...] = (
    "Stable",
    "Adding",
    "Propagating",
    "RollingBackup",
    "RollingPrimary",
    "Removing",
)
Tier = Literal["primary", "backup"]


@dataclass(frozen=True)
class Settings:
    """``spec.cache.credentialRotation`` as timedeltas; ``every`` None: no scheduled
    rotation (a manual request still rotates)."""

    every: timedelta | None
    propagation: timedelta
    jitter: timedelta = timedelta(0)
    """Added to ``every`` (deterministic per server, from its uid): servers created or
    upgraded together do not rotate -- and roll -- in lockstep."""


@dataclass(frozen=True)
class State:
    """The whole persisted rotation state (the Secret holds it; hashes only, no password).

    ``current`` is the hash of the Secret's ``password``, ``next`` of its ``nextPassword``
    (only while ``Adding``), ``previous`` the hash of the password being retired (from
    ``Propagating`` to ``Removing``)."""

    current: str
    phase: Phase = "Stable"
    since: datetime | None = None
    next: str | None = None
    previous: str | None = None
    rotations: int = 0
    last_rotation: datetime | None = None
    last_request: str | None = None
    first: Tier = "backup"
    """The tier rolled first (chosen at the switch: the one not serving)."""
    file_since: datetime | None = None
    """While ``Adding``: when the stored ACL file was first seen listing ``next`` (the
    kubelet-sync allowance counts from there)."""

    @property
    def rotating(self) -> bool:
        return self.phase != "Stable"


@dataclass(frozen=True)
class Observed:
    """What the edge saw this pass. ``live`` is the set of password hashes the running
    Redis accepts for the MCP user (None: Redis not reachable or not ready); ``backup_rolled``
    / ``primary_rolled``: the tier's Deployment carries the wanted credential stamp and runs
    only pods of that template, all ready (True when the tier has no pods to roll)."""

    live: frozenset[str] | None = None
    backup_rolled: bool = False
    primary_rolled: bool = False
    request: str | None = None
    active: Tier | None = None
    """The tier serving now (``status.activeTier``); the other rolls first."""
    file: frozenset[str] | None = None
    """The MCP user's hashes in the stored ACL file (``NAME-cache-config``'s ``users.acl``);
    None: not read this pass."""


@dataclass(frozen=True)
class Event:
    """One step, for an Event and the log: a reason and a message without secrets."""

    reason: str
    message: str


@dataclass(frozen=True)
class Plan:
    state: State
    events: tuple[Event, ...] = ()


def accepted(state: State) -> frozenset[str]:
    """The hashes Redis must accept in this state (never without ``current``)."""
    extra = {
        "Adding": state.next,
        "Propagating": state.previous,
        "RollingBackup": state.previous,
        "RollingPrimary": state.previous,
    }.get(state.phase)
    return frozenset(h for h in (state.current, extra) if h)


def tier_hash(state: State, tier: Tier) -> str:
    """The hash of the password ``tier``'s pods should have been started with; its change
    (the pod template's credential stamp) is what rolls the tier."""
    if state.previous is None:
        return state.current
    both: tuple[Tier, ...] = ("backup", "primary")
    rolled = {
        _rolling(state.first): (state.first,),
        _rolling(_other(state.first)): both,
        "Removing": both,
    }.get(state.phase, ())
    return state.current if tier in rolled else state.previous


def _other(tier: Tier) -> Tier:
    return "primary" if tier == "backup" else "backup"


def _rolling(tier: Tier) -> Phase:
    return "RollingBackup" if tier == "backup" else "RollingPrimary"


def next_due(state: State, settings: Settings) -> datetime | None:
    """When the next scheduled rotation starts (None: not scheduled, or one is running)."""
    if state.rotating or settings.every is None or state.last_rotation is None:
        return None
    return state.last_rotation + settings.every + settings.jitter


STALL_AFTER = timedelta(minutes=15)


def stall_bound(settings: Settings) -> timedelta:
    """How long a phase may last before the rotation counts as stalled: 15 minutes, or three
    ``propagation`` (``Adding`` and ``Propagating`` wait one each) when that is longer."""
    return max(STALL_AFTER, 3 * settings.propagation)


def stalled(state: State, settings: Settings, now: datetime) -> bool:
    """A rotation stuck in one phase past :func:`stall_bound` (a tier never ready, Redis
    out of reach, ...): reported, never forced -- both passwords stay valid."""
    return state.rotating and state.since is not None and now - state.since > stall_bound(settings)


def deadline(state: State, settings: Settings) -> datetime | None:
    """The next instant at which time alone moves the state (for the edge's sleep)."""
    if state.phase == "Propagating" and state.since is not None:
        return state.since + settings.propagation
    if state.phase == "Adding" and state.file_since is not None:
        return state.file_since + settings.propagation
    return next_due(state, settings)


def decide(
    state: State,
    settings: Settings,
    now: datetime,
    seen: Observed,
    new_hash: Callable[[], str],
) -> Plan:
    """One step at most: the edge writes the new state, acts on it and observes again."""
    phase = state.phase
    if phase == "Stable":
        return _maybe_start(state, settings, now, seen, new_hash)
    if phase == "Adding":
        return _adding(state, settings, now, seen)
    if phase == "Propagating":
        if state.since is None or now >= state.since + settings.propagation:
            moved = replace(state, phase=_rolling(state.first), since=now)
            message = f"rolling the {state.first} tier"
            return Plan(moved, (Event("CachePasswordRolling", message),))
        return Plan(state)
    if phase in ("RollingBackup", "RollingPrimary"):
        tier: Tier = "backup" if phase == "RollingBackup" else "primary"
        if not (seen.backup_rolled if tier == "backup" else seen.primary_rolled):
            return Plan(state)
        if tier == state.first:
            moved = replace(state, phase=_rolling(_other(tier)), since=now)
            message = (
                f"{tier} tier runs the new password and is ready; rolling the {_other(tier)} tier"
            )
            return Plan(moved, (Event("CachePasswordRolling", message),))
        # the first tier was checked before: new pods only
        moved = replace(state, phase="Removing", since=now)
        message = "both tiers run the new password; Redis is told to refuse the old one"
        return Plan(moved, (Event("CachePasswordRemoving", message),))
    # Removing
    if seen.live is not None and seen.live == accepted(state):
        done = replace(
            state, phase="Stable", since=now, previous=None, rotations=state.rotations + 1,
            last_rotation=now,
        )  # fmt: skip
        message = f"rotation {done.rotations} done: Redis accepts only the new password"
        return Plan(done, (Event("CachePasswordRotated", message),))
    return Plan(state)


def _adding(state: State, settings: Settings, now: datetime, seen: Observed) -> Plan:
    """Switch only once the live Redis accepts both passwords and the stored ACL file has
    listed the new one for ``propagation`` (a restarted Redis must load it)."""
    if seen.file is not None and state.next:
        if state.next not in seen.file:
            return Plan(replace(state, file_since=None))  # (re)rendered without it: wait
        if state.file_since is None:
            return Plan(replace(state, file_since=now))
    synced = state.file_since is not None and now >= state.file_since + settings.propagation
    if synced and seen.live is not None and accepted(state) <= seen.live and state.next:
        moved = replace(
            state, phase="Propagating", since=now, current=state.next, next=None,
            previous=state.current, file_since=None,
            first="backup" if seen.active != "backup" else "primary",
        )  # fmt: skip
        return Plan(moved, (Event("CachePasswordSwitched", _switched(settings)),))
    return Plan(state)


def _maybe_start(
    state: State, settings: Settings, now: datetime, seen: Observed, new_hash: Callable[[], str]
) -> Plan:
    requested = seen.request is not None and seen.request != state.last_request
    due = next_due(state, settings)
    if not requested and (due is None or now < due):
        return Plan(state)
    kind = "manual" if requested else "scheduled"
    started = replace(
        state, phase="Adding", since=now, next=new_hash(), previous=None, file_since=None,
        last_request=seen.request if requested else state.last_request,
    )  # fmt: skip
    message = f"{kind} rotation: a new password is stored; Redis is told to accept it too"
    return Plan(started, (Event("CachePasswordAdding", message),))


def _switched(settings: Settings) -> str:
    seconds = settings.propagation.total_seconds()
    return (
        f"Redis accepts the old and the new password; the Secret's password is the new one, "
        f"tiers roll after {seconds:g}s of propagation"
    )


def describe(state: State) -> str:
    """The phase for a condition message (no hashes)."""
    return {
        "Stable": "no rotation in progress",
        "Adding": "waiting for Redis and its stored ACL file (NAME-cache-config, synced to "
        "the kubelet for propagation) to accept the new password beside the old one",
        "Propagating": "waiting for the new password to reach the kubelets",
        "RollingBackup": "waiting for the backup tier to run the new password, all pods ready",
        "RollingPrimary": "waiting for the primary tier to run the new password, all pods ready",
        "Removing": "waiting for Redis to refuse the old password",
    }[state.phase]


__all__ = [
    "PHASES",
    "Event",
    "Observed",
    "Phase",
    "Plan",
    "Settings",
    "State",
    "accepted",
    "deadline",
    "decide",
    "describe",
    "next_due",
    "stall_bound",
    "stalled",
    "tier_hash",
]
