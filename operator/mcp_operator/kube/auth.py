"""Where the operator's API credentials come from, and how they stay fresh.

* In a cluster: the projected service-account token is *bound* and rotated by the kubelet
  (hourly by default). It is re-read whenever the file changes, and again on a 401.
* Elsewhere: the kubeconfig is read by the official ``kubernetes`` package's loader — the
  one kopf's own login uses — so exec plugins (cloud IAM), ``tokenFile``, client
  certificates, embedded CA data and multi-file ``KUBECONFIG`` all work as with kubectl,
  rather than through a hand-written parser. A ``tokenFile`` is re-read on change, an exec
  plugin's token is refreshed when it expires and on a 401.

Problems become :class:`CredentialsError` with a one-line message (no traceback).
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
STAT_EVERY_S = 1.0  # at most one stat() of a token file per second


class CredentialsError(Exception):
    """No usable credentials; the message is one line meant for humans."""


class TokenSource(Protocol):
    def current(self) -> str | None: ...

    def invalidate(self) -> None:
        """The API server said 401: refresh before the next request."""


class FileToken:
    """A token file that is re-read when it changes (mtime, size or inode)."""

    def __init__(self, path: Path, clock: Any = time.monotonic) -> None:
        self.path = path
        self.clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = float("-inf")
        self._token: str | None = None

    def current(self) -> str | None:
        with self._lock:
            now = self.clock()
            if now - self._checked >= STAT_EVERY_S:
                self._checked = now
                self._reload_if_changed()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._stamp = None
            self._checked = float("-inf")

    def _reload_if_changed(self) -> None:
        try:
            st = self.path.stat()
        except OSError:
            return  # keep the last token: a rotation swaps a symlink, briefly absent
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._token = self.path.read_text().strip() or None
            self._stamp = stamp


class LoaderToken:
    """A token that the ``kubernetes`` loader produced (exec plugin, auth provider,
    inline token). Its refresh hook renews an expired exec credential; a 401 reloads."""

    def __init__(
        self, kubeconfig: str | None, context: str | None, clock: Any = time.monotonic
    ) -> None:
        self.kubeconfig = kubeconfig
        self.context = context
        self.clock = clock
        self._lock = threading.Lock()
        self._config = _load_kubeconfig(kubeconfig, context)
        self._checked = float("-inf")
        self._token: str | None = None

    def current(self) -> str | None:
        """The token, its refresh hook run at most once per ``STAT_EVERY_S``: the hook
        re-reads the whole loader state (and scans the environment for proxies), 1.3 ms per
        API request at 1,000 servers. An expired token in between gets a 401, which
        invalidates."""
        with self._lock:
            now = self.clock()
            if now - self._checked >= STAT_EVERY_S:
                self._checked = now
                hook = getattr(self._config, "refresh_api_key_hook", None)
                if hook is not None:
                    hook(self._config)
                self._token = _bearer(self._config)
            return self._token

    def invalidate(self) -> None:
        # On failure keep the old one: the request fails visibly and is retried.
        with self._lock, contextlib.suppress(CredentialsError):
            self._checked = float("-inf")  # the hook runs next time even if this fails
            self._config = _load_kubeconfig(self.kubeconfig, self.context)


@dataclass(frozen=True)
class Credentials:
    server: str
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    insecure: bool = False
    tokens: TokenSource | None = field(default=None, compare=False)

    @property
    def token(self) -> str | None:
        return self.tokens.current() if self.tokens is not None else None


def _bearer(config: Any) -> str | None:
    header = config.get_api_key_with_prefix("BearerToken") or config.get_api_key_with_prefix(
        "authorization"
    )
    if not header:
        return None
    scheme, _, token = str(header).partition(" ")
    return token if token else scheme


def _load_kubeconfig(path: str | None, context: str | None) -> Any:
    from kubernetes import client, config

    cfg = client.Configuration()
    try:
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=path, context=context, client_configuration=cfg, persist_config=False
        )
    except config.ConfigException as exc:
        where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CredentialsError(f"cannot use kubeconfig {where}: {_one_line(exc)}") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = path or os.environ.get("KUBECONFIG") or "~/.kube/config"
        raise CredentialsError(f"cannot read kubeconfig {where}: {_one_line(exc)}") from None
    return cfg


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _token_file(path: str | None, context: str | None) -> str | None:
    """The ``tokenFile`` of the selected user, to re-read it when it changes."""
    from kubernetes.config import kube_config

    try:
        loader = kube_config._get_kube_config_loader(  # type: ignore[no-untyped-call]
            filename=path, active_context=context
        )
        user = loader._user
        value = user.safe_get("tokenFile") if user is not None else None
    except Exception:
        return None
    return str(value) if value else None


def credentials_from_kubeconfig(path: str | None = None, context: str | None = None) -> Credentials:
    from kubernetes.config import kube_config

    path = path or os.environ.get("KUBECONFIG") or None
    location = path or kube_config.KUBE_CONFIG_DEFAULT_LOCATION
    first = os.path.expanduser(location.split(os.pathsep)[0])
    if not os.path.exists(first):
        raise CredentialsError(
            f"no kubeconfig at {first} and not running in a cluster "
            "(set KUBECONFIG or --kubeconfig)"
        )
    loader_token = LoaderToken(location, context)
    cfg = loader_token._config
    token_file = _token_file(location, context)
    tokens: TokenSource | None = FileToken(Path(token_file)) if token_file else None
    if tokens is None and _bearer(cfg):
        tokens = loader_token
    return Credentials(
        server=str(cfg.host).rstrip("/"),
        ca_file=cfg.ssl_ca_cert or None,
        cert_file=cfg.cert_file or None,
        key_file=cfg.key_file or None,
        insecure=not cfg.verify_ssl,
        tokens=tokens,
    )


def credentials_in_cluster(sa_dir: Path = SA_DIR) -> Credentials:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
    if ":" in host:
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        ca_file=str(sa_dir / "ca.crt"),
        tokens=FileToken(sa_dir / "token"),
    )


def load_credentials(kubeconfig: str | None = None) -> Credentials:
    """In-cluster when run in a pod without an explicit kubeconfig, else the kubeconfig."""
    if kubeconfig is None and "KUBERNETES_SERVICE_HOST" in os.environ and SA_DIR.exists():
        return credentials_in_cluster()
    return credentials_from_kubeconfig(kubeconfig)
