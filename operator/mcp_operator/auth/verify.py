"""A JWT verifier for MCP servers behind mcp-operator: small, typed, no framework ties.

It reads the JWKS the operator publishes (a mounted ConfigMap file) and follows RFC 8725:

* an algorithm allow-list, and the header ``alg`` must equal the JWK's own ``alg``;
* the key is chosen by ``kid`` only, from the pinned file; ``jku``/``x5u``/``jwk`` headers
  are ignored, never fetched;
* an unknown ``kid`` triggers a re-read of the file, rate-limited (a flood of forged kids
  cannot turn into a flood of reads); the file is also re-read every ``refresh`` seconds,
  so a removed (revoked) key stops verifying promptly;
* ``exp``, ``iat``, ``iss``, ``aud``, ``sub`` and ``jti`` are required; ``iss`` and ``aud``
  must match exactly; leeway is at most 60 s;
* a token whose ``jti`` is in the revocation list (a mounted ConfigMap directory: one file
  per revoked ``jti``, its content the token's expiry) is refused; the list is re-read with
  the key set.

The mounted volume is replaced atomically by the kubelet (a ``..data`` symlink swap), so a
read never sees half a file; an unreadable file keeps the last good key set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

DEFAULT_ALGORITHMS = ("ES256", "EdDSA", "RS256")
REQUIRED_CLAIMS = ("exp", "iat", "iss", "aud", "sub", "jti")
MAX_LEEWAY = 60.0

# The environment the operator renders into every MCP pod when spec.auth is enabled.
ENV_JWKS_PATH = "MCP_AUTH_JWKS_PATH"
ENV_ISSUER = "MCP_AUTH_ISSUER"
ENV_AUDIENCE = "MCP_AUTH_AUDIENCE"
ENV_ALGORITHMS = "MCP_AUTH_ALGORITHMS"
ENV_LEEWAY = "MCP_AUTH_LEEWAY_SECONDS"
ENV_REVOKED_DIR = "MCP_AUTH_REVOKED_DIR"


class InvalidToken(Exception):
    """Why a token was refused; the message never contains the token."""


@dataclass(frozen=True)
class VerifierConfig:
    jwks_path: Path
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: float = 30.0
    min_reread_interval: float = 1.0
    refresh: float = 5.0
    revoked_dir: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.leeway <= MAX_LEEWAY:
            raise ValueError(f"leeway must be between 0 and {MAX_LEEWAY:g} seconds")
        unknown = set(self.algorithms) - set(DEFAULT_ALGORITHMS)
        if unknown or not self.algorithms:
            raise ValueError("algorithms must be a non-empty subset of ES256, EdDSA, RS256")

    @classmethod
    def from_env(
        cls, env: Mapping[str, str], resolve: Callable[[str], str] = lambda p: p
    ) -> VerifierConfig | None:
        """The operator-rendered settings, or None when auth is off (no JWKS path)."""
        path = env.get(ENV_JWKS_PATH)
        if not path:
            return None
        algorithms = tuple(a for a in env.get(ENV_ALGORITHMS, "").split(",") if a)
        revoked = env.get(ENV_REVOKED_DIR)
        return cls(
            revoked_dir=Path(resolve(revoked)) if revoked else None,
            jwks_path=Path(resolve(path)),
            issuer=env[ENV_ISSUER],
            audience=env[ENV_AUDIENCE],
            algorithms=algorithms or DEFAULT_ALGORITHMS,
            leeway=float(env.get(ENV_LEEWAY, "30")),
        )


@dataclass
class _KeySet:
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    revoked: frozenset[str] = frozenset()
    loaded_at: float = float("-inf")


class Verifier:
    """Verify bearer tokens against the mounted JWKS. Thread-unsafe by design: one per
    event loop; the work per call is a dict lookup and one signature check."""

    def __init__(self, config: VerifierConfig, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self._clock = clock
        self._set = _KeySet()

    def verify(self, token: str) -> dict[str, Any]:
        """Return the claims of a valid token; raise :class:`InvalidToken` otherwise."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidToken("malformed token") from None
        alg, kid = header.get("alg"), header.get("kid")
        if alg not in self.config.algorithms:
            raise InvalidToken("algorithm not allowed")
        if not isinstance(kid, str) or not kid:
            raise InvalidToken("no kid")
        key = self._key(kid)
        if key.algorithm_name != alg:
            raise InvalidToken("algorithm does not match the key")
        try:
            claims = dict(
                jwt.decode(
                    token,
                    key=key.key,
                    algorithms=[alg],
                    audience=self.config.audience,
                    issuer=self.config.issuer,
                    leeway=self.config.leeway,
                    options={"require": list(REQUIRED_CLAIMS), "strict_aud": True},
                )
            )
        except jwt.PyJWTError as exc:
            raise InvalidToken(type(exc).__name__) from None
        if str(claims["jti"]) in self._set.revoked:
            raise InvalidToken("revoked")
        return claims

    def _key(self, kid: str) -> jwt.PyJWK:
        now = self._clock()
        if now - self._set.loaded_at >= self.config.refresh:
            self._reload(now)
        key = self._set.keys.get(kid)
        if key is None and now - self._set.loaded_at >= self.config.min_reread_interval:
            self._reload(now)
            key = self._set.keys.get(kid)
        if key is None:
            raise InvalidToken("unknown kid")
        return key

    def _reload(self, now: float) -> None:
        self._set.loaded_at = now
        self._set.revoked = self._read_revoked()
        try:
            doc = json.loads(self.config.jwks_path.read_text())
        except (OSError, ValueError):
            return  # keep the last good set: a missing file at startup verifies nothing
        keys: dict[str, jwt.PyJWK] = {}
        for item in doc.get("keys") or [] if isinstance(doc, dict) else []:
            if not isinstance(item, dict) or item.get("use", "sig") != "sig":
                continue
            if item.get("alg") not in self.config.algorithms or not item.get("kid"):
                continue
            try:
                keys[str(item["kid"])] = jwt.PyJWK(item, algorithm=item["alg"])
            except jwt.PyJWTError:
                continue
        self._set.keys = keys

    def _read_revoked(self) -> frozenset[str]:
        """Revoked ``jti``s: the visible names of the mounted directory (``..data`` and the
        kubelet's other dot-dot entries are its atomic-update machinery)."""
        directory = self.config.revoked_dir
        if directory is None:
            return frozenset()
        try:
            return frozenset(n for n in os.listdir(directory) if not n.startswith(".."))
        except OSError:
            return self._set.revoked  # keep the last good list


def bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer …`` header value, if that is what it is."""
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None
