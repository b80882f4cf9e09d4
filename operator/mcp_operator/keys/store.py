"""The Secret ``NAME-signing-keys``: the schedule's single source of truth, and its codec.

One JSON document (``keyring.json``) holds every key's private PEM and the schedule state,
so one write with the Secret's ``resourceVersion`` (optimistic concurrency) moves the
whole ring at once: there is no instant at which a key is active in one place and missing
in another. ``status.keys`` is only a mirror for humans. Errors never quote the content.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime, timedelta
from typing import Any

from mcp_operator.keys.keygen import ALGORITHMS, KeyMaterial
from mcp_operator.keys.schedule import KeyRecord, KeyRing

DATA_KEY = "keyring.json"
FORMAT_VERSION = 1
Obj = dict[str, Any]


class UnreadableKeys(Exception):
    """The Secret exists but does not hold a key ring this operator can use."""


def format_time(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def parse_time(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError("naive timestamp")
    return parsed


def encode(ring: KeyRing, materials: dict[str, KeyMaterial]) -> dict[str, str]:
    """Secret ``data`` (base64 values) for the ring; every key of the ring needs material."""
    doc = {
        "version": FORMAT_VERSION,
        "rotations": ring.rotations,
        "lastRotation": format_time(ring.last_rotation),
        "rotateDue": format_time(ring.rotate_due),
        "lastRotateRequest": ring.last_rotate_request,
        "lastRevokeRequest": ring.last_revoke_request,
        "revoked": list(ring.revoked),
        "keys": [_encode_key(k, materials[k.kid]) for k in ring.keys],
    }
    raw = json.dumps(doc, sort_keys=True).encode()
    return {DATA_KEY: base64.b64encode(raw).decode()}


def _encode_key(key: KeyRecord, material: KeyMaterial) -> Obj:
    return {
        "kid": key.kid,
        "alg": key.alg,
        "created": format_time(key.created),
        "published": format_time(key.published),
        "activated": format_time(key.activated),
        "retired": format_time(key.retired),
        "holdSeconds": key.hold.total_seconds(),
        "privateKeyPem": material.private_pem,
    }


def decode(data: dict[str, str] | None) -> tuple[KeyRing, dict[str, KeyMaterial]]:
    """Parse Secret ``data``; raise :class:`UnreadableKeys` with a content-free reason."""
    if not data or DATA_KEY not in data:
        raise UnreadableKeys(f"the Secret has no {DATA_KEY} entry")
    try:
        doc = json.loads(base64.b64decode(data[DATA_KEY], validate=True))
    except (binascii.Error, ValueError):
        raise UnreadableKeys(f"{DATA_KEY} is not base64-encoded JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise UnreadableKeys(f"{DATA_KEY} is not a version-{FORMAT_VERSION} key ring")
    try:
        return _decode_doc(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise UnreadableKeys(f"{DATA_KEY} is malformed ({type(exc).__name__})") from None


def _decode_doc(doc: Obj) -> tuple[KeyRing, dict[str, KeyMaterial]]:
    records: list[KeyRecord] = []
    materials: dict[str, KeyMaterial] = {}
    for item in doc["keys"]:
        record, material = _decode_key(item)
        records.append(record)
        materials[record.kid] = material
    if sum(1 for r in records if r.phase == "active") > 1:
        raise ValueError("two active keys")
    ring = KeyRing(
        keys=tuple(records),
        rotations=int(doc.get("rotations") or 0),
        last_rotation=parse_time(doc.get("lastRotation")),
        rotate_due=parse_time(doc.get("rotateDue")),
        last_rotate_request=doc.get("lastRotateRequest"),
        last_revoke_request=doc.get("lastRevokeRequest"),
        revoked=tuple(str(k) for k in doc.get("revoked") or []),
    )
    return ring, materials


def _decode_key(item: Obj) -> tuple[KeyRecord, KeyMaterial]:
    alg = item["alg"]
    if alg not in ALGORITHMS:
        raise ValueError("unknown algorithm")
    created = parse_time(item["created"])
    if created is None:
        raise ValueError("missing creation time")
    record = KeyRecord(
        kid=str(item["kid"]),
        alg=alg,
        created=created,
        published=parse_time(item.get("published")),
        activated=parse_time(item.get("activated")),
        retired=parse_time(item.get("retired")),
        hold=timedelta(seconds=float(item.get("holdSeconds") or 0)),
    )
    material = KeyMaterial(record.kid, alg, str(item["privateKeyPem"]))
    material.private_key()  # a PEM that does not load is garbage, not a key
    return record, material
