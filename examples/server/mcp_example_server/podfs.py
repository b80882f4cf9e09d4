"""Pod paths, with or without a mount namespace, and the pod's Kubernetes identity.

In a real pod, ``/etc/config/app.toml`` and ``$HOME`` are simply paths. The dev cluster's
node agent runs containers as plain processes (no mount namespace) and tells each one where
its volumes really are in ``NODEAGENT_MOUNTS`` (``{mountPath: hostPath}``); this module maps
a pod path through it, longest mount first, so the same tools work in both worlds.
"""

from __future__ import annotations

import json
import os
import ssl
from collections.abc import Mapping
from pathlib import Path

SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def host_path(path: str, env: Mapping[str, str] | None = None) -> Path:
    """Where the pod path ``path`` is on this machine."""
    env = os.environ if env is None else env
    mounts: dict[str, str] = json.loads(env.get("NODEAGENT_MOUNTS") or "{}")
    for mount in sorted(mounts, key=len, reverse=True):
        prefix = mount.rstrip("/")
        if path == prefix or path.startswith(prefix + "/"):
            return Path(mounts[mount] + path[len(prefix) :])
    return Path(path)


def write_home(name: str, content: str, env: Mapping[str, str] | None = None) -> str:
    """Write ``$HOME/name``; return the pod path written (fails on a read-only HOME)."""
    env = os.environ if env is None else env
    home = env.get("HOME") or "/"
    if "/" in name or name in ("", ".", ".."):
        raise ValueError("name must be a plain file name")
    target = host_path(home, env) / name
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(content)
    return f"{home.rstrip('/')}/{name}"


async def kube_get(api_path: str, env: Mapping[str, str] | None = None) -> str:
    """GET ``api_path`` from the Kubernetes API as the pod's ServiceAccount (the mounted
    token and CA, the API address Kubernetes puts in ``KUBERNETES_SERVICE_*``)."""
    import httpx

    env = os.environ if env is None else env
    sa = host_path(SA_DIR, env)
    token_file = sa / "token"
    if not token_file.exists():
        return "no service account token mounted (automountServiceAccountToken is off?)"
    token = token_file.read_text().strip()
    context = ssl.create_default_context(cafile=str(sa / "ca.crt"))
    host = env.get("KUBERNETES_SERVICE_HOST", "kubernetes.default.svc")
    port = env.get("KUBERNETES_SERVICE_PORT", "443")
    url = f"https://{host}:{port}{api_path}"
    async with httpx.AsyncClient(verify=context, timeout=5) as client:
        response = await client.get(url, headers={"Authorization": f"Bearer {token}"})
    kind = ""
    if response.headers.get("content-type", "").startswith("application/json"):
        kind = str(response.json().get("kind", ""))
    return f"status={response.status_code} kind={kind}"
