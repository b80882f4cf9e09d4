"""One thread per pod: volumes, processes, probes, restarts, termination, status.

Like the kubelet's pod workers, each pod is driven by its own loop that wakes on events
(a pod update from the watch, a process exit, a Secret/ConfigMap change) or when the next
probe or restart is due, and never polls faster than that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import podstatus
from .container import BackoffPolicy, ContainerRunner
from .dns import SHIM_DIR
from .envvars import ConfigError, Sources, expand, resolve_env
from .images import ImageMap, build_argv, host_path, map_config_paths
from .kubeapi import MERGE, ApiError, KubeClient, now_rfc3339
from .metrics import ContainerSample
from .probes import ProbeContext
from .process import MARKER_ENV, Spawner, signal_group
from .proxy import HOSTS_FILE
from .volumes import PodVolumes, VolumeSources, mounts_env

log = logging.getLogger("nodeagent.pod")

JSON = dict[str, Any]
RESYNC_SECONDS = 30.0
VOLUME_RESYNC_SECONDS = 60.0
BASE_ENV_KEYS = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "TMPDIR",
    "PYTHONPATH",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "REQUESTS_CA_BUNDLE",
)


class AllSources(Sources, VolumeSources, Protocol):
    """Env and volume sources in one object."""


@dataclass
class NodeContext:
    """What every pod worker shares with the agent."""

    client: KubeClient
    sources: AllSources
    images: ImageMap
    spawner: Spawner
    node_name: str
    host_ip: str
    state_dir: Path
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    stop_grace: float = 2.0


def env_references(spec: Mapping[str, Any]) -> set[tuple[str, str]]:
    """``(kind, name)`` of the Secrets/ConfigMaps a pod's containers read through env."""
    refs: set[tuple[str, str]] = set()
    for c in list(spec.get("containers") or []) + list(spec.get("initContainers") or []):
        for item in c.get("env") or []:
            src = item.get("valueFrom") or {}
            if "secretKeyRef" in src:
                refs.add(("secret", src["secretKeyRef"].get("name", "")))
            if "configMapKeyRef" in src:
                refs.add(("configmap", src["configMapKeyRef"].get("name", "")))
        for src in c.get("envFrom") or []:
            if "secretRef" in src:
                refs.add(("secret", src["secretRef"].get("name", "")))
            if "configMapRef" in src:
                refs.add(("configmap", src["configMapRef"].get("name", "")))
    return refs


def _carry_over(runners: list[ContainerRunner], previous: list[JSON]) -> None:
    """Adopting a pod after an agent restart: its processes died with the old agent, so,
    like a kubelet, keep counting restarts from the reported status."""
    by_name = {s.get("name"): s for s in previous}
    for runner in runners:
        prev = by_name.get(runner.name)
        if prev is None:
            continue
        runner.restart_count = int(prev.get("restartCount") or 0)
        state = prev.get("state") or {}
        if "running" in state:
            runner.last_state = {
                "terminated": {
                    "exitCode": 137,
                    "reason": "NodeAgentRestarted",
                    "startedAt": state["running"].get("startedAt"),
                    "finishedAt": now_rfc3339(),
                }
            }
        else:
            runner.last_state = prev.get("lastState") or {}


class PodWorker:
    """Drives one pod bound to this node until it is deleted or the agent stops."""

    def __init__(self, pod: JSON, ctx: NodeContext, ip: str) -> None:
        meta, spec = pod["metadata"], pod.get("spec", {})
        self.uid, self.namespace, self.name = meta["uid"], meta["namespace"], meta["name"]
        self.ip, self._ctx, self._pod = ip, ctx, pod
        self.dir = ctx.state_dir / "pods" / f"{self.namespace}_{self.name}_{self.uid[:8]}"
        self.volumes = PodVolumes(self.dir, spec.get("volumes") or [])
        self.references = self.volumes.references() | env_references(spec)
        self._init = [
            ContainerRunner(c, self.name, self.wake, ctx.backoff, init=True)
            for c in spec.get("initContainers") or []
        ]
        self._main = [
            ContainerRunner(c, self.name, self.wake, ctx.backoff)
            for c in spec.get("containers") or []
        ]
        status = pod.get("status", {})
        _carry_over(self._main, status.get("containerStatuses") or [])
        _carry_over(self._init, status.get("initContainerStatuses") or [])
        self._clock = podstatus.TransitionClock(status.get("conditions") or [])
        self._start_time = status.get("startTime") or now_rfc3339()
        self._last_sent: JSON | None = None
        self._volume_error: str | None = None
        self._volumes_due = 0.0
        self._probe_contexts: dict[str, ProbeContext] = {}
        self._wake = threading.Event()
        self._stopping = self._removed = False
        self.finished = threading.Event()
        self._thread = threading.Thread(
            target=self._loop, name=f"pod-{self.namespace}/{self.name}", daemon=True
        )

    # -- API for the agent ---------------------------------------------------------------
    def samples(self) -> list[ContainerSample]:
        """This pod's main containers, for the agent's metrics (nodeagent/metrics)."""
        out = []
        for runner in self._main:
            proc = runner.proc if runner.running else None
            limits = (runner.spec.get("resources") or {}).get("limits") or {}
            memory = limits.get("memory")
            out.append(
                ContainerSample(
                    self.namespace,
                    self.name,
                    runner.name,
                    self._ctx.node_name,
                    proc.pid if proc is not None else None,
                    str(memory) if memory is not None else None,
                )
            )
        return out

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def update(self, pod: JSON) -> None:
        old = self._pod["metadata"]
        if (old.get("labels"), old.get("annotations")) != (
            pod["metadata"].get("labels"),
            pod["metadata"].get("annotations"),
        ):
            self._volumes_due = 0.0  # downwardAPI volumes may show labels/annotations
        self._pod = pod
        self.wake()

    def sources_changed(self) -> None:
        """A Secret/ConfigMap this pod reads changed: rewrite volumes, retry blocked starts."""
        self._volumes_due = 0.0
        for runner in self._init + self._main:
            if runner.proc is None and runner.waiting[0] in (
                "CreateContainerConfigError",
                "ContainerCreating",
            ):
                runner.next_start = 0.0
        self.wake()

    def removed(self) -> None:
        """The pod object is gone from the API: stop everything now."""
        self._removed = True
        self.wake()

    def stop(self) -> None:
        """Agent shutdown: stop processes, leave the pod object alone."""
        self._stopping = True
        self.wake()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    @property
    def node_name(self) -> str:
        """The node this pod runs on."""
        return self._ctx.node_name

    def pids(self) -> list[int]:
        return [r.proc.pid for r in self._init + self._main if r.proc is not None]

    # -- loop --------------------------------------------------------------------------
    def _loop(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        try:
            while not (self._stopping or self._removed):
                self._wake.clear()
                pod = self._pod
                if pod["metadata"].get("deletionTimestamp"):
                    self._terminate(pod)
                    return
                timeout = self._sync_safely(pod)
                self._wake.wait(timeout)
            self._kill_all(0.0 if self._removed else self._ctx.stop_grace)
        finally:
            self._kill_all(0.0)
            shutil.rmtree(self.dir / "volumes", ignore_errors=True)
            self.finished.set()

    def _sync_safely(self, pod: JSON) -> float:
        try:
            return self._sync(pod)
        except Exception:
            log.exception("pod %s/%s: sync failed; retrying", self.namespace, self.name)
            return 2.0

    def _sync(self, pod: JSON) -> float:
        self._sync_volumes(pod)
        init_done = self._drive_init(pod)
        if init_done:
            for runner in self._main:
                self._drive(runner, pod)
        self._report(pod, init_done)
        return self._next_timeout()

    def _sync_volumes(self, pod: JSON) -> None:
        """Rewrite volumes when a source changed, else at most every VOLUME_RESYNC_SECONDS:
        reading every Secret and comparing files on every probe wake-up is what costs CPU."""
        if time.monotonic() < self._volumes_due:
            return
        self._volumes_due = time.monotonic() + VOLUME_RESYNC_SECONDS
        try:
            self.volumes.sync(pod, self._ctx.sources)
            self._volume_error = None
        except ConfigError as exc:
            self._volume_error = f"MountVolume.SetUp failed: {exc}"

    def _drive_init(self, pod: JSON) -> bool:
        """Run init containers one at a time; True when all completed successfully."""
        for runner in self._init:
            if runner.done and runner.terminated and runner.terminated["exitCode"] == 0:
                continue
            self._drive(runner, pod)
            return False
        return True

    def _drive(self, runner: ContainerRunner, pod: JSON) -> None:
        """Reap, probe, restart or start one container as its state requires."""
        policy = pod.get("spec", {}).get("restartPolicy", "Always")
        if runner.proc is not None and runner.exit_code is not None:
            log.info(
                "pod %s/%s container %s exited %s",
                self.namespace,
                self.name,
                runner.name,
                runner.exit_code,
            )
            runner.reap(policy)
        now = time.monotonic()
        if runner.running:
            reason = runner.run_due_probes(self._probe_context(runner, pod), now)
            if reason:
                log.info(
                    "pod %s/%s container %s: %s; restarting",
                    self.namespace,
                    self.name,
                    runner.name,
                    reason,
                )
                runner.stop(self._grace(pod))
                runner.exit_code = runner.exit_code if runner.exit_code is not None else 137
                runner.reap("Always" if policy != "Never" else "Never")
        if runner.may_start(time.monotonic()):
            self._start(runner, pod)

    def _start(self, runner: ContainerRunner, pod: JSON) -> None:
        if self._volume_error:
            runner.start_failed("ContainerCreating", self._volume_error, 2.0)
            return
        image = str(runner.spec.get("image", ""))
        rule = self._ctx.images.lookup(image)
        if rule is None:
            runner.start_failed(
                "ErrImagePull", f'image "{image}" is not in the node agent\'s image map', 60.0
            )
            return
        try:
            env = self._process_env(runner, pod, dict(rule.env))
        except ConfigError as exc:
            runner.start_failed("CreateContainerConfigError", str(exc), 2.0)
            return
        values = {
            "pod_ip": self.ip,
            "pod_name": self.name,
            "namespace": self.namespace,
            "container": runner.name,
            "pod_dir": str(self.dir),
        }
        command = [expand(a, env) for a in runner.spec.get("command") or []]
        args = [expand(a, env) for a in runner.spec.get("args") or []]
        argv = build_argv(rule, command, args, values)
        mounts = json.loads(env.get("NODEAGENT_MOUNTS") or "{}")
        argv = map_config_paths(argv, rule, mounts)
        # workingDir under a volumeMount runs in that volume's host directory.
        cwd = host_path(str(runner.spec.get("workingDir") or ""), mounts) or str(self.dir)
        try:
            with open(self.dir / "logs" / f"{runner.name}.log", "ab") as log_file:
                proc = self._ctx.spawner.spawn(argv, env, cwd, log_file)
        except OSError as exc:
            runner.start_failed("RunContainerError", f"{type(exc).__name__}: {exc}", 10.0)
            return
        runner.note_restart()
        runner.attach(proc)
        log.info(
            "pod %s/%s container %s started pid %d on %s",
            self.namespace,
            self.name,
            runner.name,
            proc.pid,
            self.ip,
        )

    def _process_env(
        self, runner: ContainerRunner, pod: JSON, defaults: dict[str, str]
    ) -> dict[str, str]:
        """Host basics, image-map defaults, agent extras, then the container's own env."""
        env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        env.update(defaults)
        env.update(
            POD_IP=self.ip,
            HOSTNAME=self.name,
            NODEAGENT_MOUNTS=mounts_env(runner.spec.get("volumeMounts") or [], self.volumes.dirs),
            # The Service names this agent's proxy answers for (a cluster DNS stand-in).
            NODEAGENT_HOSTS=str(self._ctx.state_dir / HOSTS_FILE),
        )
        env.update(resolve_env(runner.spec, self._with_ip(pod), self._ctx.sources))
        # Service names for Python processes (cluster DNS stand-in, nodeagent/dns): first on
        # the path, before the container's own entries.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SHIM_DIR), env.get("PYTHONPATH")]))
        env[MARKER_ENV] = str(self._ctx.state_dir)
        return env

    def _with_ip(self, pod: JSON) -> JSON:
        """The pod as the downward API should see it (our IP even before the status lands)."""
        status = {
            **pod.get("status", {}),
            "podIP": self.ip,
            "podIPs": [{"ip": self.ip}],
            "hostIP": self._ctx.host_ip,
        }
        return {**pod, "status": status}

    def _probe_context(self, runner: ContainerRunner, pod: JSON) -> ProbeContext:
        """Built once per process start (the container's env does not change while it runs)."""
        ctx = self._probe_contexts.get(runner.name)
        if ctx is None or ctx.started != runner.started_mono:
            ctx = self._new_probe_context(runner, pod)
            self._probe_contexts[runner.name] = ctx
        return ctx

    def _new_probe_context(self, runner: ContainerRunner, pod: JSON) -> ProbeContext:
        ports = {
            p["name"]: int(p["containerPort"])
            for p in runner.spec.get("ports") or []
            if p.get("name")
        }
        env = {k: os.environ[k] for k in BASE_ENV_KEYS if k in os.environ}
        with contextlib.suppress(ConfigError):
            env.update(resolve_env(runner.spec, self._with_ip(pod), self._ctx.sources))
        env["POD_IP"] = self.ip
        return ProbeContext(self.ip, ports, env, str(self.dir), started=runner.started_mono)

    def _next_timeout(self) -> float:
        now = time.monotonic()
        dues = [RESYNC_SECONDS + now]
        for runner in self._init + self._main:
            if runner.running:
                at = runner.next_probe_at()
                if at is not None:
                    dues.append(at)
            elif not runner.done:
                dues.append(runner.next_start)
        return max(min(dues) - now, 0.05)

    # -- status ------------------------------------------------------------------------
    def _report(self, pod: JSON, init_done: bool) -> None:
        runners = self._init + self._main
        status: JSON = {
            "phase": podstatus.phase(runners, init_done),
            "hostIP": self._ctx.host_ip,
            "podIP": self.ip,
            # A plain list: the 1.20 server reads a {"$patch": "replace"} directive here as
            # a second, empty IP and rejects the whole status (422).
            "podIPs": [{"ip": self.ip}],
            "startTime": self._start_time,
            "conditions": self._clock.stamp(podstatus.conditions(pod, runners, init_done)),
            "containerStatuses": [r.status() for r in self._main],
        }
        if self._init:
            status["initContainerStatuses"] = [r.status() for r in self._init]
        if status == self._last_sent:
            return
        try:
            self._replace_stale_ip(pod)
            self._ctx.client.patch(self._status_path, {"status": status})
            self._last_sent = status
        except ApiError as exc:
            if exc.status != 404:
                log.warning("pod %s/%s: status patch failed: %s", self.namespace, self.name, exc)

    def _replace_stale_ip(self, pod: JSON) -> None:
        """Strategic merge appends to podIPs (merge key ``ip``), so a changed IP (an adopted
        pod whose old IP was busy) is replaced with a JSON merge patch first."""
        old = pod.get("status", {}).get("podIPs") or []
        if old and old != [{"ip": self.ip}]:
            body = {"status": {"podIP": self.ip, "podIPs": [{"ip": self.ip}]}}
            self._ctx.client.patch(self._status_path, body, MERGE)

    @property
    def _status_path(self) -> str:
        return f"/api/v1/namespaces/{self.namespace}/pods/{self.name}/status"

    # -- termination ---------------------------------------------------------------------
    def _grace(self, pod: JSON) -> float:
        meta_grace = pod["metadata"].get("deletionGracePeriodSeconds")
        spec_grace = pod.get("spec", {}).get("terminationGracePeriodSeconds")
        return float(
            meta_grace if meta_grace is not None else spec_grace if spec_grace is not None else 30
        )

    def _terminate(self, pod: JSON) -> None:
        """Run the ``preStop`` sleep, stop every process within what is left of the grace
        period, then delete the pod like a kubelet."""
        grace = self._grace(pod)
        slept = self._pre_stop_sleep(pod, grace)
        self._kill_all(max(grace - slept, 0.0))
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
        try:
            self._ctx.client.delete(f"/api/v1/namespaces/{self.namespace}/pods/{self.name}", body)
        except ApiError as exc:
            if exc.status not in (404, 409):
                log.warning("pod %s/%s: final delete failed: %s", self.namespace, self.name, exc)

    def _pre_stop_sleep(self, pod: JSON, grace: float) -> float:
        """The kubelet runs each container's ``lifecycle.preStop.sleep`` before SIGTERM,
        within the grace period; the processes keep serving meanwhile. An agent stop cuts
        it short. Returns the seconds slept."""
        wanted = max(
            (
                float(c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0))
                for c in pod.get("spec", {}).get("containers", [])
            ),
            default=0.0,
        )
        deadline = time.monotonic() + min(wanted, grace)
        while time.monotonic() < deadline and not (self._stopping or self._removed):
            time.sleep(min(0.1, max(deadline - time.monotonic(), 0.0)))
        return min(wanted, grace)

    def _kill_all(self, grace: float) -> None:
        """SIGTERM every container's process group, SIGKILL what remains after ``grace``."""
        procs = [r.proc for r in self._init + self._main if r.proc is not None]
        for proc in procs:
            if proc.poll() is None:
                signal_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=max(deadline - time.monotonic(), 0.0))
        for proc in procs:
            signal_group(proc.pid, signal.SIGKILL)
            proc.wait()
