"""Container environment resolution, following the kubelet's rules.

Order: ``envFrom`` sources first, then ``env`` entries (later wins); ``$(VAR)`` in a value
expands to an earlier variable, ``$$`` escapes. A missing non-optional Secret/ConfigMap
(or key) is a ``CreateContainerConfigError``: the container waits and is retried when
the source appears. Supported ``fieldRef`` paths: ``metadata.name``, ``metadata.namespace``,
``metadata.uid``, ``metadata.labels['x']``, ``metadata.annotations['x']``,
``spec.nodeName``, ``spec.serviceAccountName``, ``status.podIP``, ``status.podIPs``,
``status.hostIP``. ``resourceFieldRef`` is not supported (resolves to an empty string).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from typing import Any, Protocol

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)")
_SUBSCRIPT = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


class ConfigError(Exception):
    """The container cannot be configured yet (kubelet: CreateContainerConfigError)."""


class Sources(Protocol):
    """Read access to Secret and ConfigMap data (already base64-decoded), None if absent."""

    def secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None: ...

    def config_map_data(self, namespace: str, name: str) -> Mapping[str, str] | None: ...


def decode_secret(obj: Mapping[str, Any]) -> dict[str, str]:
    """Secret ``data`` (base64) merged with ``stringData``, as text."""
    out = {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (obj.get("data") or {}).items()
    }
    out.update(obj.get("stringData") or {})
    return out


def config_map_values(obj: Mapping[str, Any]) -> dict[str, str]:
    """ConfigMap ``data`` plus ``binaryData`` decoded as text."""
    out = {
        k: base64.b64decode(v).decode("utf-8", "replace")
        for k, v in (obj.get("binaryData") or {}).items()
    }
    out.update(obj.get("data") or {})
    return out


def expand(value: str, env: Mapping[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion; unknown references stay verbatim."""

    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _VAR.sub(repl, value)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """Resolve a downward-API ``fieldRef.fieldPath`` against the pod."""
    meta, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status", {})
    simple = {
        "metadata.name": meta.get("name"),
        "metadata.namespace": meta.get("namespace"),
        "metadata.uid": meta.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
        "status.podIPs": ",".join(p.get("ip", "") for p in status.get("podIPs") or []),
    }
    if path in simple:
        return str(simple[path] or "")
    sub = _SUBSCRIPT.match(path)
    if sub:
        return str((meta.get(sub.group(1)) or {}).get(sub.group(2), ""))
    raise ConfigError(f"unsupported fieldRef {path!r}")


def _key_ref(ref: Mapping[str, Any], data: Mapping[str, str] | None, kind: str) -> str | None:
    """Value of ``ref.key`` in ``data``; None when optional and missing, ConfigError otherwise."""
    name, key, optional = ref.get("name", ""), ref.get("key", ""), bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{name}" not found')
    if key not in data:
        if optional:
            return None
        raise ConfigError(f'couldn\'t find key {key} in {kind} "{name}"')
    return data[key]


def _value_from(src: Mapping[str, Any], pod: Mapping[str, Any], sources: Sources) -> str | None:
    ns = pod.get("metadata", {}).get("namespace", "default")
    if "secretKeyRef" in src:
        ref = src["secretKeyRef"]
        return _key_ref(ref, sources.secret_data(ns, ref.get("name", "")), "secret")
    if "configMapKeyRef" in src:
        ref = src["configMapKeyRef"]
        return _key_ref(ref, sources.config_map_data(ns, ref.get("name", "")), "configmap")
    if "fieldRef" in src:
        return field_value(pod, src["fieldRef"].get("fieldPath", ""))
    return ""


def _env_from(
    container: Mapping[str, Any], pod: Mapping[str, Any], sources: Sources
) -> dict[str, str]:
    ns = pod.get("metadata", {}).get("namespace", "default")
    out: dict[str, str] = {}
    for src in container.get("envFrom") or []:
        prefix = src.get("prefix", "")
        ref = src.get("configMapRef") or src.get("secretRef") or {}
        is_secret = "secretRef" in src
        name = ref.get("name", "")
        data = sources.secret_data(ns, name) if is_secret else sources.config_map_data(ns, name)
        if data is None:
            if ref.get("optional"):
                continue
            raise ConfigError(f'{"secret" if is_secret else "configmap"} "{name}" not found')
        out.update({prefix + k: v for k, v in data.items()})
    return out


def resolve_env(
    container: Mapping[str, Any], pod: Mapping[str, Any], sources: Sources
) -> dict[str, str]:
    """The container's environment (without the agent's extras such as POD_IP)."""
    env = _env_from(container, pod, sources)
    for item in container.get("env") or []:
        if "valueFrom" in item:
            value = _value_from(item["valueFrom"], pod, sources)
            if value is None:
                continue
        else:
            value = expand(str(item.get("value", "")), env)
        env[item["name"]] = value
    return env
