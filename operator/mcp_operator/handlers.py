"""kopf handlers: thin. The MCPServer watch only feeds events to the supervisor.

There is deliberately no handler per spec field and no create/update handler with its own
logic: kopf's event handlers fire for the initial listing (resume), every change
(create/update) and deletion, and the supervisor's workers reconcile by level.

Children are *not* watched through kopf: see :mod:`mcp_operator.kube.informer` (server-side
label selectors, and an index rebuilt on every relist).
"""

from __future__ import annotations

from typing import Any

import kopf

from mcp_operator.api.models import GROUP, PLURAL, VERSION
from mcp_operator.kube.client import Credentials
from mcp_operator.reconcile.supervisor import Supervisor


class EventsOnlyDiffBase(kopf.DiffBaseStorage):
    """kopf builds a diff-base "essence" (a deep copy of the body) for every watch event of
    every resource, but only create/update handlers use it and there are none here: each
    event costs a deep copy of a whole Deployment/Pod for nothing (about 15 % of the
    operator's CPU at 200 objects). Build an empty essence; reading/storing still delegate.
    """

    def __init__(self, inner: kopf.DiffBaseStorage) -> None:
        super().__init__()
        self.inner = inner

    def build(self, *, body: kopf.Body, extra_fields: Any = None) -> kopf.BodyEssence:
        return kopf.BodyEssence()

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self.inner.fetch(body=body)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self.inner.store(body=body, patch=patch, essence=essence)


def register(
    registry: kopf.OperatorRegistry, supervisor: Supervisor, creds: Credentials, settings_fn: Any
) -> None:
    """Register every handler on ``registry`` (one registry per operator instance)."""

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        settings_fn(settings)

    @kopf.on.cleanup(registry=registry)
    async def stop_workers(**_: Any) -> None:
        # Before kopf's shutdown waits for (then cancels) tasks it did not start itself.
        await supervisor.stop_all()

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(
            server=creds.server,
            token=creds.token,
            ca_path=creds.ca_file,
            certificate_path=creds.cert_file,
            private_key_path=creds.key_file,
            insecure=creds.insecure or None,
            scheme="Bearer" if creds.token else None,
        )

    @kopf.on.event(GROUP, VERSION, PLURAL, registry=registry)
    async def server_event(**kwargs: Any) -> None:
        deleted = kwargs["event"].get("type") == "DELETED"
        supervisor.observe_server(dict(kwargs["body"]), deleted=deleted)
