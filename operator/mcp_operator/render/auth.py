"""What an MCP pod needs to verify the operator's tokens: the JWKS volume and its env.

The JWKS ConfigMap is mounted as a whole volume — never ``subPath``, whose files the
kubelet never updates — so a rotation reaches running pods without a restart. ``optional``
lets pods start before the operator's keys loop has written the ConfigMap; the verifier
fails closed (verifies nothing) until the file appears.
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.durations import parse_duration
from mcp_operator.api.models import MCPServer
from mcp_operator.auth import verify
from mcp_operator.keys.tokens import audience, issuer
from mcp_operator.render import meta

Obj = dict[str, Any]
VOLUME = "mcp-operator-jwks"
MOUNT_DIR = "/var/run/mcp-operator/jwks"
JWKS_FILE = "jwks.json"
JWKS_PATH = f"{MOUNT_DIR}/{JWKS_FILE}"
REVOKED_VOLUME = "mcp-operator-revoked"
REVOKED_DIR = "/var/run/mcp-operator/revoked"


def jwks_config_map_name(server: MCPServer) -> str:
    return meta.child_name(server, "jwks")


def revoked_config_map_name(server: MCPServer) -> str:
    return meta.child_name(server, "revoked")


def signing_secret_name(server: MCPServer) -> str:
    return meta.child_name(server, "signing-keys")


def volumes(server: MCPServer) -> list[Obj]:
    if not server.spec.auth.enabled:
        return []
    return [
        {"name": VOLUME, "configMap": {"name": jwks_config_map_name(server), "optional": True}},
        {
            "name": REVOKED_VOLUME,
            "configMap": {"name": revoked_config_map_name(server), "optional": True},
        },
    ]


def with_verifier(container: Obj, server: MCPServer) -> Obj:
    """The MCP container plus the JWKS mount and the verifier's env (when auth is on)."""
    if not server.spec.auth.enabled:
        return container
    mounts = [
        {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True},
        {"name": REVOKED_VOLUME, "mountPath": REVOKED_DIR, "readOnly": True},
    ]
    return {
        **container,
        "volumeMounts": [*container.get("volumeMounts", []), *mounts],
        "env": [*container.get("env", []), *env(server)],
    }


def env(server: MCPServer) -> list[Obj]:
    """The verifier's settings (see :class:`mcp_operator.auth.verify.VerifierConfig`)."""
    auth = server.spec.auth
    if not auth.enabled:
        return []
    values = {
        verify.ENV_JWKS_PATH: JWKS_PATH,
        verify.ENV_ISSUER: issuer(server),
        verify.ENV_AUDIENCE: audience(server),
        # All asymmetric algorithms: during an algorithm change keys of both are published;
        # each JWK pins its own alg, and the verifier requires the token's to match it.
        verify.ENV_ALGORITHMS: ",".join(verify.DEFAULT_ALGORITHMS),
        verify.ENV_LEEWAY: str(int(parse_duration(auth.leeway).total_seconds())),
        verify.ENV_REVOKED_DIR: REVOKED_DIR,
    }
    return [{"name": k, "value": v} for k, v in values.items()]
