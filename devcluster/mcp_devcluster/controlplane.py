"""A real, local Kubernetes control plane for tests and the demo.

Runs etcd, kube-apiserver and kube-controller-manager (1.20.2, built by ``hack/build-k8s.sh``)
on 127.0.0.1 with free ports, each in its own process group, with logs and state in one
directory. There is no scheduler and no kubelet: a separate node agent binds and runs pods.

Authentication is by static bearer tokens (``--token-auth-file``) over TLS with a CA generated
here; authorization is RBAC. Two users exist:

* ``admin`` in group ``system:masters`` -> ``admin.kubeconfig``
* ``mcp-operator`` in group ``system:authenticated`` only -> ``operator.kubeconfig``
  (it can do nothing until bound to a Role/ClusterRole).

Service accounts work (TokenRequest, token controller, root CA publisher).

Command line::

    python -m mcp_devcluster.controlplane up|down|status|env [--dir DIR]

``up`` reuses a healthy instance described by ``state.json`` in the directory; otherwise it
(re)starts everything, keeping etcd data and certificates unless ``--fresh`` is given.
``down --purge`` also deletes the directory. ``env`` prints ``export`` lines (KUBECONFIG=admin,
MCP_OPERATOR_KUBECONFIG, MCP_CLUSTER_SERVER, MCP_CLUSTER_DIR, PATH with kubectl/helm).

Environment: ``MCP_CLUSTER_DIR`` (default state dir), ``MCP_CACHE_DIR`` (default
``~/.cache/mcp-operator``), ``MCP_K8S_CACHE`` (k8s binaries), ``MCP_TOOLS_BIN`` (kubectl, helm).

Good to know:

* The kcm runs without leader election and without nodelifecycle; ``podgc`` deletes pods
  bound to a node that has no Node object, so whatever binds pods must register its Node.
* The garbage collector re-reads discovery every 30 s: call ``restart_controller_manager()``
  after installing CRDs if a test needs GC of dependents of custom resources at once.
* ``--endpoint-reconciler-type=none``: the ``kubernetes`` Service has no endpoints; in-"cluster"
  clients must be pointed at ``server`` (127.0.0.1:PORT), whose cert also covers 10.96.0.1 and
  ``kubernetes.default.svc``.
* The API audience/issuer of service account tokens is ``SERVICE_ACCOUNT_ISSUER``.
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
    "KCM_CONTROLLERS",
    "OPERATOR_USER",
    "ControlPlane",
    "ControlPlaneError",
    "default_dir",
    "k8s_bin_dir",
    "tools_bin_dir",
]

ADMIN_USER = "admin"
OPERATOR_USER = "mcp-operator"
SERVICE_CIDR = "10.96.0.0/16"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
STATE_VERSION = 1

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

_COMPONENTS = ("etcd", "kube-apiserver", "kube-controller-manager")


class ControlPlaneError(RuntimeError):
    """The control plane could not be started, or is not healthy."""


def _cache_root() -> Path:
    return Path(os.environ.get("MCP_CACHE_DIR", Path.home() / ".cache" / "mcp-operator"))


def default_dir() -> Path:
    """State directory used when none is given (``$MCP_CLUSTER_DIR`` or the cache)."""
    env = os.environ.get("MCP_CLUSTER_DIR")
    return Path(env) if env else _cache_root() / "cluster"


def k8s_bin_dir() -> Path:
    """Where ``hack/build-k8s.sh`` puts kube-apiserver and kube-controller-manager."""
    env = os.environ.get("MCP_K8S_CACHE")
    return Path(env) if env else _cache_root() / "k8s-1.20.2"


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
    """etcd + kube-apiserver + kube-controller-manager in one state directory.

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
    ) -> None:
        self.dir = Path(directory) if directory is not None else default_dir()
        self.dir = self.dir.expanduser().absolute()
        self.k8s_bin = Path(k8s_bin) if k8s_bin is not None else k8s_bin_dir()
        found_etcd = etcd_bin or shutil.which("etcd") or "/usr/bin/etcd"
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

    def log_file(self, component: str) -> Path:
        return self.log_dir / f"{component}.log"

    @property
    def kube_apiserver(self) -> Path:
        return self.k8s_bin / "kube-apiserver"

    @property
    def kube_controller_manager(self) -> Path:
        return self.k8s_bin / "kube-controller-manager"

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
        for path in (self.etcd_bin, self.kube_apiserver, self.kube_controller_manager):
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
                + " (run hack/build-k8s.sh and hack/install-tools.sh)"
            )
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(exist_ok=True)
        self.timings = {}
        t0 = time.monotonic()
        self._ensure_pki()
        self.timings["pki"] = round(time.monotonic() - t0, 2)
        deadline = time.monotonic() + timeout
        etcd_port, etcd_peer_port, apiserver_port, kcm_port = _free_ports(4)
        state = _State(
            version=STATE_VERSION,
            server="",
            etcd_port=etcd_port,
            etcd_peer_port=etcd_peer_port,
            apiserver_port=apiserver_port,
            kcm_port=kcm_port,
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
        # Stop in reverse start order: kcm, apiserver, etcd.
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
            state = self._state or _State.load(self.state_file)
            if state is None:
                raise ControlPlaneError(f"no control plane state in {self.dir}")
            self._state = state
            name = "kube-controller-manager"
            pid = state.pids.get(name, 0)
            if self._owns(name, pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGTERM)
                deadline = time.monotonic() + 10
                while self._owns(name, pid) and time.monotonic() < deadline:
                    self._reap(name)
                    time.sleep(0.05)
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
                self._reap(name, block=True)
            self._procs.pop(name, None)
            # A fresh port: the old one may linger in TIME_WAIT.
            (state.kcm_port,) = _free_ports(1)
            self._start(name, self._kcm_args(state), state)
            deadline = time.monotonic() + timeout
            self._wait(
                "kube-controller-manager /healthz", lambda: self._kcm_healthy(state), deadline
            )

    def is_healthy(self) -> bool:
        """True if the state file describes running, ready components."""
        state = _State.load(self.state_file)
        if state is None:
            return False
        if not all(self._owns(name, state.pids.get(name, 0)) for name in _COMPONENTS):
            return False
        if not self.tokens_file.exists() or not self.ca_file.exists():
            return False
        self._state = state
        try:
            return self._apiserver_ready() and self._kcm_healthy(state)
        except (OSError, httpx.HTTPError, KeyError):
            return False

    def status(self) -> dict[str, Any]:
        """A JSON-friendly description of the instance."""
        state = _State.load(self.state_file)
        out: dict[str, Any] = {"dir": str(self.dir), "healthy": self.is_healthy()}
        if state is not None:
            out.update(
                server=state.server,
                ports={
                    "etcd": state.etcd_port,
                    "kube-apiserver": state.apiserver_port,
                    "kube-controller-manager": state.kcm_port,
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
            "--insecure-port=0",
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
            "--logtostderr=true",
            "--v=1",
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
            "--port=0",
            f"--cert-dir={pki / 'kcm-generated'}",
            f"--controllers={','.join(KCM_CONTROLLERS)}",
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
            "--logtostderr=true",
            "--v=1",
        ]

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
        description="Local etcd + kube-apiserver + kube-controller-manager (no scheduler).",
    )
    parser.add_argument("command", choices=["up", "down", "status", "env"])
    parser.add_argument("--dir", type=Path, default=None, help=f"state dir ({default_dir()})")
    parser.add_argument("--fresh", action="store_true", help="up: wipe data and certs first")
    parser.add_argument("--purge", action="store_true", help="down: also delete the state dir")
    parser.add_argument("--timeout", type=float, default=60.0, help="up: seconds to wait")
    args = parser.parse_args(argv)
    cp = ControlPlane(args.dir)

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
            f"control plane {verb} in {time.monotonic() - start:.1f}s: {cp.server}\n"
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
