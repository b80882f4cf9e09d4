"""A real, local Kubernetes control plane for tests and the demo.

Runs etcd, kube-apiserver, kube-controller-manager and kube-scheduler on 127.0.0.1 with free
ports, each in its own process group, with logs and state in one directory. The Kubernetes
version is ``MCP_K8S_VERSION`` (default ``DEFAULT_K8S_VERSION``, the newest tested): a release
from ``OLDEST_K8S_VERSION``'s minor on, built from the Go module ``k8s.io/kubernetes`` by
``hack/build-k8s-module.sh``. There is no kubelet: the node agent
(``mcp_devcluster.nodeagent``) registers Nodes and runs the pods bound to them; the real
kube-scheduler binds pods (``scheduler=False`` leaves it out, for the oldest-minor smoke,
whose build has no scheduler: the agent binds there).

Authentication is by static bearer tokens (``--token-auth-file``) over TLS with a CA generated
here; authorization is RBAC. Two users exist:

* ``admin`` in group ``system:masters`` -> ``admin.kubeconfig``
* ``mcp-operator`` in group ``system:authenticated`` only -> ``operator.kubeconfig``
  (it can do nothing until bound to a Role/ClusterRole).

Service accounts work (TokenRequest, token controller, root CA publisher).

Command line::

    python -m mcp_devcluster.controlplane up|down|status|env|version [--dir DIR] [--k8s-version V]

``up`` reuses a healthy instance described by ``state.json`` in the directory; otherwise it
(re)starts everything, keeping etcd data and certificates unless ``--fresh`` is given.
``down --purge`` also deletes the directory. ``env`` prints ``export`` lines (KUBECONFIG=admin,
MCP_OPERATOR_KUBECONFIG, MCP_CLUSTER_SERVER, MCP_CLUSTER_DIR, MCP_K8S_VERSION, PATH with
kubectl/helm). ``version`` prints the Kubernetes release that would run (for ``make tools``).

Environment: ``MCP_CLUSTER_DIR`` (default state dir), ``MCP_CACHE_DIR`` (default
``~/.cache/mcp-operator``), ``MCP_K8S_VERSION`` (e.g. ``1.37.2``, ``1.34.4``), ``MCP_K8S_CACHE``
(k8s binaries, default ``$MCP_CACHE_DIR/k8s-VERSION``), ``MCP_ETCD`` (etcd binary),
``MCP_TOOLS_BIN`` (kubectl, helm).

Good to know:

* The kcm runs without leader election; ``podgc`` deletes pods bound to a node that has no
  Node object, so whatever binds pods must register its Node. On a current release it also
  runs ``nodelifecycle``: a node whose Lease is not renewed for 40 s turns NotReady (Unknown)
  and is tainted, as on a real cluster (a zone loss is real).
* The garbage collector re-reads discovery every 30 s: call ``restart_controller_manager()``
  after installing CRDs if a test needs GC of dependents of custom resources at once.
* ``--endpoint-reconciler-type=none``: the ``kubernetes`` Service has no endpoints; in-"cluster"
  clients must be pointed at ``server`` (127.0.0.1:PORT), whose cert also covers 10.96.0.1 and
  ``kubernetes.default.svc``.
* The API audience/issuer of service account tokens is ``SERVICE_ACCOUNT_ISSUER``.
* ``audit=True``: kube-apiserver writes an audit log (``audit_log``, JSON lines) of every
  write (create/update/patch/delete) by the operator's identities -- the ``mcp-operator``
  user and service accounts -- at ``Metadata`` level: who (user, User-Agent), what, when
  (``requestReceivedTimestamp``/``stageTimestamp``), and the response code. Tests use it to
  check that two operator replicas never write in the same window.
* ``stop_apiserver()`` / ``start_apiserver()``: an API-server outage (same etcd, certificates,
  port and flags), as during an upgrade.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import datetime
import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

__all__ = [
    "ADMIN_USER",
    "CURRENT_K8S_VERSION",
    "DEFAULT_K8S_VERSION",
    "KCM_CONTROLLERS",
    "OPERATOR_USER",
    "ControlPlane",
    "ControlPlaneError",
    "default_dir",
    "k8s_bin_dir",
    "k8s_version",
    "tools_bin_dir",
]

ADMIN_USER = "admin"
OPERATOR_USER = "mcp-operator"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
STATE_VERSION = 2
#: Write verbs of the operator's identities at Metadata level, nothing else (small and cheap).
AUDIT_POLICY = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [
        {
            "level": "Metadata",
            "users": [OPERATOR_USER],
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {
            "level": "Metadata",
            "userGroups": ["system:serviceaccounts"],
            "verbs": ["create", "update", "patch", "delete", "deletecollection"],
        },
        {"level": "None"},
    ],
}
#: The newest release the harness is tested on.
CURRENT_K8S_VERSION = "1.37.2"
#: The Kubernetes release the harness runs unless ``MCP_K8S_VERSION`` says otherwise.
DEFAULT_K8S_VERSION = CURRENT_K8S_VERSION
#: The oldest release supported (README, *Supported Kubernetes versions*): a smoke runs on it.
OLDEST_K8S_VERSION = "1.34.4"

# Controllers of kube-controller-manager that we run. Never nodelifecycle: there are no kubelet
# heartbeats here, so it would taint nodes and evict every pod.
KCM_CONTROLLERS: tuple[str, ...] = (
    "deployment",
    "replicaset",
    "statefulset",
    "job",
    "endpointslice",
    "endpointslicemirroring",
    "garbagecollector",
    "serviceaccount",
    "serviceaccount-token",
    "namespace",
    "disruption",
    "podgc",
    "clusterrole-aggregation",
    "root-ca-cert-publisher",
)

_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler")


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or is not healthy."""


def _cache_root() -> Path:
    return Path(os.environ.get("MCP_CACHE_DIR", Path.home() / ".cache" / "mcp-operator"))


def default_dir() -> Path:
    """State directory used when none is given (``$MCP_CLUSTER_DIR`` or the cache)."""
    env = os.environ.get("MCP_CLUSTER_DIR")
    return Path(env) if env else _cache_root() / "cluster"


def k8s_version() -> str:
    """The Kubernetes release to run: ``$MCP_K8S_VERSION`` or ``DEFAULT_K8S_VERSION``."""
    return os.environ.get("MCP_K8S_VERSION", "").removeprefix("v") or DEFAULT_K8S_VERSION


def k8s_minor(version: str) -> int:
    """``37`` for ``1.37.2``."""
    parts = version.removeprefix("v").split(".")
    if len(parts) < 2 or not parts[1].isdigit():
        raise ControlPlaneError(f"not a Kubernetes version: {version!r}")
    return int(parts[1])


def k8s_bin_dir(version: str | None = None) -> Path:
    """Where ``hack/build-k8s-module.sh`` put the k8s binaries of ``version``."""
    env = os.environ.get("MCP_K8S_CACHE")
    return Path(env) if env else _cache_root() / f"k8s-{version or k8s_version()}"


def build_hint(version: str) -> str:
    """The command that builds the binaries of ``version``."""
    return f"hack/build-k8s-module.sh {version}"


def tools_bin_dir() -> Path:
    """Where ``hack/install-tools.sh`` puts kubectl and helm."""
    env = os.environ.get("MCP_TOOLS_BIN")
    return Path(env) if env else _cache_root() / "bin"


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (all held open while choosing)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
        return ports


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie is dead for our purposes.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _pid_cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


@dataclass
class _State:
    version: int
    server: str
    etcd_port: int
    etcd_peer_port: int
    apiserver_port: int
    kcm_port: int
    scheduler_port: int = 0
    k8s_version: str = ""
    pids: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0

    @classmethod
    def load(cls, path: Path) -> _State | None:
        try:
            raw = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if not isinstance(raw, dict) or raw.get("version") != STATE_VERSION:
            return None
        try:
            return cls(
                version=int(raw["version"]),
                server=str(raw["server"]),
                etcd_port=int(raw["etcd_port"]),
                etcd_peer_port=int(raw["etcd_peer_port"]),
                apiserver_port=int(raw["apiserver_port"]),
                kcm_port=int(raw["kcm_port"]),
                scheduler_port=int(raw.get("scheduler_port", 0)),
                k8s_version=str(raw.get("k8s_version", "")),
                pids={str(k): int(v) for k, v in dict(raw.get("pids", {})).items()},
                started_at=float(raw.get("started_at", 0.0)),
            )
        except (KeyError, TypeError, ValueError):
            return None

    def save(self, path: Path) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2) + "\n")
        tmp.replace(path)


class ControlPlane:
    """etcd + kube-apiserver + kube-controller-manager (+ kube-scheduler) in one state directory.

    ``up()`` starts (or reuses) it, ``down()`` stops it. Properties give the kubeconfigs,
    the server URL and the tokens. Processes are detached (own session/process group) so that
    the CLI's ``up`` leaves them running; pass ``die_with_parent=True`` to have the kernel
    SIGTERM them if the starting thread dies (tests).
    """

    def __init__(
        self,
        directory: Path | str | None = None,
        *,
        k8s_bin: Path | str | None = None,
        etcd_bin: Path | str | None = None,
        die_with_parent: bool = False,
        version: str | None = None,
        scheduler: bool = True,
        audit: bool = False,
    ) -> None:
        self.dir = Path(directory) if directory is not None else default_dir()
        self.dir = self.dir.expanduser().absolute()
        #: The Kubernetes release, e.g. ``1.37.2``.
        self.version = (version or k8s_version()).removeprefix("v")
        self.minor = k8s_minor(self.version)
        if self.minor < k8s_minor(OLDEST_K8S_VERSION):
            raise ControlPlaneError(
                f"Kubernetes {self.version} is not supported here (oldest: {OLDEST_K8S_VERSION})"
            )
        #: Whether kube-scheduler runs (else whoever runs pods must bind them: the node agent's
        #: ``--binder agent``).
        self.has_scheduler = scheduler
        #: Whether kube-apiserver writes ``audit_log`` (see the module docstring).
        self.audit = audit
        self.k8s_bin = Path(k8s_bin) if k8s_bin is not None else k8s_bin_dir(self.version)
        found_etcd = (
            etcd_bin or os.environ.get("MCP_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"
        )
        self.etcd_bin = Path(found_etcd)
        self.die_with_parent = die_with_parent
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._state: _State | None = None
        #: Seconds from the start of the last up() to each milestone (empty if reused).
        self.timings: dict[str, float] = {}

    # ----------------------------------------------------------------------------------- paths
    @property
    def pki_dir(self) -> Path:
        return self.dir / "pki"

    @property
    def log_dir(self) -> Path:
        return self.dir / "logs"

    @property
    def state_file(self) -> Path:
        return self.dir / "state.json"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def admin_kubeconfig(self) -> Path:
        return self.dir / "admin.kubeconfig"

    @property
    def operator_kubeconfig(self) -> Path:
        return self.dir / "operator.kubeconfig"

    @property
    def tokens_file(self) -> Path:
        return self.pki_dir / "tokens.csv"

    @property
    def audit_log(self) -> Path:
        return self.log_dir / "audit.log"

    @property
    def audit_policy_file(self) -> Path:
        return self.dir / "audit-policy.json"

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    @property
    def kube_apiserver(self) -> Path:
        return self.k8s_bin / "kube-apiserver"

    @property
    def kube_controller_manager(self) -> Path:
        return self.k8s_bin / "kube-controller-manager"

    @property
    def kube_scheduler(self) -> Path:
        return self.k8s_bin / "kube-scheduler"

    @property
    def components(self) -> tuple[str, ...]:
        """The processes of this control plane, in start order."""
        return _COMPONENTS if self.has_scheduler else _COMPONENTS[:3]

    @property
    def server(self) -> str:
        state = self._state or _State.load(self.state_file)
        if state is None:
            raise ControlPlaneError(f"no control plane state in {self.dir}; run up() first")
        return state.server

    def token(self, user: str) -> str:
        """The bearer token of ``user`` (``admin`` or ``mcp-operator``)."""
        for line in self.tokens_file.read_text().splitlines():
            parts = line.split(",", 3)
            if len(parts) >= 2 and parts[1] == user:
                return parts[0]
        raise KeyError(user)

    @property
    def admin_token(self) -> str:
        return self.token(ADMIN_USER)

    @property
    def operator_token(self) -> str:
        return self.token(OPERATOR_USER)

    def binaries_missing(self) -> list[str]:
        """Names of the binaries that are not installed (empty when all are)."""
        missing = []
        paths = [self.etcd_bin, self.kube_apiserver, self.kube_controller_manager]
        if self.has_scheduler:
            paths.append(self.kube_scheduler)
        for path in paths:
            if not (path.is_file() and os.access(path, os.X_OK)):
                missing.append(str(path))
        return missing

    # ---------------------------------------------------------------------------------- public
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Serialize up/down of one directory across processes."""
        lock_path = self.dir.parent / f".{self.dir.name}.lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with lock_path.open("a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def up(self, *, fresh: bool = False, timeout: float = 60.0) -> bool:
        """Start the control plane, or reuse a healthy one. Returns True if it was reused."""
        with self._locked():
            return self._up(fresh=fresh, timeout=timeout)

    def _up(self, *, fresh: bool, timeout: float) -> bool:
        if not fresh and self.is_healthy():
            self._state = _State.load(self.state_file)
            return True
        self._down(timeout=15.0)
        if fresh:
            self.wipe()
        missing = self.binaries_missing()
        if missing:
            raise ControlPlaneError(
                "missing binaries: "
                + ", ".join(missing)
                + f" (run {build_hint(self.version)} and hack/install-tools.sh)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.timings = {}
        t0 = time.monotonic()
        self._ensure_pki()
        self.timings["pki"] = round(time.monotonic() - t0, 2)
        deadline = time.monotonic() + timeout
        etcd_port, etcd_peer_port, apiserver_port, kcm_port, scheduler_port = _free_ports(5)
        state = _State(
            version=STATE_VERSION,
            server="",
            etcd_port=etcd_port,
            etcd_peer_port=etcd_peer_port,
            apiserver_port=apiserver_port,
            kcm_port=kcm_port,
            scheduler_port=scheduler_port,
            k8s_version=self.version,
            started_at=time.time(),
        )
        state.server = f"https://127.0.0.1:{state.apiserver_port}"
        self._state = state
        try:
            self._start("etcd", self._etcd_args(state), state)
            self._wait(
                "etcd",
                lambda: self._etcd_healthy(state),
                deadline,
            )
            self._start("kube-apiserver", self._apiserver_args(state), state)
            self._write_kubeconfigs(state)
            self._wait("kube-apiserver /readyz", lambda: self._apiserver_ready(), deadline)
            self._start("kube-controller-manager", self._kcm_args(state), state)
            self._wait(
                "kube-controller-manager /healthz", lambda: self._kcm_healthy(state), deadline
            )
            if self.has_scheduler:
                self._start("kube-scheduler", self._scheduler_args(state), state)
                self._wait(
                    "kube-scheduler /healthz", lambda: self._scheduler_healthy(state), deadline
                )
            self._wait(
                "default namespace and its default ServiceAccount",
                self._default_sa_exists,
                deadline,
            )
        except BaseException:
            self._down(timeout=15.0)
            raise
        self.timings["total"] = round(time.monotonic() - t0, 2)
        return False

    def down(self, *, timeout: float = 15.0) -> None:
        """Stop every component (SIGTERM, then SIGKILL) and wait for them to exit."""
        with self._locked():
            self._down(timeout=timeout)

    def _down(self, *, timeout: float) -> None:
        state = self._state or _State.load(self.state_file)
        candidates: dict[int, str] = {}
        if state is not None:
            candidates.update({pid: name for name, pid in state.pids.items()})
        candidates.update({proc.pid: name for name, proc in self._procs.items()})
        # Also any of our components that a lost state file no longer names.
        candidates.update(self._scan_proc())
        owned = {pid: name for pid, name in candidates.items() if self._owns(name, pid)}
        # Stop in reverse start order: scheduler, kcm, apiserver, etcd.
        ordered = sorted(
            owned.items(),
            key=lambda kv: -_COMPONENTS.index(kv[1]) if kv[1] in _COMPONENTS else 0,
        )
        for pid, _name in ordered:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for pid, name in ordered:
            while self._owns(name, pid) and time.monotonic() < deadline:
                self._reap(name)
                time.sleep(0.05)
            # SIGKILL what is left of the group (it is ours: we checked before SIGTERM).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._reap(name, block=True)
        self._procs.clear()
        self._state = None
        with contextlib.suppress(FileNotFoundError):
            self.state_file.unlink()

    def _scan_proc(self) -> dict[int, str]:
        found: dict[int, str] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            cmd = _pid_cmdline(int(entry.name))
            if cmd and Path(cmd[0]).name in _COMPONENTS:
                found[int(entry.name)] = Path(cmd[0]).name
        return found

    def wipe(self) -> None:
        """Delete the state directory (data, certs, logs). Only call when stopped."""
        if not self.dir.exists():
            return
        if any(self.dir.iterdir()) and not (self.dir / "pki").is_dir():
            raise ControlPlaneError(f"refusing to delete {self.dir}: not a control plane dir")
        shutil.rmtree(self.dir)

    def restart_controller_manager(self, *, timeout: float = 30.0) -> None:
        """Restart kube-controller-manager (about 1-2 s).

        The garbage collector re-reads API discovery only every 30 s, so ownerReferences to
        custom resources whose CRD was created after the kcm started are honoured only after
        up to ~40 s. Call this after installing CRDs to make the GC see them at once.
        """
        with self._locked():
            state = self._loaded_state()
            name = "kube-controller-manager"
            self._stop_component(name, state, timeout=10)
            # A fresh port: the old one may linger in TIME_WAIT.
            (state.kcm_port,) = _free_ports(1)
            self._start(name, self._kcm_args(state), state)
            deadline = time.monotonic() + timeout
            self._wait(
                "kube-controller-manager /healthz", lambda: self._kcm_healthy(state), deadline
            )

    def stop_apiserver(self, *, timeout: float = 15.0) -> None:
        """Stop kube-apiserver alone (SIGTERM, then SIGKILL): an API-server outage. etcd and
        the controllers keep running; :meth:`start_apiserver` ends the outage."""
        with self._locked():
            state = self._loaded_state()
            self._stop_component("kube-apiserver", state, timeout=timeout)

    def start_apiserver(self, *, timeout: float = 60.0) -> float:
        """Start kube-apiserver again on the same port, etcd and certificates, and wait until
        it is ready. Returns the seconds it took."""
        with self._locked():
            state = self._loaded_state()
            name = "kube-apiserver"
            if self._owns(name, state.pids.get(name, 0)):
                raise ControlPlaneError("kube-apiserver is running; stop_apiserver() first")
            t0 = time.monotonic()
            self._start(name, self._apiserver_args(state), state)
            self._wait(f"{name} /readyz", self._apiserver_ready, t0 + timeout)
            return time.monotonic() - t0

    def apiserver_running(self) -> bool:
        state = self._loaded_state()
        return self._owns("kube-apiserver", state.pids.get("kube-apiserver", 0))

    def audit_active(self) -> bool:
        """Whether the running kube-apiserver writes ``audit_log`` (a reused instance may
        have been started without ``audit``)."""
        state = self._loaded_state()
        flag = f"--audit-log-path={self.audit_log}"
        return flag in _pid_cmdline(state.pids.get("kube-apiserver", 0))

    def audit_events(self) -> list[dict[str, Any]]:
        """The audit log's events (oldest first; empty without ``audit``). A line being
        written at that moment is skipped."""
        events = []
        try:
            text = self.audit_log.read_text(errors="replace")
        except FileNotFoundError:
            return []
        for line in text.splitlines():
            with contextlib.suppress(ValueError):
                events.append(json.loads(line))
        return events

    def _loaded_state(self) -> _State:
        state = self._state or _State.load(self.state_file)
        if state is None:
            raise ControlPlaneError(f"no control plane state in {self.dir}")
        self._state = state
        return state

    def _stop_component(self, name: str, state: _State, *, timeout: float) -> None:
        pid = state.pids.get(name, 0)
        if self._owns(name, pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGTERM)
            deadline = time.monotonic() + timeout
            while self._owns(name, pid) and time.monotonic() < deadline:
                self._reap(name)
                time.sleep(0.05)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            self._reap(name, block=True)
        self._procs.pop(name, None)

    def is_healthy(self) -> bool:
        """True if the state file describes running, ready components."""
        state = _State.load(self.state_file)
        if state is None:
            return False
        if state.k8s_version != self.version:
            return False
        if not all(self._owns(name, state.pids.get(name, 0)) for name in self.components):
            return False
        if not self.tokens_file.exists() or not self.ca_file.exists():
            return False
        self._state = state
        try:
            return (
                self._apiserver_ready()
                and self._kcm_healthy(state)
                and (not self.has_scheduler or self._scheduler_healthy(state))
            )
        except (OSError, httpx.HTTPError, KeyError):
            return False

    def status(self) -> dict[str, Any]:
        """A JSON-friendly description of the instance."""
        state = _State.load(self.state_file)
        out: dict[str, Any] = {"dir": str(self.dir), "healthy": self.is_healthy()}
        if state is not None:
            out.update(
                server=state.server,
                k8s_version=state.k8s_version,
                ports={
                    "etcd": state.etcd_port,
                    "kube-apiserver": state.apiserver_port,
                    "kube-controller-manager": state.kcm_port,
                    "kube-scheduler": state.scheduler_port or None,
                },
                pids={
                    name: pid if self._owns(name, pid) else None for name, pid in state.pids.items()
                },
                started_at=state.started_at,
                admin_kubeconfig=str(self.admin_kubeconfig),
                operator_kubeconfig=str(self.operator_kubeconfig),
            )
        return out

    def env(self) -> dict[str, str]:
        """Environment variables for using this cluster from a shell or a test."""
        path = os.environ.get("PATH", "")
        tools = str(tools_bin_dir())
        if tools not in path.split(os.pathsep):
            path = tools + os.pathsep + path if path else tools
        return {
            "KUBECONFIG": str(self.admin_kubeconfig),
            "MCP_CLUSTER_DIR": str(self.dir),
            "MCP_CLUSTER_SERVER": self.server,
            "MCP_ADMIN_KUBECONFIG": str(self.admin_kubeconfig),
            "MCP_OPERATOR_KUBECONFIG": str(self.operator_kubeconfig),
            "MCP_K8S_VERSION": self.version,
            "PATH": path,
        }

    def client(self, user: str = ADMIN_USER, *, timeout: float = 10.0) -> httpx.Client:
        """An httpx client authenticated as ``user`` against the API server."""
        return httpx.Client(
            base_url=self.server,
            verify=self._ssl_context(),
            headers={"Authorization": f"Bearer {self.token(user)}"},
            timeout=timeout,
        )

    # ------------------------------------------------------------------------------- internals
    def _owns(self, name: str, pid: int) -> bool:
        """True if ``pid`` is alive and is our ``name`` process (not a recycled pid)."""
        if pid <= 0 or not _pid_alive(pid):
            return False
        cmd = _pid_cmdline(pid)
        marker = f"{self.dir}{os.sep}"
        return bool(cmd) and Path(cmd[0]).name == name and any(marker in arg for arg in cmd)

    def _reap(self, name: str, *, block: bool = False) -> None:
        proc = self._procs.get(name)
        if proc is None:
            return
        if block:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        else:
            proc.poll()

    def _ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))

    def _start(self, name: str, args: Sequence[str], state: _State) -> None:
        log_path = self.log_file(name)
        with log_path.open("ab") as log:
            log.write(f"\n==== {time.strftime('%F %T')} starting {name}\n".encode())
            log.flush()
            proc = subprocess.Popen(
                list(args),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.dir,
                start_new_session=True,
                preexec_fn=_set_pdeathsig if self.die_with_parent else None,
                env=self._child_env(),
            )
        self._procs[name] = proc
        state.pids[name] = proc.pid
        state.save(self.state_file)

    def _child_env(self) -> dict[str, str]:
        keep = ("PATH", "HOME", "LANG", "TZ")
        env = {k: v for k, v in os.environ.items() if k in keep}
        env.setdefault("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        return env

    def _wait(self, what: str, check: Any, deadline: float) -> None:
        last_error = ""
        t0 = time.monotonic()
        while True:
            for name, proc in self._procs.items():
                code = proc.poll()
                if code is not None:
                    raise ControlPlaneError(
                        f"{name} exited with {code} while waiting for {what}; "
                        f"log tail:\n{self._tail(name)}"
                    )
            try:
                if check():
                    self.timings[what] = round(time.monotonic() - t0, 2)
                    return
            except (OSError, httpx.HTTPError, ssl.SSLError) as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() > deadline:
                tails = "\n".join(f"--- {n}:\n{self._tail(n)}" for n in self._procs)
                raise ControlPlaneError(f"timed out waiting for {what} ({last_error})\n{tails}")
            time.sleep(0.1)

    def _tail(self, name: str, lines: int = 30) -> str:
        try:
            text = self.log_file(name).read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _etcd_healthy(self, state: _State) -> bool:
        resp = httpx.get(f"http://127.0.0.1:{state.etcd_port}/health", timeout=2.0)
        return resp.status_code == 200 and '"true"' in resp.text

    def _apiserver_ready(self) -> bool:
        with self.client(timeout=3.0) as client:
            return client.get("/readyz").status_code == 200

    def _kcm_healthy(self, state: _State) -> bool:
        # kcm serves with a self-signed cert from its --cert-dir; /healthz is always allowed.
        resp = httpx.get(f"https://127.0.0.1:{state.kcm_port}/healthz", verify=False, timeout=2.0)
        return resp.status_code == 200

    def _scheduler_healthy(self, state: _State) -> bool:
        resp = httpx.get(
            f"https://127.0.0.1:{state.scheduler_port}/healthz", verify=False, timeout=2.0
        )
        return resp.status_code == 200

    def _default_sa_exists(self) -> bool:
        with self.client(timeout=3.0) as client:
            ns = client.get("/api/v1/namespaces/default")
            sa = client.get("/api/v1/namespaces/default/serviceaccounts/default")
            return ns.status_code == 200 and sa.status_code == 200

    # ------------------------------------------------------------------------------------ args
    def _etcd_args(self, state: _State) -> list[str]:
        client = f"http://127.0.0.1:{state.etcd_port}"
        peer = f"http://127.0.0.1:{state.etcd_peer_port}"
        return [
            str(self.etcd_bin),
            "--name=default",
            f"--data-dir={self.dir / 'etcd'}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=default={peer}",
            "--initial-cluster-state=new",
            "--logger=zap",
            "--log-outputs=stderr",
            "--log-level=warn",
            "--snapshot-count=10000",
            "--quota-backend-bytes=2147483648",
            # The peer URL changes between restarts on the same data dir.
            *(["--force-new-cluster"] if (self.dir / "etcd" / "member").exists() else []),
        ]

    def _apiserver_args(self, state: _State) -> list[str]:
        pki = self.pki_dir
        return [
            str(self.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{state.etcd_port}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={state.apiserver_port}",
            f"--cert-dir={pki / 'apiserver-generated'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={self.ca_file}",
            # Lets the kcm's delegated authn find a request-header CA (else it logs errors).
            f"--requestheader-client-ca-file={self.ca_file}",
            "--requestheader-allowed-names=front-proxy-client",
            "--requestheader-username-headers=X-Remote-User",
            "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-",
            f"--token-auth-file={self.tokens_file}",
            "--authorization-mode=RBAC",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--api-audiences={SERVICE_ACCOUNT_ISSUER}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            # No kubelets, so nothing can serve the kubernetes Service; don't reconcile its
            # (loopback, hence invalid) Endpoints.
            "--endpoint-reconciler-type=none",
            "--allow-privileged=true",
            "--profiling=false",
            "--event-ttl=30m",
            *self._audit_flags(),
            *self._log_flags(),
        ]

    def _audit_flags(self) -> list[str]:
        if not self.audit:
            return []
        self.audit_policy_file.write_text(json.dumps(AUDIT_POLICY, indent=2) + "\n")
        return [
            f"--audit-policy-file={self.audit_policy_file}",
            f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json",
            "--audit-log-maxsize=200",  # MB; the policy keeps it far smaller
            "--audit-log-maxbackup=1",
            # Written synchronously: an event is on disk when the response is sent.
            "--audit-log-mode=blocking",
        ]

    def _kcm_args(self, state: _State) -> list[str]:
        pki = self.pki_dir
        kubeconfig = str(self.admin_kubeconfig)
        return [
            str(self.kube_controller_manager),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.kcm_port}",
            f"--cert-dir={pki / 'kcm-generated'}",
            f"--controllers={','.join(self.kcm_controllers)}",
            "--leader-elect=false",
            "--use-service-account-credentials=false",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={self.ca_file}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--controller-start-interval=0",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            "--concurrent-deployment-syncs=10",
            "--concurrent-replicaset-syncs=10",
            "--concurrent-gc-syncs=20",
            "--concurrent-namespace-syncs=10",
            "--concurrent-serviceaccount-token-syncs=10",
            "--namespace-sync-period=30s",
            "--min-resync-period=1m",
            "--terminated-pod-gc-threshold=500",
            *self._log_flags(),
        ]

    @property
    def kcm_controllers(self) -> tuple[str, ...]:
        """``KCM_CONTROLLERS``, plus ``nodelifecycle``: the node agent keeps Leases fresh, so a
        node whose agent died turns NotReady and is tainted, which is what a zone loss looks
        like to the operator."""
        return (*KCM_CONTROLLERS, "nodelifecycle")

    def _scheduler_args(self, state: _State) -> list[str]:
        kubeconfig = str(self.admin_kubeconfig)
        return [
            str(self.kube_scheduler),
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={state.scheduler_port}",
            f"--cert-dir={self.pki_dir / 'scheduler-generated'}",
            "--leader-elect=false",
            "--kube-api-qps=200",
            "--kube-api-burst=400",
            *self._log_flags(),
        ]

    def _log_flags(self) -> list[str]:
        # --logtostderr was removed in 1.26 (stderr is the only destination since).
        return ["--v=1"]

    # ------------------------------------------------------------------------------------- pki
    def _ensure_pki(self) -> None:
        pki = self.pki_dir
        pki.mkdir(parents=True, exist_ok=True)
        os.chmod(pki, 0o700)
        ca_key_path = pki / "ca.key"
        if not (ca_key_path.exists() and self.ca_file.exists()):
            ca_key, ca_cert = _make_ca()
            _write_key(ca_key_path, ca_key)
            self.ca_file.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        ca_key_obj = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        assert isinstance(ca_key_obj, rsa.RSAPrivateKey)
        ca_cert_obj = x509.load_pem_x509_certificate(self.ca_file.read_bytes())
        if not ((pki / "apiserver.crt").exists() and (pki / "apiserver.key").exists()):
            key, cert = _make_serving_cert(ca_key_obj, ca_cert_obj)
            _write_key(pki / "apiserver.key", key)
            (pki / "apiserver.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        if not ((pki / "sa.key").exists() and (pki / "sa.pub").exists()):
            sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            _write_key(pki / "sa.key", sa_key)
            (pki / "sa.pub").write_bytes(
                sa_key.public_key().public_bytes(
                    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            )
        if not self.tokens_file.exists():
            rows = [
                f'{secrets.token_hex(24)},{ADMIN_USER},uid-admin,"system:masters"',
                f'{secrets.token_hex(24)},{OPERATOR_USER},uid-mcp-operator,"system:authenticated"',
            ]
            self.tokens_file.write_text("\n".join(rows) + "\n")
            os.chmod(self.tokens_file, 0o600)

    def _write_kubeconfigs(self, state: _State) -> None:
        ca_data = _b64(self.ca_file.read_bytes())
        for path, user in (
            (self.admin_kubeconfig, ADMIN_USER),
            (self.operator_kubeconfig, OPERATOR_USER),
        ):
            config = _kubeconfig(state.server, ca_data, user, self.token(user))
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(config, indent=2) + "\n")
            os.chmod(tmp, 0o600)
            tmp.replace(path)


def _kubeconfig(server: str, ca_data: str, user: str, token: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "mcp-local",
                "cluster": {"server": server, "certificate-authority-data": ca_data},
            }
        ],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [
            {"name": f"{user}@mcp-local", "context": {"cluster": "mcp-local", "user": user}}
        ],
        "current-context": f"{user}@mcp-local",
        "preferences": {},
    }


def _write_key(path: Path, key: rsa.RSAPrivateKey) -> None:
    data = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def _make_ca() -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mcp-operator-local-ca")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=True,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _make_serving_cert(
    ca_key: rsa.RSAPrivateKey, ca_cert: x509.Certificate
) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    now = datetime.datetime.now(datetime.UTC)
    dns = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
        "kubernetes.default.svc.cluster.local",
    ]
    ips = ["127.0.0.1", "::1", "10.96.0.1"]
    san = x509.SubjectAlternativeName(
        [x509.DNSName(d) for d in dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "kube-apiserver")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(san, critical=False)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


# ------------------------------------------------------------------------------------------ CLI
def _print_env(env: Mapping[str, str], out: TextIO) -> None:
    for key, value in env.items():
        quoted = "'" + value.replace("'", "'\\''") + "'"
        out.write(f"export {key}={quoted}\n")


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mcp_devcluster.controlplane",
        description="Local etcd + kube-apiserver + kube-controller-manager + kube-scheduler.",
    )
    parser.add_argument("--k8s-version", default=None, help=f"Kubernetes release ({k8s_version()})")
    parser.add_argument("command", choices=["up", "down", "status", "env", "version"])
    parser.add_argument("--dir", type=Path, default=None, help=f"state dir ({default_dir()})")
    parser.add_argument("--fresh", action="store_true", help="up: wipe data and certs first")
    parser.add_argument("--purge", action="store_true", help="down: also delete the state dir")
    parser.add_argument("--timeout", type=float, default=60.0, help="up: seconds to wait")
    parser.add_argument(
        "--current", action="store_true", help="version: the newest tested release instead"
    )
    parser.add_argument(
        "--oldest", action="store_true", help="version: the oldest supported release instead"
    )
    args = parser.parse_args(argv)
    if args.command == "version":
        if args.oldest:
            print(OLDEST_K8S_VERSION)
        else:
            print(CURRENT_K8S_VERSION if args.current else args.k8s_version or k8s_version())
        return 0
    cp = ControlPlane(args.dir, version=args.k8s_version)

    if args.command == "up":
        start = time.monotonic()
        try:
            with _sigterm_as_interrupt():
                reused = cp.up(fresh=args.fresh, timeout=args.timeout)
        except ControlPlaneError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        verb = "reused" if reused else "started"
        print(
            f"control plane {cp.version} {verb} in {time.monotonic() - start:.1f}s: {cp.server}\n"
            f"  admin:    {cp.admin_kubeconfig}\n"
            f"  operator: {cp.operator_kubeconfig}\n"
            f"  logs:     {cp.log_dir}\n"
            f"  timings:  {json.dumps(cp.timings)}\n"
            f'  eval "$(python -m mcp_devcluster.controlplane env --dir {cp.dir})"',
            file=sys.stderr,
        )
        return 0
    if args.command == "down":
        cp.down()
        if args.purge:
            cp.wipe()
        return 0
    if args.command == "status":
        status = cp.status()
        print(json.dumps(status, indent=2))
        return 0 if status["healthy"] else 1
    # env
    if not cp.is_healthy():
        print(f"error: no healthy control plane in {cp.dir}", file=sys.stderr)
        return 1
    _print_env(cp.env(), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
