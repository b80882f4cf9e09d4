"""The Secret ``NAME-cache-auth`` as the cache password rotation's state store.

Keys: ``username``, ``password`` (what MCP pods read at start), ``monitorPassword``,
``operatorPassword`` (the operator's own Redis user), during ``Adding`` ``nextPassword``
(the new password, used by nobody yet), and ``rotation``: a JSON document with the phase,
its start, the retiring password's *hash*, counters and times (no password). A Secret
without ``rotation`` (created before rotation existed) reads as ``Stable`` with no last
rotation (nothing is due) until the loop records one: now, so an upgrade does not rotate
every old Secret at once. One merge patch carrying the ``resourceVersion`` read moves
everything at once.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any

from mcp_operator.keys.cacherotation import PHASES, State
from mcp_operator.keys.store import format_time, parse_time
from mcp_operator.render import cache

Obj = dict[str, Any]
HASH_LENGTH = 64


def read_password(secret: Obj, key: str = cache.SECRET_PASSWORD_KEY) -> str | None:
    """A password of an existing Secret; None when missing or not decodable."""
    data = secret.get("data") or {}
    raw = data.get(key)
    if not isinstance(raw, str) or not raw:
        return None
    try:
        password = base64.b64decode(raw, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return password or None


class UnreadableState(Exception):
    """The ``rotation`` entry does not parse; its reason never quotes the content."""


@dataclass(frozen=True)
class Stored:
    """What the Secret holds: the state and the plaintexts the edge needs."""

    state: State
    password: str
    next_password: str | None
    operator_password: str | None
    recorded: bool = True
    """False: no ``rotation`` entry yet (a Secret from before rotation existed)."""


def decode(secret: Obj) -> Stored | None:
    """None when the Secret has no usable ``password`` (reported by the reconcile as
    ``CredentialInvalid``); :class:`UnreadableState` for a broken ``rotation`` entry."""
    password = read_password(secret)
    if password is None:
        return None
    next_password = read_password(secret, cache.SECRET_NEXT_PASSWORD_KEY)
    operator = read_password(secret, cache.SECRET_OPERATOR_PASSWORD_KEY)
    current = cache.password_hash(password)
    raw = (secret.get("data") or {}).get(cache.SECRET_ROTATION_KEY)
    if raw is None:
        return Stored(State(current=current), password, None, operator, recorded=False)
    try:
        doc = json.loads(base64.b64decode(raw, validate=True))
        state = _state(doc, current, next_password)
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise UnreadableState(
            f"the Secret's '{cache.SECRET_ROTATION_KEY}' entry is malformed "
            f"({type(exc).__name__}); delete that entry to start over from Stable"
        ) from None
    # no last rotation recorded: the loop records one (now) before anything is due
    return Stored(state, password, next_password, operator, state.last_rotation is not None)


def _state(doc: Obj, current: str, next_password: str | None) -> State:
    phase = doc["phase"]
    if phase not in PHASES:
        raise ValueError("unknown phase")
    previous = doc.get("previous")
    if previous is not None and (not isinstance(previous, str) or len(previous) != HASH_LENGTH):
        raise ValueError("bad previous hash")
    if phase in ("Propagating", "RollingBackup", "RollingPrimary") and previous is None:
        raise ValueError("a rolling phase without the previous hash")
    if phase == "Adding" and next_password is None:
        raise ValueError("Adding without nextPassword")
    request = doc.get("lastRequest")
    return State(
        current=current,
        phase=phase,
        since=parse_time(doc.get("since")),
        next=cache.password_hash(next_password) if phase == "Adding" and next_password else None,
        previous=previous if phase != "Stable" else None,
        rotations=int(doc.get("rotations") or 0),
        last_rotation=parse_time(doc.get("lastRotation")),
        last_request=str(request) if request is not None else None,
        file_since=parse_time(doc.get("fileSince")) if phase == "Adding" else None,
        first="primary" if doc.get("firstTier") == "primary" else "backup",
    )


def document(state: State) -> str:
    """The ``rotation`` entry (hashes and times only)."""
    doc = {
        "phase": state.phase,
        "since": format_time(state.since),
        "previous": state.previous,
        "rotations": state.rotations,
        "lastRotation": format_time(state.last_rotation),
        "lastRequest": state.last_request,
        "fileSince": format_time(state.file_since),
        "firstTier": state.first,
    }
    return json.dumps(doc, sort_keys=True)


def patch(
    stored: Stored,
    state: State,
    version: str | None,
    fresh: dict[str, str],
    operator_password: str | None = None,
) -> Obj:
    """The merge patch moving the Secret to ``state``: ``fresh`` maps a new password's hash
    to the password (generated this pass). ``resourceVersion`` makes it a precondition."""
    by_hash = {cache.password_hash(stored.password): stored.password, **fresh}
    if stored.next_password:
        by_hash[cache.password_hash(stored.next_password)] = stored.next_password
    data: dict[str, str | None] = {
        cache.SECRET_PASSWORD_KEY: _b64(by_hash[state.current]),
        cache.SECRET_NEXT_PASSWORD_KEY: _b64(by_hash[state.next]) if state.next else None,
        cache.SECRET_ROTATION_KEY: _b64(document(state)),
    }
    if operator_password is not None:
        data[cache.SECRET_OPERATOR_PASSWORD_KEY] = _b64(operator_password)
    metadata: Obj = {}
    if version is not None:
        metadata["resourceVersion"] = version
    return {"metadata": metadata, "data": data}


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


__all__ = ["Stored", "UnreadableState", "decode", "document", "patch", "read_password"]
