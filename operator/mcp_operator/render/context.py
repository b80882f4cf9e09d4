"""What a render needs besides the spec: the observed state it may depend on.

Renderers are pure: everything from the cluster arrives here, decided by the caller. This
is Helm's ``.Capabilities`` idea plus the failover state that changes what is desired
(which tier the stable Service selects, whether a cold backup is scaled up).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mcp_operator.api.models import Tier

# What a current Kubernetes serves; used offline (``mcp-operator render``).
CURRENT_API_VERSIONS = frozenset(
    {"v1", "apps/v1", "policy/v1", "policy/v1beta1", "networking.k8s.io/v1"}
)
CURRENT_MINOR = 37
SLEEP_ACTION_MINOR = 30  # lifecycle.*.sleep: beta and on by default since 1.30


@dataclass(frozen=True)
class Capabilities:
    """The group/versions the target API server serves."""

    api_versions: frozenset[str] = CURRENT_API_VERSIONS
    minor: int = CURRENT_MINOR
    """The API server's minor version (``/version``)."""

    def pdb_api_version(self) -> str:
        return "policy/v1" if "policy/v1" in self.api_versions else "policy/v1beta1"

    def sleep_action(self) -> bool:
        """Whether ``lifecycle.preStop.sleep`` exists: an older server refuses the field."""
        return self.minor >= SLEEP_ACTION_MINOR


@dataclass(frozen=True)
class RenderContext:
    """Observed inputs: the active tier and whether a cold backup must run now."""

    active_tier: Tier = "primary"
    backup_warm: bool = False
    capabilities: Capabilities = field(default_factory=Capabilities)
    owner_uid: str | None = None
    # SHA-256 hex of the cache passwords (mcp and monitor users, read from NAME-cache-auth
    # by the operator); None offline, where the ACL file gets a hash no password matches.
    cache_password_hash: str | None = None
    cache_monitor_hash: str | None = None
    # During a password rotation (keys/cacherotation.py): the other hash Redis must accept
    # beside cache_password_hash, and per tier the hash its pods should run (the pod
    # template's credential stamp; a tier absent here runs cache_password_hash).
    cache_extra_hashes: tuple[str, ...] = ()
    cache_tier_hashes: tuple[tuple[str, str], ...] = ()
    # The operator's own Redis user (ACL GETUSER/SETUSER only), which makes Redis accept a
    # new password live, without a restart.
    cache_operator_hash: str | None = None
    # Where the operator runs: the cache NetworkPolicy admits its pods (POD_NAMESPACE).
    operator_namespace: str = "mcp-operator-system"
