"""Per-pod readiness gates, as a pure state machine with the same damping as the breakers.

Why damped: the gate decides which pods receive traffic, so a gate that follows a single
probe round turns one slow round of the *prober* (an event-loop stall, its own network) into
an outage. A pod's gate goes False only after ``failure_threshold`` consecutive failed
probes of *that pod*, and True again after ``success_threshold`` good ones.

Evidence, and why each weighs what it does:

* ``GOOD`` -- the pod answered MCP, or answered HTTP in a way that proves the process is up
  but keeps the probe from checking MCP (401/403, 421, a redirect, no common protocol
  version). Clients holding the right credentials are served, so the pod keeps serving.
* ``BAD`` -- a timeout, a 5xx, a malformed reply, a reset connection. These can be the
  prober's fault (a stalled event loop times out every probe at once), so they count
  towards ``failure_threshold``.
* ``DEAD`` -- the connection was *refused*. Decisive at once: the refusal comes from the pod's
  own kernel, so the pod's address is reachable and nothing listens on the port; every
  client request to it fails the same way right now, so keeping it in the endpoints can
  only cost requests. (A prober-side fault rarely looks like this; a rejecting firewall
  can, which is why a doubting prober freezes demotions of every kind.)
* ``NONE`` -- no verdict (the pod was not probed, or the operator's own probe settings are
  broken): the gate stays as it is.

Admission: a pod that was never ready (no gate condition yet) becomes ready on its first good
probe -- there is no traffic to protect, and a rollout should not wait. And when a tier has
no ready pod at all, the first good probe readies a pod at once, so a healthy tier is never
held out of its Service by the success threshold.

Doubt (fail-static): while the prober doubts itself, no gate is demoted; good probes may
still ready a pod (that can only add capacity that answered).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, replace

__all__ = ["Evidence", "GateSettings", "GateState", "step", "step_tier"]


class Evidence(enum.StrEnum):
    GOOD = "good"
    BAD = "bad"
    DEAD = "dead"
    NONE = "none"


@dataclass(frozen=True)
class GateSettings:
    failure_threshold: int = 3
    success_threshold: int = 2


@dataclass(frozen=True)
class GateState:
    """One pod's gate. ``ready`` mirrors the pod's condition (``None``: never set, a new
    pod); the counters live in the operator's memory and restart at zero (conservative:
    a restarted operator needs the full evidence again before it demotes a pod)."""

    ready: bool | None = None
    failures: int = 0
    successes: int = 0

    @property
    def serving(self) -> bool:
        return self.ready is True


def step(
    state: GateState, evidence: Evidence, settings: GateSettings, *, frozen: bool = False
) -> GateState:
    """One probe of one pod. ``frozen`` (the prober doubts itself) suppresses demotions."""
    if evidence is Evidence.NONE:
        return state
    if evidence is Evidence.GOOD:
        if state.ready:
            return GateState(True)
        successes = state.successes + 1
        admit = state.ready is None or successes >= settings.success_threshold
        return GateState(True) if admit else GateState(state.ready, 0, successes)
    if frozen:
        return replace(state, successes=0)
    if not state.ready:
        return GateState(False, state.failures + 1, 0)
    failures = state.failures + 1
    if evidence is Evidence.DEAD or failures >= settings.failure_threshold:
        return GateState(False, failures, 0)
    return GateState(True, failures, 0)


def step_tier(
    states: Mapping[str, GateState],
    evidence: Mapping[str, Evidence],
    settings: GateSettings,
    *,
    frozen: bool = False,
) -> dict[str, GateState]:
    """Step every pod of one tier; then, if no pod is ready, ready every pod that answered
    well this round (a tier with zero endpoints has nothing left to protect)."""
    out = {
        name: step(state, evidence.get(name, Evidence.NONE), settings, frozen=frozen)
        for name, state in states.items()
    }
    if not any(s.serving for s in out.values()):
        for name in out:
            if evidence.get(name) is Evidence.GOOD:
                out[name] = GateState(True)
    return out
