"""Secret, ConfigMap, emptyDir and downwardAPI volumes as per-pod host directories.

A process cannot see ``mountPath`` (no mount namespace), so each volume becomes a host
directory and the container learns the mapping from env ``NODEAGENT_MOUNTS``, a JSON
object ``{mountPath: hostPath}`` (with ``subPath`` the hostPath points at the file or
subdirectory). Updates are written the way the kubelet's AtomicWriter does it: files go
into a fresh hidden directory, the ``..data`` symlink is swapped with one ``rename`` and
the visible names are symlinks through ``..data``, so a reader never sees a half-written
set of files and watchers of ``..data`` see one change per update.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from .envvars import ConfigError, field_value

Files = dict[str, tuple[bytes, int]]


class VolumeSources(Protocol):
    """Raw Secret/ConfigMap contents (decoded bytes), None when the object is absent."""

    def secret_bytes(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...

    def config_map_bytes(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...

    def service_account_token(
        self, pod: Mapping[str, Any], audience: str | None, seconds: int
    ) -> bytes: ...


def _project(data: Mapping[str, bytes], src: Mapping[str, Any], kind: str, name: str) -> Files:
    """Apply ``items`` (key → path, mode) or take every key, with ``defaultMode``."""
    default_mode = int(src.get("defaultMode") or 0o644)
    items = src.get("items")
    if not items:
        return {key: (value, default_mode) for key, value in data.items()}
    out: Files = {}
    for item in items:
        if item["key"] not in data:
            if src.get("optional"):
                continue
            raise ConfigError(f'couldn\'t find key {item["key"]} in {kind} "{name}"')
        out[item["path"]] = (data[item["key"]], int(item.get("mode") or default_mode))
    return out


def volume_files(
    volume: Mapping[str, Any], pod: Mapping[str, Any], sources: VolumeSources
) -> Files | None:
    """Desired files of a content volume; None for emptyDir (and other unmanaged kinds)."""
    ns = pod.get("metadata", {}).get("namespace", "default")
    if "secret" in volume:
        src = volume["secret"]
        name = src.get("secretName", "")
        return _from_source(sources.secret_bytes(ns, name), src, "secret", name)
    if "configMap" in volume:
        src = volume["configMap"]
        name = src.get("name", "")
        return _from_source(sources.config_map_bytes(ns, name), src, "configmap", name)
    if "downwardAPI" in volume:
        src = volume["downwardAPI"]
        return _downward(src, pod, int(src.get("defaultMode") or 0o644))
    if "projected" in volume:
        return _projected(volume["projected"], pod, sources)
    return None


def _downward(src: Mapping[str, Any], pod: Mapping[str, Any], mode: int) -> Files:
    return {
        i["path"]: (
            field_value(pod, i["fieldRef"]["fieldPath"]).encode(),
            int(i.get("mode") or mode),
        )
        for i in src.get("items") or []
        if "fieldRef" in i
    }


def _projected(src: Mapping[str, Any], pod: Mapping[str, Any], sources: VolumeSources) -> Files:
    """Merge Secret/ConfigMap/downwardAPI sources and service-account tokens (minted through
    the TokenRequest API, bound to the pod, as the kubelet does for ``kube-api-access-*``)."""
    mode = int(src.get("defaultMode") or 0o644)
    out: Files = {}
    for part in src.get("sources") or []:
        if "serviceAccountToken" in part:
            tok = part["serviceAccountToken"]
            seconds = int(tok.get("expirationSeconds") or 3607)
            token = sources.service_account_token(pod, tok.get("audience"), seconds)
            out[tok["path"]] = (token, mode)
        for kind in ("secret", "configMap"):
            if kind in part:
                wrapped = {kind: {"defaultMode": mode, **part[kind]}}
                if kind == "secret":
                    wrapped[kind]["secretName"] = part[kind].get("name", "")
                out.update(volume_files(wrapped, pod, sources) or {})
        if "downwardAPI" in part:
            out.update(_downward(part["downwardAPI"], pod, mode))
    return out


def _from_source(
    data: Mapping[str, bytes] | None, src: Mapping[str, Any], kind: str, name: str
) -> Files:
    if data is None:
        if src.get("optional"):
            return {}
        raise ConfigError(f'{kind} "{name}" not found')
    return _project(data, src, kind, name)


def _current(target: Path) -> Files:
    """Files currently published under ``target/..data``."""
    data = target / "..data"
    if not data.exists():
        return {}
    out: Files = {}
    for path in data.rglob("*"):
        if path.is_file():
            out[str(path.relative_to(data))] = (path.read_bytes(), path.stat().st_mode & 0o777)
    return out


def atomic_write(target: Path, files: Files) -> bool:
    """Publish ``files`` under ``target``; return False when nothing changed."""
    target.mkdir(parents=True, exist_ok=True)
    if (target / "..data").exists() and _current(target) == files:
        return False
    fresh = Path(tempfile.mkdtemp(prefix=f"..{time.strftime('%Y_%m_%d_%H_%M_%S')}.", dir=target))
    for rel, (content, mode) in files.items():
        path = fresh / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    fresh.chmod(0o755)
    old = os.readlink(target / "..data") if (target / "..data").is_symlink() else None
    tmp_link = target / "..data_tmp"
    tmp_link.unlink(missing_ok=True)
    tmp_link.symlink_to(fresh.name)
    tmp_link.rename(target / "..data")
    _relink(target, {rel.split("/", 1)[0] for rel in files})
    if old and old != fresh.name:
        shutil.rmtree(target / old, ignore_errors=True)
    return True


def _relink(target: Path, names: set[str]) -> None:
    """Visible top-level names are symlinks into ``..data``; drop the ones no longer present."""
    for entry in target.iterdir():
        if not entry.name.startswith("..") and entry.is_symlink() and entry.name not in names:
            entry.unlink()
    for name in names:
        link = target / name
        if not link.is_symlink():
            link.symlink_to(f"..data/{name}")


def mounts_env(
    containers_mounts: Sequence[Mapping[str, Any]], volume_dirs: Mapping[str, Path]
) -> str:
    """JSON ``{mountPath: hostPath}`` for one container's ``volumeMounts``."""
    out: dict[str, str] = {}
    for mount in containers_mounts:
        host = volume_dirs.get(mount.get("name", ""))
        if host is None:
            continue
        sub = mount.get("subPath")
        out[mount["mountPath"]] = str(host / sub) if sub else str(host)
    return json.dumps(out, sort_keys=True)


class PodVolumes:
    """The host directories of one pod's volumes, refreshed on demand."""

    def __init__(self, pod_dir: Path, volumes: Sequence[Mapping[str, Any]]) -> None:
        self.root = pod_dir / "volumes"
        self._volumes = list(volumes)
        self.dirs = {v["name"]: self.root / v["name"] for v in self._volumes}
        self._written: dict[str, Files] = {}

    def references(self) -> set[tuple[str, str]]:
        """``(kind, name)`` of every Secret/ConfigMap the volumes read."""
        refs: set[tuple[str, str]] = set()
        for v in self._volumes:
            if "secret" in v:
                refs.add(("secret", v["secret"].get("secretName", "")))
            if "configMap" in v:
                refs.add(("configmap", v["configMap"].get("name", "")))
            for part in v.get("projected", {}).get("sources") or []:
                if "secret" in part:
                    refs.add(("secret", part["secret"].get("name", "")))
                if "configMap" in part:
                    refs.add(("configmap", part["configMap"].get("name", "")))
        return refs

    def sync(self, pod: Mapping[str, Any], sources: VolumeSources) -> list[str]:
        """Write every volume; return the names that changed. Raises ConfigError if blocked."""
        changed: list[str] = []
        for volume in self._volumes:
            path = self.dirs[volume["name"]]
            files = volume_files(volume, pod, sources)
            if files is None:
                path.mkdir(parents=True, exist_ok=True)
            elif self._written.get(volume["name"]) != files and atomic_write(path, files):
                changed.append(volume["name"])
            if files is not None:
                self._written[volume["name"]] = files
        return changed
