"""What an MCP pod needs for data encryption: the keyring Secret as a volume and its env.

The Secret ``NAME-data-keys`` is mounted as a whole volume — never ``subPath``, whose files
the kubelet never updates — so a rotation reaches running pods without a restart (the
kubelet swaps the files atomically within its sync period, about a minute or two).

The volume is *not* optional: a pod waits in ContainerCreating until the operator has
written the keyring, so a server never starts without key material (the helper
:mod:`mcp_operator.auth.datakeys` would refuse to start anyway).
"""

from __future__ import annotations

from typing import Any

from mcp_operator.api.models import MCPServer
from mcp_operator.auth import datakeys
from mcp_operator.render import meta

Obj = dict[str, Any]
VOLUME = "mcp-operator-data-keys"
KEYRING_PATH = f"{datakeys.MOUNT_DIR}/{datakeys.FILE}"


def secret_name(server: MCPServer) -> str:
    return meta.child_name(server, "data-keys")


def volumes(server: MCPServer, pod_security: Obj | None = None) -> list[Obj]:
    """The keyring volume. Its files are key material: 0440 with the pod's ``fsGroup`` (the
    kubelet gives the files that group, so the server still reads them while other UIDs in
    the pod cannot), 0444 without one (root owns the files; 0440 would lock the server out)."""
    if not server.spec.data_encryption.enabled:
        return []
    has_group = (pod_security or {}).get("fsGroup") is not None
    mode = 0o440 if has_group else 0o444
    return [{"name": VOLUME, "secret": {"secretName": secret_name(server), "defaultMode": mode}}]


def with_keyring(container: Obj, server: MCPServer) -> Obj:
    """The MCP container plus the keyring mount and ``MCP_DATA_KEYS_PATH`` (when enabled)."""
    if not server.spec.data_encryption.enabled:
        return container
    mount = {"name": VOLUME, "mountPath": datakeys.MOUNT_DIR, "readOnly": True}
    return {
        **container,
        "volumeMounts": [*container.get("volumeMounts", []), mount],
        "env": [*container.get("env", []), {"name": datakeys.ENV_PATH, "value": KEYRING_PATH}],
    }
