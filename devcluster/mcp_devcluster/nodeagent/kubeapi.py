"""A small JSON-over-HTTP Kubernetes client and list+watch informer.

The agent works on raw JSON dicts (the shape the API serves), so it talks REST directly
with httpx and uses the official client only to read the kubeconfig (every auth variant
it supports works here too). Raw dicts avoid the generated models' round-trip quirks
(e.g. ``pods/binding`` answers a Status the Binding model cannot parse) and keep the
agent light.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

log = logging.getLogger("nodeagent.kube")

JSON = dict[str, Any]
SMP = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"


class ApiError(Exception):
    """A non-2xx answer from the API server."""

    def __init__(self, status: int, body: str) -> None:
        super().__init__(f"HTTP {status}: {body[:300]}")
        self.status = status


def _load_kubeconfig(path: str) -> tuple[str, dict[str, Any]]:
    """Return the server URL and httpx client kwargs (TLS, auth) for a kubeconfig."""
    from kubernetes import client as k8s_client
    from kubernetes import config as k8s_config

    cfg = k8s_client.Configuration()
    k8s_config.load_kube_config(config_file=path, client_configuration=cfg)  # type: ignore[no-untyped-call]
    kwargs: dict[str, Any] = {
        "verify": cfg.ssl_ca_cert if cfg.verify_ssl and cfg.ssl_ca_cert else cfg.verify_ssl
    }
    if cfg.cert_file and cfg.key_file:
        kwargs["cert"] = (cfg.cert_file, cfg.key_file)
    headers = {}
    token = (cfg.api_key or {}).get("authorization") or (cfg.api_key or {}).get("BearerToken")
    if token:
        headers["Authorization"] = (
            token if token.lower().startswith("bearer ") else f"Bearer {token}"
        )
    kwargs["headers"] = headers
    return str(cfg.host), kwargs


class KubeClient:
    """Thread-safe REST access with JSON bodies."""

    def __init__(self, kubeconfig: str, timeout: float = 15.0) -> None:
        self.server, kwargs = _load_kubeconfig(kubeconfig)
        limits = httpx.Limits(max_connections=64, max_keepalive_connections=16)
        self._http = httpx.Client(base_url=self.server, timeout=timeout, limits=limits, **kwargs)

    def close(self) -> None:
        self._http.close()

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        content_type: str = "application/json",
        params: Mapping[str, str] | None = None,
    ) -> JSON:
        """One call; raise ApiError on failure, return the decoded JSON (or {})."""
        data = None if body is None else json.dumps(body)
        headers = {"Content-Type": content_type} if data is not None else {}
        resp = self._http.request(method, path, content=data, headers=headers, params=params)
        if resp.status_code >= 300:
            raise ApiError(resp.status_code, resp.text)
        return resp.json() if resp.content else {}

    def get(self, path: str, params: Mapping[str, str] | None = None) -> JSON:
        return self.request("GET", path, params=params)

    def create(self, path: str, body: Any) -> JSON:
        return self.request("POST", path, body)

    def patch(self, path: str, body: Any, content_type: str = SMP) -> JSON:
        return self.request("PATCH", path, body, content_type=content_type)

    def delete(self, path: str, body: Any = None) -> JSON:
        return self.request("DELETE", path, body)

    def stream(
        self,
        path: str,
        params: Mapping[str, str],
        stop: threading.Event,
        on_open: Callable[[httpx.Response | None], None],
    ) -> Iterator[JSON]:
        """Yield watch events until the server ends the stream (or ``stop`` is set)."""
        timeout = httpx.Timeout(15.0, read=float(params.get("timeoutSeconds", "300")) + 30)
        with self._http.stream(
            "GET", path, params={**params, "watch": "1"}, timeout=timeout
        ) as resp:
            if resp.status_code >= 300:
                raise ApiError(resp.status_code, resp.read().decode())
            on_open(resp)
            try:
                for line in resp.iter_lines():
                    if stop.is_set():
                        return
                    if line:
                        yield json.loads(line)
            finally:
                on_open(None)


def key_of(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata", {})
    return f"{meta.get('namespace', '')}/{meta.get('name', '')}"


Handler = Callable[[str, JSON], None]


class Informer:
    """List, then watch from the list's resourceVersion; relist on 410 or errors.

    Keeps a cache by ``namespace/name`` and calls ``handler(event_type, obj)`` for
    ADDED/MODIFIED/DELETED (a relist replays ADDED for everything present and DELETED for
    what vanished). Handlers run on the informer thread, so they must be quick.
    """

    def __init__(
        self,
        client: KubeClient,
        path: str,
        handler: Handler,
        name: str,
        params: Mapping[str, str] | None = None,
    ) -> None:
        self._client, self._path, self._handler, self.name = client, path, handler, name
        self._params = dict(params or {})
        self._cache: dict[str, JSON] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.synced = threading.Event()
        self._resp: httpx.Response | None = None
        self._thread = threading.Thread(target=self._run, name=f"informer-{name}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, join: bool = True) -> None:
        """Stop delivering events; shut the watch socket down so a blocked read returns now."""
        self._stop.set()
        resp = self._resp
        if resp is not None:
            stream = resp.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            with contextlib.suppress(Exception):
                sock.shutdown(socket.SHUT_RDWR) if sock is not None else resp.close()
        if join and self._thread.is_alive():
            self._thread.join(timeout=5)

    def get(self, key: str) -> JSON | None:
        with self._lock:
            return self._cache.get(key)

    def items(self) -> list[JSON]:
        with self._lock:
            return list(self._cache.values())

    def _set_resp(self, resp: httpx.Response | None) -> None:
        self._resp = resp

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                rv = self._relist()
                self.synced.set()
                while not self._stop.is_set() and rv:
                    rv = self._watch(rv)
            except Exception as exc:
                if not self._stop.is_set():
                    log.warning("informer %s: %s; relisting in 1s", self.name, exc)
                    self._stop.wait(1.0)

    def _relist(self) -> str:
        listing = self._client.get(self._path, params=self._params)
        fresh = {key_of(o): o for o in listing.get("items", [])}
        kind = listing.get("kind", "").removesuffix("List")
        with self._lock:
            gone = [o for k, o in self._cache.items() if k not in fresh]
            self._cache = fresh
        for obj in gone:
            self._handler("DELETED", obj)
        for obj in fresh.values():
            obj.setdefault("kind", kind)
            self._handler("ADDED", obj)
        return str(listing.get("metadata", {}).get("resourceVersion", ""))

    def _watch(self, rv: str) -> str:
        """Watch from ``rv``; return the next rv to resume from, or "" to relist."""
        params = {
            **self._params,
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": "300",
        }
        for event in self._client.stream(self._path, params, self._stop, self._set_resp):
            kind, obj = event.get("type", ""), event.get("object", {})
            if kind == "ERROR":
                return "" if obj.get("code") == 410 else rv
            rv = obj.get("metadata", {}).get("resourceVersion", rv)
            if kind == "BOOKMARK":
                continue
            self._apply(kind, obj)
        return rv

    def _apply(self, kind: str, obj: JSON) -> None:
        if self._stop.is_set():
            return
        key = key_of(obj)
        with self._lock:
            if kind == "DELETED":
                self._cache.pop(key, None)
            else:
                self._cache[key] = obj
        self._handler(kind, obj)


def now_rfc3339() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def micro_time() -> str:
    """MicroTime for Leases."""
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"
