"""The data-encryption helper servers use (mcp_operator.auth.datakeys), on real files
written by the operator's own codec (mcp_operator.keys.datastore)."""

from __future__ import annotations

import base64
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from mcp_operator.auth import datakeys
from mcp_operator.auth.datakeys import DataKey, DataKeys, DecryptError, MissingKeyMaterial
from mcp_operator.keys import datastore
from mcp_operator.keys.schedule import KeyRecord, KeyRing

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def ring_file(path: Path, keys: list[DataKey], active: str) -> None:
    """A keyring as the operator writes it (the Secret's keyring.json, mounted)."""
    records = tuple(
        KeyRecord(
            k.kid,
            datastore.ALGORITHM,
            created=T0,
            activated=T0 if k.kid == active else T0 - timedelta(days=1),
            retired=None if k.kid == active else T0,
        )
        for k in keys
    )
    ring = KeyRing(keys=records)
    data = datastore.encode(ring, {k.kid: k for k in keys})
    path.write_bytes(base64.b64decode(data[datakeys.FILE]))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def one(tmp_path: Path) -> tuple[DataKeys, DataKey, Path]:
    key = datastore.generate()
    path = tmp_path / "keyring.json"
    ring_file(path, [key], key.kid)
    return DataKeys(path), key, path


def test_round_trip_and_envelope_layout(one: tuple[DataKeys, DataKey, Path]) -> None:
    keys, key, _ = one
    blob = keys.encrypt(b"hello", b"user:42", purpose="sessions")
    kid = key.kid.encode()
    assert blob[0] == 1 and blob[1] == len(kid) and blob[2 : 2 + len(kid)] == kid
    assert len(blob) == 2 + len(kid) + 12 + len(b"hello") + 16
    assert keys.decrypt(blob, b"user:42", purpose="sessions") == b"hello"
    assert keys.is_current(blob)


def test_known_answer_independent_of_the_helper(one: tuple[DataKeys, DataKey, Path]) -> None:
    """HKDF-SHA256 with the key's random salt and info naming the purpose, then AES-256-GCM
    over header + AAD: recomputed here with the primitives directly."""
    _, key, _ = one
    nonce = bytes(range(12))
    blob = datakeys.seal(key, b"data", b"ctx", "cache", nonce=nonce)
    sub = HKDF(
        hashes.SHA256(), length=32, salt=key.salt, info=b"mcp-operator/data-keys/v1/cache"
    ).derive(key.key)
    head = bytes([1, len(key.kid)]) + key.kid.encode()
    assert blob == head + nonce + AESGCM(sub).encrypt(nonce, b"data", head + b"ctx")
    assert sub != key.key and len(key.salt) == 32


def test_every_tampered_byte_is_refused(one: tuple[DataKeys, DataKey, Path]) -> None:
    keys, _, _ = one
    blob = keys.encrypt(b"payload", b"aad", purpose="p")
    for i in range(len(blob)):
        bad = bytearray(blob)
        bad[i] ^= 0x01
        with pytest.raises(DecryptError):
            keys.decrypt(bytes(bad), b"aad", purpose="p")
    with pytest.raises(DecryptError):
        keys.decrypt(blob[:-1], b"aad", purpose="p")
    with pytest.raises(DecryptError):
        keys.decrypt(blob + b"x", b"aad", purpose="p")


def test_aad_and_purpose_mismatch_are_refused(one: tuple[DataKeys, DataKey, Path]) -> None:
    keys, _, _ = one
    blob = keys.encrypt(b"payload", b"user:1", purpose="sessions")
    with pytest.raises(DecryptError, match="authentication failed"):
        keys.decrypt(blob, b"user:2", purpose="sessions")
    with pytest.raises(DecryptError, match="authentication failed"):
        keys.decrypt(blob, b"", purpose="sessions")
    with pytest.raises(DecryptError, match="authentication failed"):
        keys.decrypt(blob, b"user:1", purpose="cache")


def test_wrong_version_unknown_kid_and_garbage(one: tuple[DataKeys, DataKey, Path]) -> None:
    keys, _, _ = one
    blob = keys.encrypt(b"x", purpose="p")
    with pytest.raises(DecryptError, match="unsupported envelope version 2"):
        keys.decrypt(b"\x02" + blob[1:], purpose="p")
    other = datastore.generate()
    foreign = datakeys.seal(other, b"x", b"", "p")
    with pytest.raises(DecryptError, match="unknown kid"):
        keys.decrypt(foreign, purpose="p")
    for junk in (b"", b"\x01", b"\x01\x00" + bytes(40), b"\x01\x05ab"):
        with pytest.raises(DecryptError):
            keys.decrypt(junk, purpose="p")


def test_nonces_are_fresh_per_message(one: tuple[DataKeys, DataKey, Path]) -> None:
    keys, key, _ = one
    start = 2 + len(key.kid)
    blobs = [keys.encrypt(b"same", purpose="p") for _ in range(20000)]
    nonces = {b[start : start + 12] for b in blobs}
    assert len(nonces) == len(blobs)
    assert len(set(blobs)) == len(blobs)  # same plaintext, never the same ciphertext


def test_old_key_decrypts_during_retention_and_not_after_removal(tmp_path: Path) -> None:
    """The file is rewritten like the kubelet does after a rotation; no restart."""
    clock = Clock()
    old, new = datastore.generate(), datastore.generate()
    path = tmp_path / "keyring.json"
    ring_file(path, [old], old.kid)
    keys = DataKeys(path, refresh=5.0, clock=clock)
    legacy = keys.encrypt(b"written before the rotation", b"id:7", purpose="notes")

    ring_file(path, [old, new], new.kid)  # rotation: new active, old kept
    clock.now += 5
    fresh = keys.encrypt(b"after", b"id:8", purpose="notes")
    assert datakeys.split(fresh)[0] == new.kid
    assert keys.decrypt(legacy, b"id:7", purpose="notes") == b"written before the rotation"
    assert not keys.is_current(legacy) and keys.is_current(fresh)

    ring_file(path, [new], new.kid)  # retention over: the old key is removed
    clock.now += 5
    with pytest.raises(DecryptError, match="unknown kid"):
        keys.decrypt(legacy, b"id:7", purpose="notes")
    assert keys.decrypt(fresh, b"id:8", purpose="notes") == b"after"


def test_a_kid_newer_than_the_last_read_is_looked_up_at_once_rate_limited(
    tmp_path: Path,
) -> None:
    clock = Clock()
    old, new = datastore.generate(), datastore.generate()
    path = tmp_path / "keyring.json"
    ring_file(path, [old], old.kid)
    keys = DataKeys(path, refresh=60.0, min_reread_interval=1.0, clock=clock)
    other_pod = datakeys.seal(new, b"from a pod that saw the new key first", b"", "p")
    ring_file(path, [old, new], old.kid)
    with pytest.raises(DecryptError):  # same instant as the last read: no re-read
        keys.decrypt(other_pod, purpose="p")
    clock.now += 1
    assert keys.decrypt(other_pod, purpose="p").startswith(b"from a pod")


def test_missing_key_material_is_a_startup_error(tmp_path: Path) -> None:
    with pytest.raises(MissingKeyMaterial, match="MCP_DATA_KEYS_PATH is not set"):
        DataKeys.from_env({})
    with pytest.raises(MissingKeyMaterial, match="not readable"):
        DataKeys.from_env({datakeys.ENV_PATH: str(tmp_path / "absent.json")})
    bad = tmp_path / "bad.json"
    for content in (
        b"",
        b"not json",
        b"[]",
        json.dumps({"version": 1, "active": "a", "keys": []}).encode(),
        json.dumps(
            {"version": 1, "active": "a", "keys": [{"kid": "a", "key": "AA==", "salt": "AA=="}]}
        ).encode(),
    ):
        bad.write_bytes(content)
        with pytest.raises(MissingKeyMaterial) as exc:
            DataKeys(bad)
        assert "AA==" not in str(exc.value)


def test_an_unreadable_file_later_keeps_the_last_good_keyring(
    one: tuple[DataKeys, DataKey, Path],
) -> None:
    _, key, path = one
    clock = Clock()
    keys = DataKeys(path, refresh=1.0, clock=clock)
    blob = keys.encrypt(b"x", purpose="p")
    path.write_bytes(b"garbage")
    clock.now += 2
    assert keys.decrypt(blob, purpose="p") == b"x"
    os.unlink(path)
    clock.now += 2
    assert keys.active_kid == key.kid


def test_key_material_never_in_repr(one: tuple[DataKeys, DataKey, Path]) -> None:
    keys, key, _ = one
    text = repr(key) + repr(keys.ring)
    assert base64.b64encode(key.key).decode() not in text and repr(key.key) not in text
    assert repr(key.salt) not in text and key.kid in text


def test_sub_keys_differ_per_purpose_and_per_key() -> None:
    a, b = datastore.generate(), datastore.generate()
    assert datakeys.subkey(a, "x") != datakeys.subkey(a, "y")
    same_material = DataKey("k2", a.key, b.salt)  # same key bytes, another salt
    assert datakeys.subkey(a, "x") != datakeys.subkey(same_material, "x")
    with pytest.raises(ValueError):
        datakeys.subkey(a, "")


def test_an_unreadable_file_is_warned_about_once_not_every_refresh(
    one: tuple[DataKeys, DataKey, Path], caplog: pytest.LogCaptureFixture
) -> None:
    _, key, path = one
    good = path.read_bytes()
    clock = Clock()
    keys = DataKeys(path, refresh=1.0, clock=clock)
    path.write_bytes(b"garbage")
    for _ in range(5):
        clock.now += 2
        assert keys.active_kid == key.kid  # the last good keyring keeps serving
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "unusable" in warnings[0].getMessage()
    assert base64.b64encode(key.key).decode() not in caplog.text
    path.write_bytes(good)
    clock.now += 2
    assert keys.active_kid == key.kid
    assert "readable again" in caplog.records[-1].getMessage()
