"""The Secret ``NAME-data-keys``: the data-encryption keyring and its rotation schedule.

One JSON document (``keyring.json``) holds every key (material, random HKDF salt) and the
schedule state of :mod:`mcp_operator.keys.schedule` — the same publish → activate →
retire → remove policy as the signing keys, with ``hold`` = ``retention``. The pods mount
this very Secret and read it with :mod:`mcp_operator.auth.datakeys`, which ignores the
schedule fields; ``active`` is written out so a reader needs no schedule logic.

One write (server-side apply with the Secret's ``resourceVersion``) moves the whole ring
at once; errors never quote the content.
"""

from __future__ import annotations

import base64
import binascii
import json
import secrets
from datetime import timedelta
from typing import Any

from mcp_operator.auth import datakeys
from mcp_operator.auth.datakeys import DataKey
from mcp_operator.keys.schedule import KeyRecord, KeyRing
from mcp_operator.keys.store import format_time, parse_time

ALGORITHM = "A256GCM"  # the schedule's algorithm name for data keys (JWA's name)
KID_BYTES = 16  # 128 bits, random: says nothing about time or order
Obj = dict[str, Any]


class UnreadableKeyring(Exception):
    """The Secret exists but does not hold a keyring this operator can use."""


def generate() -> DataKey:
    """A fresh 256-bit key with its own random 256-bit HKDF salt and a random kid."""
    return DataKey(
        kid=secrets.token_urlsafe(KID_BYTES),
        key=secrets.token_bytes(datakeys.KEY_BYTES),
        salt=secrets.token_bytes(datakeys.SALT_BYTES),
    )


def document(ring: KeyRing, materials: dict[str, DataKey]) -> bytes:
    """``keyring.json`` for the ring; every key of the ring needs material and the ring an
    active key (the schedule guarantees one after every decision)."""
    if ring.active is None:
        raise ValueError("a data keyring needs an active key")
    doc = {
        "version": datakeys.FORMAT_VERSION,
        "active": ring.active.kid,
        "rotations": ring.rotations,
        "lastRotation": format_time(ring.last_rotation),
        "rotateDue": format_time(ring.rotate_due),
        "lastRotateRequest": ring.last_rotate_request,
        "keys": [_encode_key(k, materials[k.kid]) for k in ring.keys],
    }
    return json.dumps(doc, sort_keys=True).encode()


def encode(ring: KeyRing, materials: dict[str, DataKey]) -> dict[str, str]:
    """Secret ``data`` (base64 values)."""
    return {datakeys.FILE: base64.b64encode(document(ring, materials)).decode()}


def _encode_key(key: KeyRecord, material: DataKey) -> Obj:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "key": base64.b64encode(material.key).decode(),
        "salt": base64.b64encode(material.salt).decode(),
        "created": format_time(key.created),
        "published": format_time(key.published),
        "activated": format_time(key.activated),
        "retired": format_time(key.retired),
        "holdSeconds": key.hold.total_seconds(),
    }


def decode(data: dict[str, str] | None) -> tuple[KeyRing, dict[str, DataKey]]:
    """Parse Secret ``data``; raise :class:`UnreadableKeyring` with a content-free reason."""
    if not data or datakeys.FILE not in data:
        raise UnreadableKeyring(f"the Secret has no {datakeys.FILE} entry")
    try:
        raw = base64.b64decode(data[datakeys.FILE], validate=True)
    except (binascii.Error, ValueError):
        raise UnreadableKeyring(f"{datakeys.FILE} is not base64-encoded") from None
    try:
        mounted = datakeys.parse(raw)  # exactly what the pods will read
    except ValueError as exc:  # its reasons are fixed strings, never the content
        raise UnreadableKeyring(str(exc)) from None
    doc = json.loads(raw)
    try:
        ring = _ring(doc)
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise UnreadableKeyring(f"{datakeys.FILE} is malformed ({type(exc).__name__})") from None
    if ring.active is None or ring.active.kid != mounted.active:
        raise UnreadableKeyring(f"{datakeys.FILE}: 'active' disagrees with the schedule")
    return ring, dict(mounted.keys)


def _ring(doc: Obj) -> KeyRing:
    records = tuple(_record(item) for item in doc["keys"])
    if sum(1 for r in records if r.phase == "active") > 1:
        raise ValueError("two active keys")
    return KeyRing(
        keys=records,
        rotations=int(doc.get("rotations") or 0),
        last_rotation=parse_time(doc.get("lastRotation")),
        rotate_due=parse_time(doc.get("rotateDue")),
        last_rotate_request=doc.get("lastRotateRequest"),
    )


def _record(item: Obj) -> KeyRecord:
    if item.get("alg") != ALGORITHM:
        raise ValueError("unknown algorithm")
    created = parse_time(item["created"])
    if created is None:
        raise ValueError("missing creation time")
    return KeyRecord(
        kid=str(item["kid"]),
        alg=ALGORITHM,
        created=created,
        published=parse_time(item.get("published")),
        activated=parse_time(item.get("activated")),
        retired=parse_time(item.get("retired")),
        hold=timedelta(seconds=_hold_seconds(item.get("holdSeconds"))),
    )


MAX_HOLD_SECONDS = 100 * 366 * 86400.0  # far beyond any retention; keeps times in range


def _hold_seconds(value: object) -> float:
    """``holdSeconds`` as a finite, plausible number (1e400 or NaN would overflow the
    schedule's date arithmetic: reported as an unreadable Secret, not a failed pass)."""
    seconds = float(value or 0)  # type: ignore[arg-type]
    if not 0 <= seconds <= MAX_HOLD_SECONDS:  # also false for NaN
        raise ValueError("holdSeconds out of range")
    return seconds
