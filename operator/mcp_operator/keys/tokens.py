"""Minting tokens with the active key, and the claims both sides agree on.

The issuer and audience are derived from the ``MCPServer`` the same way for the operator
(minting), the renderer (the env the pods' verifier reads) and the CLI, so they can never
disagree. The audience is the server's canonical MCP URI (RFC 8707): its stable Service URL.
"""

from __future__ import annotations

import secrets
from datetime import datetime, timedelta
from typing import Any

import jwt

from mcp_operator.api.models import MCPServer
from mcp_operator.keys.keygen import KeyMaterial
from mcp_operator.render.meta import endpoint

PROBE_SUBJECT = "system:mcp-operator:probe"
PROBE_TTL = timedelta(seconds=60)


def issuer(server: MCPServer) -> str:
    meta = server.metadata
    return server.spec.auth.issuer or f"urn:mcp-operator:{meta.namespace}:{meta.name}"


def audience(server: MCPServer) -> str:
    return endpoint(server)


def mint(
    key: KeyMaterial,
    *,
    iss: str,
    aud: str,
    sub: str,
    ttl: timedelta,
    now: datetime,
    scope: str | None = None,
) -> str:
    """A signed JWT with every claim a careful verifier requires (RFC 8725)."""
    issued = int(now.timestamp())
    claims: dict[str, Any] = {
        "iss": iss,
        "aud": aud,
        "sub": sub,
        "iat": issued,
        "nbf": issued,
        "exp": issued + int(ttl.total_seconds()),
        "jti": secrets.token_urlsafe(16),
    }
    if scope:
        claims["scope"] = scope
    headers = {"kid": key.kid, "typ": "JWT"}
    return jwt.encode(claims, key.private_key(), algorithm=key.alg, headers=headers)
