"""An in-memory index of the operator's children, fed by watch events.

Drift repair must not poll the API per tick: the watches already deliver every change to
a child, so the index tells the reconciler what exists and whether it still matches what
was applied. The index is a cache only; losing it (a restart) costs one full re-apply.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from mcp_operator.render.meta import SERVER_LABEL

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, server name)
ChildKey = tuple[str, str]  # (kind, name)

# Fields the API server sets or normalises itself; never compared.
_IGNORED_TOP = {"status"}
_IGNORED_META = {"ownerReferences"}


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
        return all(is_applied(d, v) for d, v in zip(desired, live, strict=True))
    if isinstance(desired, bool) or isinstance(live, bool):
        return desired is live
    if isinstance(desired, int | float) and isinstance(live, int | float):
        return desired == live
    return str(desired) == str(live) if desired is not None else live is None


def comparable(desired: Obj) -> Obj:
    """The part of a desired object that is compared with the live one."""
    meta = {k: v for k, v in desired["metadata"].items() if k not in _IGNORED_META}
    body = {k: v for k, v in desired.items() if k not in _IGNORED_TOP and k != "metadata"}
    return {**body, "metadata": meta}


class ChildIndex:
    """Children by owner, by kind and name; pods kept separately for the health prober."""

    def __init__(self) -> None:
        self._children: dict[Key, dict[ChildKey, Obj]] = defaultdict(dict)
        self._pods: dict[Key, dict[str, Obj]] = defaultdict(dict)

    @staticmethod
    def owner_of(obj: Obj) -> Key | None:
        meta = obj.get("metadata", {})
        server = (meta.get("labels") or {}).get(SERVER_LABEL)
        return (meta.get("namespace", ""), server) if server else None

    def observe(self, kind: str, obj: Obj, deleted: bool) -> Key | None:
        """Record one watch event; returns the owning server's key, if any."""
        owner = self.owner_of(obj)
        if owner is None:
            return None
        name = obj["metadata"]["name"]
        table: dict[Any, Obj] = self._pods[owner] if kind == "Pod" else self._children[owner]
        key: Any = name if kind == "Pod" else (kind, name)
        if deleted:
            table.pop(key, None)
        else:
            table[key] = obj
        return owner

    def children(self, owner: Key) -> dict[ChildKey, Obj]:
        return dict(self._children.get(owner, {}))

    def pods(self, owner: Key) -> list[Obj]:
        return list(self._pods.get(owner, {}).values())

    def forget(self, owner: Key) -> None:
        self._children.pop(owner, None)
        self._pods.pop(owner, None)
