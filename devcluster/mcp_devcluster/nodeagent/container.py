"""One container of one pod: its process, restarts with back-off, probes and status.

The runner is driven by its pod worker's thread (never concurrently); the only other
thread that touches it is the per-process waiter, which just records the exit code and
wakes the worker.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from .kubeapi import now_rfc3339
from .probes import ProbeContext, ProbeTracker, run_probe
from .process import stop_process

JSON = dict[str, Any]


@dataclass(frozen=True)
class BackoffPolicy:
    """Kubelet-like crash back-off: first restart immediate, then base·2ⁿ up to ``cap``."""

    base: float = 10.0
    cap: float = 300.0

    def delay(self, crashes: int) -> float:
        return 0.0 if crashes <= 1 else min(self.base * 2 ** (crashes - 2), self.cap)


class ContainerRunner:
    """Process lifecycle and kubelet-shaped status of one container."""

    def __init__(
        self,
        spec: Mapping[str, Any],
        pod_name: str,
        wake: Callable[[], None],
        backoff: BackoffPolicy,
        init: bool = False,
    ) -> None:
        self.spec, self.name, self.init = spec, str(spec["name"]), init
        self._pod_name, self._wake, self._backoff = pod_name, wake, backoff
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.started_at = ""
        self.started_mono = 0.0
        self.restart_count = 0
        self.crashes = 0
        self.next_start = 0.0
        self.waiting = ("ContainerCreating", "")
        self.terminated: JSON | None = None
        self.last_state: JSON = {}
        self.probes: dict[str, ProbeTracker] = {}
        self.done = False  # terminated for good (restart policy says so)

    # -- process lifecycle -------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self.proc is not None and self.exit_code is None

    def attach(self, proc: subprocess.Popen[bytes]) -> None:
        """Adopt a freshly started process and start its waiter and probes."""
        self.proc, self.exit_code, self.terminated = proc, None, None
        self.started_at, self.started_mono = now_rfc3339(), time.monotonic()
        now = self.started_mono
        self.probes = {
            kind: ProbeTracker(self.spec[f"{kind}Probe"], now, initial=(kind == "liveness"))
            for kind in ("startup", "readiness", "liveness")
            if self.spec.get(f"{kind}Probe") and not self.init
        }
        threading.Thread(
            target=self._wait, args=(proc,), name=f"wait-{self.name}", daemon=True
        ).start()

    def _wait(self, proc: subprocess.Popen[bytes]) -> None:
        code = proc.wait()
        if self.proc is proc:
            self.exit_code = code
        self._wake()

    def start_failed(self, reason: str, message: str, retry_in: float) -> None:
        """The process could not be created; stay waiting and retry later."""
        self.waiting = (reason, message)
        self.next_start = time.monotonic() + retry_in

    def reap(self, restart_policy: str) -> None:
        """Record an exited process as terminated and schedule (or forbid) its restart."""
        code = self.exit_code if self.exit_code is not None else -1
        ran_for = time.monotonic() - self.started_mono
        self.terminated = {
            "exitCode": code if code >= 0 else 128 - code,
            "reason": "Completed" if code == 0 else "Error",
            "startedAt": self.started_at,
            "finishedAt": now_rfc3339(),
            "containerID": self.container_id(),
        }
        self.proc, self.exit_code, self.probes = None, None, {}
        self.crashes = 1 if ran_for > 2 * self._backoff.cap else self.crashes + 1
        restart = restart_policy == "Always" or (restart_policy == "OnFailure" and code != 0)
        if self.init and code == 0:
            restart = False
        self.done = not restart
        if restart:
            self.last_state = {"terminated": self.terminated}
            delay = self._backoff.delay(self.crashes)
            self.next_start = time.monotonic() + delay
            self.waiting = (
                (
                    "CrashLoopBackOff",
                    f"back-off {delay:.0f}s restarting failed "
                    f"container={self.name} pod={self._pod_name}",
                )
                if delay
                else ("ContainerCreating", "")
            )

    def may_start(self, now: float) -> bool:
        return not self.done and self.proc is None and now >= self.next_start

    def note_restart(self) -> None:
        """Counted when a process starts after a previous one ended."""
        if self.terminated is not None or self.last_state:
            self.restart_count += 1

    def stop(self, grace: float) -> None:
        """Stop the process (SIGTERM, SIGKILL after ``grace``); its waiter reports the exit."""
        if self.proc is not None:
            stop_process(self.proc, grace)

    # -- probes ------------------------------------------------------------------------
    def run_due_probes(self, ctx: ProbeContext, now: float) -> str | None:
        """Run due probes; return a reason to restart the container, if any."""
        startup = self.probes.get("startup")
        if startup is not None and not startup.result:
            if startup.due(now):
                startup.record(*run_probe(startup.probe, ctx), now=time.monotonic())
                if not startup.result and startup.failed_out():
                    return f"startup probe failed: {startup.message}"
            return None
        for kind in ("readiness", "liveness"):
            tracker = self.probes.get(kind)
            if tracker is not None and tracker.due(now):
                tracker.record(*run_probe(tracker.probe, ctx), now=time.monotonic())
        liveness = self.probes.get("liveness")
        if liveness is not None and not liveness.result:
            return f"liveness probe failed: {liveness.message}"
        return None

    def next_probe_at(self) -> float | None:
        startup = self.probes.get("startup")
        trackers = (
            [startup] if startup is not None and not startup.result else list(self.probes.values())
        )
        return min((t.next_at for t in trackers), default=None)

    @property
    def started(self) -> bool:
        startup = self.probes.get("startup")
        return self.running and (startup is None or startup.result)

    @property
    def ready(self) -> bool:
        if not self.started:
            return False
        readiness = self.probes.get("readiness")
        return readiness is None or readiness.result

    # -- status ------------------------------------------------------------------------
    def container_id(self) -> str:
        return f"nodeagent://{self.proc.pid}" if self.proc is not None else ""

    def state(self) -> JSON:
        if self.running:
            return {"running": {"startedAt": self.started_at}}
        if self.done and self.terminated is not None:
            return {"terminated": self.terminated}
        reason, message = self.waiting
        return {"waiting": {"reason": reason, **({"message": message} if message else {})}}

    def status(self) -> JSON:
        """A ``containerStatuses`` entry."""
        image = str(self.spec.get("image", ""))
        out: JSON = {
            "name": self.name,
            "image": image,
            "imageID": f"nodeagent://{image}",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started,
            "state": self.state(),
            "lastState": self.last_state,
        }
        if self.running:
            out["containerID"] = self.container_id()
        return out
