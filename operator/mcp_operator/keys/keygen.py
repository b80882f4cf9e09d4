"""Asymmetric signing keys and their public JWKS.

Only asymmetric algorithms: verifiers hold public keys only, so a leaked JWKS (it is a
ConfigMap, readable by anyone who can read the namespace) never lets anyone mint tokens.
The ``kid`` is random (128 bits) and says nothing about time or order: a verifier picks a
key by ``kid`` alone.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from typing import Any, Literal

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm

Algorithm = Literal["ES256", "EdDSA", "RS256"]
ALGORITHMS: tuple[Algorithm, ...] = ("ES256", "EdDSA", "RS256")
RSA_BITS = 3072
KID_BYTES = 16  # 128 bits
PrivateKey = ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class KeyMaterial:
    """A private key in PEM (PKCS#8). ``repr`` never shows it: it may end up in a log line."""

    kid: str
    alg: Algorithm
    private_pem: str = field(repr=False)

    def private_key(self) -> PrivateKey:
        key = serialization.load_pem_private_key(self.private_pem.encode(), password=None)
        if not isinstance(key, PrivateKey):
            raise ValueError("unsupported private key type")
        return key


def new_kid() -> str:
    return secrets.token_urlsafe(KID_BYTES)


def _generate_private(alg: Algorithm) -> PrivateKey:
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    if alg == "EdDSA":
        return ed25519.Ed25519PrivateKey.generate()
    return rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)


def generate(alg: Algorithm) -> KeyMaterial:
    """A fresh key pair with a random ``kid``."""
    private = _generate_private(alg)
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return KeyMaterial(kid=new_kid(), alg=alg, private_pem=pem.decode())


def public_jwk(key: KeyMaterial) -> dict[str, Any]:
    """The public half as a standard JWK with ``kid``, ``alg`` and ``use: sig``."""
    public = key.private_key().public_key()
    jwk: dict[str, Any]
    if isinstance(public, ec.EllipticCurvePublicKey):
        jwk = ECAlgorithm.to_jwk(public, as_dict=True)
    elif isinstance(public, ed25519.Ed25519PublicKey):
        jwk = OKPAlgorithm.to_jwk(public, as_dict=True)
    else:
        jwk = RSAAlgorithm.to_jwk(public, as_dict=True)
        jwk.pop("key_ops", None)
    return {**jwk, "kid": key.kid, "alg": key.alg, "use": "sig"}


def jwks_document(keys: list[KeyMaterial]) -> str:
    """The JWKS JSON the verifiers read; keys in a stable order (by kid) for no-op applies."""
    return json.dumps({"keys": [public_jwk(k) for k in sorted(keys, key=lambda k: k.kid)]})
