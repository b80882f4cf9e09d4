"""An in-memory index of the operator's children, fed by watch events.

Drift repair must not poll the API per tick: the watches already deliver every change to
a child, so the index tells the reconciler what exists and whether it still matches what
was applied. The index is a cache only; losing it (a restart) costs one full re-apply.
"""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from typing import Any

from mcp_operator.render.meta import SERVER_LABEL

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, server name)
ChildKey = tuple[str, str]  # (kind, name)

# Fields the API server sets or normalises itself; never compared.
_IGNORED_TOP = {"status"}
_IGNORED_META = {"ownerReferences"}
# What the index keeps of a pod (see :func:`slim`). Its readers are the child index itself
# (metadata: name, namespace, labels, resourceVersion) and the health loop
# (mcp_operator.health.extension: ``probeable``, ``pod_url``, ``gate_of``, the tier label,
# the uid, and ``patch_gate``'s namespace and name). A new reader of another pod field
# must add it here; tests/unit/test_child_index.py checks the health loop's view.
POD_STATUS_KEPT = ("phase", "podIP", "podIPs", "conditions")
POD_CONTAINER_KEPT = ("name", "ports")
SHARED_STRING_MAX = 64


def without_managed_fields(obj: Obj) -> Obj:
    """``obj`` without ``metadata.managedFields``: the field managers' record, as large as
    the object itself and read by nobody here (the operator writes with server-side apply,
    where the API server keeps it). A shallow copy; ``obj`` is not changed."""
    meta = obj.get("metadata")
    if not isinstance(meta, dict) or "managedFields" not in meta:
        return obj
    return {**obj, "metadata": {k: v for k, v in meta.items() if k != "managedFields"}}


def compact(value: Any) -> Any:
    """A copy of a JSON value whose keys and short strings are shared (``sys.intern``)
    with every other copy: each parsed object otherwise holds its own ``"metadata"``,
    ``"app.kubernetes.io/managed-by"``, ``"IfNotPresent"`` ... -- about half of a
    child's size in memory. Equal to ``value``."""
    if isinstance(value, dict):
        return {sys.intern(k) if type(k) is str else k: compact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compact(v) for v in value]
    if type(value) is str and len(value) <= SHARED_STRING_MAX:
        return sys.intern(value)
    return value


def slim(kind: str, obj: Obj) -> Obj:
    """What the index keeps of a watched object, to bound memory per server (at 1,000
    servers the index held most of the operator's RSS).

    Children keep everything but ``managedFields``: drift is judged by comparing the whole
    rendered object with them. Pods are only read for probing and gating, so they keep
    their metadata, each container's name and ports, and ``status.phase``, ``podIP(s)``
    and ``conditions`` -- not the full spec, whose env may hold plaintext values, nor
    container statuses, which change with every restart. Keys and short strings are
    shared between objects (:func:`compact`)."""
    obj = without_managed_fields(obj)
    if kind != "Pod":
        child: Obj = compact(obj)
        return child
    out: Obj = {k: v for k, v in obj.items() if k not in ("spec", "status")}
    spec = obj.get("spec")
    if isinstance(spec, dict):
        containers = spec.get("containers") or []
        out["spec"] = {
            "containers": [
                {k: c[k] for k in POD_CONTAINER_KEPT if k in c}
                for c in containers
                if isinstance(c, dict)
            ]
        }
    status = obj.get("status")
    if isinstance(status, dict):
        out["status"] = {k: status[k] for k in POD_STATUS_KEPT if k in status}
    pod: Obj = compact(out)
    return pod


def is_applied(desired: Any, live: Any) -> bool:
    """True when every field we want is present in ``live`` with the same value.

    ``live`` may hold more (server defaults, other managers' fields); a hand edit of one of
    *our* fields, or a deletion, makes this False and triggers a re-apply.
    """
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(k in live and is_applied(v, live[k]) for k, v in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(desired) != len(live):
            return False
        want, have = _by_name(desired), _by_name(live)
        if want is not None and have is not None:
            # Associative lists (env, containers, volumes, ...) are merged by name under
            # server-side apply, which keeps the position of items that already exist: an
            # item added to the middle of ours is appended to the live list. Compared by
            # position, such a list would never look applied and be re-applied for ever.
            return want.keys() == have.keys() and all(is_applied(want[k], have[k]) for k in want)
        return all(is_applied(d, v) for d, v in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return desired == live
    return str(desired) == str(live) if desired is not None else live is None


def _by_name(items: list[Any]) -> dict[str, Any] | None:
    """``items`` keyed by their ``name``, or None when it is not a list of uniquely named maps."""
    if not items or not all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items):
        return None
    keyed = {i["name"]: i for i in items}
    return keyed if len(keyed) == len(items) else None


def comparable(desired: Obj) -> Obj:
    """The part of a desired object that is compared with the live one."""
    meta = {k: v for k, v in desired["metadata"].items() if k not in _IGNORED_META}
    body = {k: v for k, v in desired.items() if k not in _IGNORED_TOP and k != "metadata"}
    return {**body, "metadata": meta}


class ChildIndex:
    """Children by owner, by kind and name; pods kept separately for the health prober.

    Entries are also tracked by uid, so an object whose server label changes (a relabelled
    pod) moves — or leaves — instead of staying under its old owner, and :meth:`replace`
    can drop what a relist no longer contains.
    """

    def __init__(self) -> None:
        self._children: dict[Key, dict[ChildKey, Obj]] = defaultdict(dict)
        self._pods: dict[Key, dict[str, Obj]] = defaultdict(dict)
        # (kind, namespace, name) → owner, for moves and relists.
        self._where: dict[tuple[str, str, str], Key] = {}
        self.counts: Counter[str] = Counter()

    @staticmethod
    def owner_of(obj: Obj) -> Key | None:
        meta = obj.get("metadata", {})
        server = (meta.get("labels") or {}).get(SERVER_LABEL)
        return (meta.get("namespace", ""), server) if server else None

    def _remove(self, kind: str, namespace: str, name: str) -> Key | None:
        owner = self._where.pop((kind, namespace, name), None)
        if owner is None:
            return None
        table: dict[Any, Obj] = self._pods[owner] if kind == "Pod" else self._children[owner]
        table.pop(name if kind == "Pod" else (kind, name), None)
        if not table:
            (self._pods if kind == "Pod" else self._children).pop(owner, None)
        self.counts[kind] -= 1
        return owner

    def observe(self, kind: str, obj: Obj, deleted: bool) -> Key | None:
        """Record one watch event (what :func:`slim` keeps of it); returns the owning
        server's key (the previous owner when the object left), if any."""
        meta = obj.get("metadata", {})
        namespace, name = meta.get("namespace", ""), meta["name"]
        owner = self.owner_of(obj)
        previous = self._where.get((kind, namespace, name))
        if deleted or owner != previous:
            self._remove(kind, namespace, name)
        if deleted:
            return previous or owner
        if owner is None:
            return previous
        table: dict[Any, Obj] = self._pods[owner] if kind == "Pod" else self._children[owner]
        if (kind, namespace, name) not in self._where:
            self.counts[kind] += 1
        table[name if kind == "Pod" else (kind, name)] = slim(kind, obj)
        self._where[(kind, namespace, name)] = owner
        return owner

    def replace(self, kind: str, namespace: str | None, objs: list[Obj]) -> set[Key]:
        """A complete list of ``kind`` (in ``namespace``, or everywhere): drop what it no
        longer holds, record the rest. Returns every owner whose entries changed."""
        listed = {(o["metadata"].get("namespace", ""), o["metadata"]["name"]) for o in objs}
        touched: set[Key] = set()
        for k, ns, name in list(self._where):
            if k == kind and (namespace is None or ns == namespace) and (ns, name) not in listed:
                owner = self._remove(kind, ns, name)
                if owner is not None:
                    touched.add(owner)
        for obj in objs:
            before = self.get(kind, obj)
            owner = self.observe(kind, obj, deleted=False)
            if owner is not None and _version(before) != _version(obj):
                touched.add(owner)
        return touched

    def get(self, kind: str, obj: Obj) -> Obj | None:
        meta = obj.get("metadata", {})
        owner = self._where.get((kind, meta.get("namespace", ""), meta["name"]))
        if owner is None:
            return None
        if kind == "Pod":
            return self._pods.get(owner, {}).get(meta["name"])
        return self._children.get(owner, {}).get((kind, meta["name"]))

    def children(self, owner: Key) -> dict[ChildKey, Obj]:
        return dict(self._children.get(owner, {}))

    def pods(self, owner: Key) -> list[Obj]:
        return list(self._pods.get(owner, {}).values())

    def forget(self, owner: Key) -> None:
        """Drop an owner's entries: found through its own tables (children live in the
        owner's namespace), never by scanning the whole index once per owner."""
        namespace = owner[0]
        keys = [(kind, namespace, name) for kind, name in self._children.get(owner, {})]
        keys += [("Pod", namespace, name) for name in self._pods.get(owner, {})]
        for kind, ns, name in keys:
            self._remove(kind, ns, name)
        self._children.pop(owner, None)
        self._pods.pop(owner, None)


def _version(obj: Obj | None) -> str | None:
    return None if obj is None else (obj.get("metadata") or {}).get("resourceVersion")
