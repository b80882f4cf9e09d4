"""Data encryption for MCP servers written in Python, with the keyring mcp-operator mounts.

With ``spec.dataEncryption.enabled`` the operator keeps versioned AES-256 keys in the Secret
``NAME-data-keys`` and mounts it into every MCP pod at :data:`MOUNT_DIR`; the env var
:data:`ENV_PATH` names the file (``keyring.json``). This module is all a server needs::

    keys = DataKeys.from_env(os.environ)          # a startup error if the keys are missing
    blob = keys.encrypt(b"secret", aad=b"user:42", purpose="sessions")
    keys.decrypt(blob, aad=b"user:42", purpose="sessions")  # b"secret"

Design (the seed's ``DataEncryption`` sketch, done right):

* AES-256-GCM with a fresh random 96-bit nonce per message, from the OS (never a counter
  shared between replicas, never derived from the message);
* a sub-key per purpose: HKDF-SHA256 over the 256-bit key, with the key's own random
  256-bit salt (generated with it, never a constant) and ``info`` naming the purpose — a
  blob of one purpose never decrypts as another;
* a versioned envelope ``version (1 byte) | kid length (1) | kid | nonce (12) | ciphertext
  + tag (16)``; the header is authenticated with the caller's AAD, so changing the
  version, the kid or the AAD makes decryption fail;
* decryption picks the key by ``kid``: ciphertexts of retired keys decrypt for as long as
  the operator keeps them (``retention``), and not after;
* missing or unreadable key material is :class:`MissingKeyMaterial` at startup — never a
  per-process random fallback key (replicas would disagree and every restart would lose
  all data).

Rotation needs no restart: Kubernetes updates a mounted Secret in place (an atomic
``..data`` symlink swap, within about a minute or two); :class:`DataKeys` re-reads the file
every ``refresh`` seconds and at once (rate-limited) when a message names a kid it does not
know. A file that turns unreadable later keeps the last good keyring.

Limits: at most 2^32 messages per key and purpose with random nonces (NIST SP 800-38D);
rotate (``rotation.every``) long before. Only ``cryptography`` and the standard library
are imported here, so a server can depend on this module without the operator's
Kubernetes code.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

ENV_PATH = "MCP_DATA_KEYS_PATH"
MOUNT_DIR = "/var/run/mcp-operator/data-keys"
FILE = "keyring.json"
FORMAT_VERSION = 1  # of keyring.json
ENVELOPE_VERSION = 1  # first byte of every ciphertext
KEY_BYTES = 32  # AES-256
SALT_BYTES = 32
NONCE_BYTES = 12  # 96 bits, GCM's native nonce size
TAG_BYTES = 16
MAX_KID_BYTES = 255
HKDF_INFO_PREFIX = b"mcp-operator/data-keys/v1/"


class MissingKeyMaterial(Exception):
    """No usable keyring: a startup error (the message never contains key material)."""


class DecryptError(Exception):
    """A ciphertext was refused: tampered, wrong AAD or purpose, unknown or removed key,
    unknown envelope version. One type on purpose; the message says which, nothing more."""


@dataclass(frozen=True)
class DataKey:
    """One AES-256 key. ``repr`` hides the material: it may end up in a log line."""

    kid: str
    key: bytes = field(repr=False)
    salt: bytes = field(repr=False)


@dataclass(frozen=True)
class Keyring:
    """The keys a server may decrypt with, and the one it encrypts with."""

    active: str
    keys: Mapping[str, DataKey]

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError("the active kid is not in the keyring")


def _b64(value: object, size: int, what: str) -> bytes:
    try:
        raw = base64.b64decode(str(value), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    if len(raw) != size:
        raise ValueError(f"{what} must be {size} bytes")
    return raw


def parse(raw: bytes | str) -> Keyring:
    """Parse ``keyring.json``; raise ``ValueError`` with a content-free reason.

    Only ``version``, ``active`` and each key's ``kid``/``key``/``salt`` are read; the
    operator's schedule fields beside them are ignored here."""
    try:
        doc = json.loads(raw)
    except ValueError:
        raise ValueError(f"{FILE} is not JSON") from None
    if not isinstance(doc, dict) or doc.get("version") != FORMAT_VERSION:
        raise ValueError(f"{FILE} is not a version-{FORMAT_VERSION} data keyring")
    items = doc.get("keys")
    if not isinstance(items, list):
        raise ValueError(f"{FILE} has no key list")
    keys: dict[str, DataKey] = {}
    for item in items:
        if not isinstance(item, dict):
            raise ValueError("a key entry is not an object")
        kid = item.get("kid")
        if not isinstance(kid, str) or not kid or len(kid.encode()) > MAX_KID_BYTES:
            raise ValueError("a key has no valid kid")
        if not kid.isascii() or kid in keys:
            raise ValueError("a kid is not ASCII or appears twice")
        keys[kid] = DataKey(
            kid,
            _b64(item.get("key"), KEY_BYTES, "a key"),
            _b64(item.get("salt"), SALT_BYTES, "a salt"),
        )
    active = doc.get("active")
    if not isinstance(active, str) or active not in keys:
        raise ValueError(f"{FILE} names no active key present in it")
    return Keyring(active=active, keys=keys)


def header(kid: str) -> bytes:
    """The envelope's authenticated header: version, kid length, kid."""
    encoded = kid.encode("ascii")
    return bytes([ENVELOPE_VERSION, len(encoded)]) + encoded


def split(envelope: bytes) -> tuple[str, bytes, bytes, bytes]:
    """``(kid, header, nonce, ciphertext)``; :class:`DecryptError` for a malformed blob."""
    if len(envelope) < 2:
        raise DecryptError("truncated envelope")
    if envelope[0] != ENVELOPE_VERSION:
        raise DecryptError(f"unsupported envelope version {envelope[0]}")
    end = 2 + envelope[1]
    if envelope[1] == 0 or len(envelope) < end + NONCE_BYTES + TAG_BYTES:
        raise DecryptError("truncated envelope")
    try:
        kid = envelope[2:end].decode("ascii")
    except UnicodeDecodeError:
        raise DecryptError("malformed kid") from None
    return kid, envelope[:end], envelope[end : end + NONCE_BYTES], envelope[end + NONCE_BYTES :]


def _purpose_info(purpose: str) -> bytes:
    if not purpose:
        raise ValueError("purpose must be a non-empty name, e.g. 'sessions'")
    return HKDF_INFO_PREFIX + purpose.encode()


def subkey(key: DataKey, purpose: str) -> bytes:
    """HKDF-SHA256(key, salt = the key's random salt, info = prefix + purpose)."""
    hkdf = HKDF(hashes.SHA256(), length=KEY_BYTES, salt=key.salt, info=_purpose_info(purpose))
    return hkdf.derive(key.key)


def seal(
    key: DataKey, plaintext: bytes, aad: bytes, purpose: str, nonce: bytes | None = None
) -> bytes:
    """Encrypt with ``key`` (pure; ``nonce`` is for tests only — leave it None)."""
    nonce = os.urandom(NONCE_BYTES) if nonce is None else nonce
    if len(nonce) != NONCE_BYTES:
        raise ValueError("nonce must be 12 bytes")
    head = header(key.kid)
    ciphertext = AESGCM(subkey(key, purpose)).encrypt(nonce, plaintext, head + aad)
    return head + nonce + ciphertext


def open_sealed(ring: Keyring, envelope: bytes, aad: bytes, purpose: str) -> bytes:
    """Decrypt with the key the envelope names (pure)."""
    kid, head, nonce, ciphertext = split(envelope)
    key = ring.keys.get(kid)
    if key is None:
        raise DecryptError("unknown kid (never issued, or removed after its retention)")
    try:
        return AESGCM(subkey(key, purpose)).decrypt(nonce, ciphertext, head + aad)
    except InvalidTag:
        raise DecryptError("authentication failed (tampered, or wrong aad or purpose)") from None


log = logging.getLogger(__name__)


def read(path: str | os.PathLike[str]) -> Keyring:
    """Read and parse the keyring file; :class:`MissingKeyMaterial` if that is impossible."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise MissingKeyMaterial(f"data keys not readable at {path}: {exc.strerror}") from None
    try:
        return parse(raw)
    except ValueError as exc:
        raise MissingKeyMaterial(f"data keys at {path} unusable: {exc}") from None


class DataKeys:
    """The mounted keyring, kept fresh. Thread-safe; cheap to call per message."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        refresh: float = 10.0,
        min_reread_interval: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Load the keyring now: a missing or unusable file raises
        :class:`MissingKeyMaterial` (fail the server's startup, never run without keys)."""
        self.path = path
        self.refresh = refresh
        self.min_reread_interval = min_reread_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._ring = read(path)
        self._loaded_at = clock()
        self._unusable: str | None = None  # the reason last warned about

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], resolve: Callable[[str], str] = lambda p: p
    ) -> DataKeys:
        """The keyring the operator mounted (``MCP_DATA_KEYS_PATH``); a startup error when
        the variable is unset (``spec.dataEncryption`` off) or the file is unusable."""
        path = env.get(ENV_PATH)
        if not path:
            raise MissingKeyMaterial(
                f"{ENV_PATH} is not set: enable spec.dataEncryption on the MCPServer"
            )
        return cls(resolve(path))

    @property
    def ring(self) -> Keyring:
        """The current keyring (re-read when ``refresh`` seconds have passed)."""
        now = self._clock()
        if now - self._loaded_at >= self.refresh:
            self._reload(now)
        return self._ring

    @property
    def active_kid(self) -> str:
        return self.ring.active

    def encrypt(self, plaintext: bytes, aad: bytes = b"", *, purpose: str) -> bytes:
        """Seal with the active key. ``aad`` binds the ciphertext to its context (a record
        id, a user): decryption must present the same bytes."""
        ring = self.ring
        return seal(ring.keys[ring.active], plaintext, aad, purpose)

    def decrypt(self, envelope: bytes, aad: bytes = b"", *, purpose: str) -> bytes:
        """Open an envelope of any key still in the keyring; :class:`DecryptError` if not."""
        ring = self.ring
        kid = split(envelope)[0]
        if kid not in ring.keys and self._clock() - self._loaded_at >= self.min_reread_interval:
            self._reload(self._clock())  # a key newer than our last read (rate-limited)
            ring = self._ring
        return open_sealed(ring, envelope, aad, purpose)

    def is_current(self, envelope: bytes) -> bool:
        """Whether an envelope uses the active key; re-encrypt stored data when it is not,
        before the old key's retention ends."""
        return split(envelope)[0] == self.ring.active

    def _reload(self, now: float) -> None:
        with self._lock:
            self._loaded_at = now
            # An unusable file keeps the last good keyring; the operator reports the Secret.
            # Warned once per cause (not on every refresh), and again once it recovers.
            try:
                self._ring = read(self.path)
            except MissingKeyMaterial as exc:
                if self._unusable != str(exc):
                    log.warning(
                        "%s; keeping the last good keyring (active %s)", exc, self._ring.active
                    )
                self._unusable = str(exc)
                return
            if self._unusable is not None:
                log.warning(
                    "data keys at %s readable again (active %s)", self.path, self._ring.active
                )
            self._unusable = None


__all__ = [
    "ENV_PATH",
    "FILE",
    "MOUNT_DIR",
    "DataKey",
    "DataKeys",
    "DecryptError",
    "Keyring",
    "MissingKeyMaterial",
    "open_sealed",
    "parse",
    "read",
    "seal",
]
