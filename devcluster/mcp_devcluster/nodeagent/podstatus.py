"""Pure functions that turn container runners into a kubelet-shaped pod status.

The agent owns only the conditions it computes (PodScheduled, Initialized,
ContainersReady, Ready) and sends them in a strategic merge patch, where ``conditions``
merge by ``type``: readiness-gate conditions patched by the operator survive our writes
and ours survive theirs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .container import ContainerRunner
from .kubeapi import now_rfc3339

JSON = dict[str, Any]
OWNED_CONDITIONS = ("PodScheduled", "Initialized", "ContainersReady", "Ready")


def gate_problem(pod: Mapping[str, Any]) -> str | None:
    """Why the readiness gates are not satisfied (None when they are)."""
    present = {
        c.get("type"): c.get("status") for c in pod.get("status", {}).get("conditions") or []
    }
    for gate in pod.get("spec", {}).get("readinessGates") or []:
        ctype = gate.get("conditionType", "")
        if ctype not in present:
            return f'corresponding condition of pod readiness gate "{ctype}" does not exist.'
        if present[ctype] != "True":
            return f'the status of pod readiness gate "{ctype}" is not "True", but {present[ctype]}'
    return None


def phase(containers: Sequence[ContainerRunner], init_done: bool) -> str:
    """Pending / Running / Succeeded / Failed, after the kubelet's getPhase."""
    if not init_done:
        if any(
            c.done and c.terminated and c.terminated["exitCode"] != 0 for c in containers if c.init
        ):
            return "Failed"
        return "Pending"
    main = [c for c in containers if not c.init]
    if main and all(c.done for c in main):
        ok = all(c.terminated and c.terminated["exitCode"] == 0 for c in main)
        return "Succeeded" if ok else "Failed"
    never_started = [c for c in main if not c.running and not c.last_state and not c.done]
    if never_started:
        return "Pending"
    return "Running"


def _condition(ctype: str, ok: bool, reason: str = "", message: str = "") -> JSON:
    """A condition; on True, reason/message are null so the merge patch removes stale ones."""
    return {
        "type": ctype,
        "status": "True" if ok else "False",
        "reason": None if ok else reason,
        "message": None if ok else message,
    }


def conditions(
    pod: Mapping[str, Any], containers: Sequence[ContainerRunner], init_done: bool
) -> list[JSON]:
    """Our four conditions, without timestamps (see ``stamp``)."""
    main = [c for c in containers if not c.init]
    pending_init = [c.name for c in containers if c.init and not c.done]
    unready = [c.name for c in main if not c.ready]
    containers_ready = init_done and not unready
    gates = gate_problem(pod)
    if not containers_ready:
        why = (
            (
                "ContainersNotInitialized",
                f"containers with incomplete status: [{' '.join(pending_init)}]",
            )
            if not init_done
            else ("ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]")
        )
        ready = _condition("Ready", False, *why)
    else:
        ready = _condition("Ready", gates is None, "ReadinessGatesNotReady", gates or "")
    return [
        _condition("PodScheduled", True),
        _condition(
            "Initialized",
            init_done,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
        ),
        _condition(
            "ContainersReady",
            containers_ready,
            "ContainersNotReady",
            f"containers with unready status: [{' '.join(unready)}]",
        ),
        ready,
    ]


class TransitionClock:
    """Keeps ``lastTransitionTime`` stable until a condition's status actually changes."""

    def __init__(self, existing: Sequence[Mapping[str, Any]]) -> None:
        self._seen: dict[str, tuple[str, str]] = {
            c["type"]: (c.get("status", ""), c.get("lastTransitionTime") or now_rfc3339())
            for c in existing
            if c.get("type") in OWNED_CONDITIONS
        }

    def stamp(self, conds: list[JSON]) -> list[JSON]:
        for cond in conds:
            prev = self._seen.get(cond["type"])
            if prev is None or prev[0] != cond["status"]:
                prev = (cond["status"], now_rfc3339())
                self._seen[cond["type"]] = prev
            cond["lastProbeTime"] = None
            cond["lastTransitionTime"] = prev[1]
        return conds
