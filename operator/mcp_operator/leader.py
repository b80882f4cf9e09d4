"""Leader election on a ``coordination.k8s.io/v1`` Lease, with client-go's semantics.

kopf's own peering is priority-based and only pauses kopf's handlers, not the workers and
probe loops this operator runs beside them. A Lease fences all of it.

The rules are client-go's (``tools/leaderelection``), because every Kubernetes controller
that shares a lease with other tooling assumes them:

* **lease duration** (15 s): a candidate may take the lease only after it has seen the
  record *unchanged for that long on its own clock*. The holder's ``renewTime`` is never
  compared with the local clock, so clock skew between nodes cannot steal a healthy lease.
* **renew deadline** (10 s): the leader keeps trying to renew every retry period; transient
  errors (5xx, 429, timeouts) are retried, not fatal. If no renewal succeeded for the renew
  deadline, it stops acting. Because renew deadline < lease duration and a candidate's
  clock starts only when it *observes* the last renewal (which the leader started earlier),
  the old leader has stopped before a new one can start: two leaders never act at once.
* **retry period** (2 s): how often candidates try and the leader renews.
* **release on exit** (client-go ``ReleaseOnCancel``): a graceful stop clears the holder and
  sets the duration to 1 s, so a standby takes over within one retry period.

:class:`Elector` is the pure state machine (injected clock, no I/O), tested as a closed
loop; :class:`LeaderElection` is the thin I/O edge. :meth:`LeaderElection.may_act` is the
fence the Kubernetes client checks before every write, so no worker or probe loop can
write after the deadline even if it never looks at the election. A write that passed the
fence is sent with the API server's ``timeout`` set to :meth:`LeaderElection.write_window`,
so a slow API server abandons it rather than apply it after a successor started.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from mcp_operator.kube.client import ApiError, KubeClient

log = logging.getLogger(__name__)
Obj = dict[str, Any]
JITTER = 1.2  # candidates wait retry_period x U(1, 1.2), like client-go's wait.JitterUntil
# Allowance for a request's way from this process to the API server (see write_window).
TRANSIT_S = 1.0
LEASE_API = "coordination.k8s.io/v1"


@dataclass(frozen=True)
class ElectionConfig:
    """client-go's defaults. ``lease > renew > JITTER x retry`` keeps the fence sound."""

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def problems(self) -> list[str]:
        out = []
        if self.lease_duration <= self.renew_deadline:
            out.append("--lease-duration must be greater than --renew-deadline")
        if self.renew_deadline <= JITTER * self.retry_period:
            out.append(f"--renew-deadline must be greater than {JITTER} x --retry-period")
        if self.retry_period <= 0:
            out.append("--retry-period must be positive")
        return out


@dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, as client-go's ``LeaderElectionRecord``."""

    holder: str = ""
    duration_s: int = 15
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Obj) -> LeaseRecord:
        spec = lease.get("spec") or {}
        return cls(
            holder=spec.get("holderIdentity") or "",
            duration_s=int(spec.get("leaseDurationSeconds") or 0),
            acquire_time=spec.get("acquireTime"),
            renew_time=spec.get("renewTime"),
            transitions=int(spec.get("leaseTransitions") or 0),
        )

    def spec(self) -> Obj:
        return {
            "holderIdentity": self.holder or None,
            "leaseDurationSeconds": self.duration_s,
            "acquireTime": self.acquire_time,
            "renewTime": self.renew_time,
            "leaseTransitions": self.transitions,
        }


@dataclass(frozen=True)
class Attempt:
    """What one round decided: the record to write (None: someone else holds it)."""

    write: LeaseRecord | None
    create: bool = False


class Elector:
    """The pure lease state machine of one replica. ``now`` is a monotonic local clock;
    ``wall`` only fills the record's timestamps for humans and is never compared."""

    def __init__(self, me: str, config: ElectionConfig) -> None:
        self.me = me
        self.config = config
        self.observed: LeaseRecord | None = None
        self.observed_at = 0.0  # local time at which ``observed`` last changed
        self.renewed_at: float | None = None  # start of the last successful write as leader

    def attempt(self, live: LeaseRecord | None, exists: bool, now: float, wall: str) -> Attempt:
        """client-go's ``tryAcquireOrRenew``, minus the I/O."""
        duration = round(self.config.lease_duration)
        if not exists or live is None:
            return Attempt(LeaseRecord(self.me, duration, wall, wall, 0), create=True)
        if live != self.observed:
            self.observed, self.observed_at = live, now
        held_by_other = bool(live.holder) and live.holder != self.me
        if held_by_other and now < self.observed_at + max(live.duration_s, 1):
            return Attempt(None)
        if live.holder == self.me:
            record = replace(live, duration_s=duration, renew_time=wall)
        else:
            record = LeaseRecord(self.me, duration, wall, wall, live.transitions + 1)
        return Attempt(record)

    def written(self, record: LeaseRecord, started: float, now: float) -> None:
        """A write succeeded. The fence counts from when the request *started*: the API
        server may have stored it at any moment since."""
        self.observed, self.observed_at = record, now
        if record.holder == self.me:
            self.renewed_at = started
        else:
            self.renewed_at = None

    def may_act(self, now: float) -> bool:
        return self.renewed_at is not None and now < self.renewed_at + self.config.renew_deadline

    def successor_earliest(self) -> float | None:
        """The local time before which no other replica can start acting (None: we do not
        lead): a candidate's lease-duration clock starts only when it observes our last
        renewal, which is after we started it."""
        if self.renewed_at is None:
            return None
        return self.renewed_at + self.config.lease_duration

    def leading(self) -> bool:
        return self.renewed_at is not None

    def lost(self, now: float) -> bool:
        """Was leading and could not renew in time: stop, let a candidate take over."""
        return self.renewed_at is not None and not self.may_act(now)

    def next_delay(self, now: float, period: float) -> float:
        """How long to wait before the next round. A candidate also wakes right when the
        holder's lease would expire by its own observation (not a whole period later):
        take-over after a crash is lease duration + at most one observation lag. Safety
        does not depend on this; it only removes the wait for the next tick. Once the
        lease has expired by our clock and we still do not hold it (the API server is
        unreachable, a write conflicted), the next try is a whole period away: no busy loop."""
        if self.leading() or self.observed is None or not self.observed.holder:
            return period
        remaining = self.observed_at + max(self.observed.duration_s, 1) - now
        return min(period, remaining + 0.01) if remaining > 0 else period

    def release(self, wall: str) -> LeaseRecord | None:
        """The record that hands the lease over at once (ReleaseOnCancel), if we hold it."""
        if self.observed is None or self.observed.holder != self.me:
            return None
        self.renewed_at = None
        return LeaseRecord("", 1, wall, wall, self.observed.transitions)


def micro_time(moment: datetime | None = None) -> str:
    """Kubernetes ``MicroTime``."""
    return (moment or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class LeaderElection:
    """The I/O edge: reads and writes the Lease every retry period."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        name: str,
        me: str,
        config: ElectionConfig,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.client = client
        self.namespace = namespace
        self.name = name
        self.elector = Elector(me, config)
        self.config = config
        self.clock = clock or asyncio.get_running_loop().time
        self.leading = asyncio.Event()
        self.lost = asyncio.Event()
        self.on_lost: list[Callable[[], None]] = []  # e.g. set the operator's stop flag
        self._resource_version: str | None = None
        self._complained = False

    def may_act(self) -> bool:
        """The write fence (see module docstring)."""
        return self.elector.may_act(self.clock())

    def write_window(self) -> float | None:
        """How long the API server may take over a write sent now (its ``timeout``) so that
        the write lands before any successor can act, or is abandoned by the server.

        The fence closes at the renew deadline, but a write that passed it just before may
        sit in a slow API server's queue (priority and fairness, a stalled etcd) and be
        applied seconds later -- after a successor took over. With ``timeout`` the API
        server gives up on it (504) instead. None when not leading (no limit added)."""
        earliest = self.elector.successor_earliest()
        if earliest is None:
            return None
        return earliest - self.clock() - TRANSIT_S

    @property
    def path(self) -> str:
        return f"/apis/{LEASE_API}/namespaces/{self.namespace}/leases/{self.name}"

    async def run(self) -> None:
        """Campaign, then renew, until the lease is lost (sets ``lost``) or cancelled."""
        while True:
            budget = self.config.renew_deadline
            if self.elector.renewed_at is not None:
                budget = max(0.05, self.elector.renewed_at + budget - self.clock())
            try:
                async with asyncio.timeout(budget):  # no extra task (cf. runner: kopf)
                    await self.round()
            except (TimeoutError, ApiError, OSError, ValueError) as exc:
                self._complain(exc)
            except Exception as exc:  # e.g. a TransportError: transient, retried
                self._complain(exc)
            if self.elector.leading() and not self.leading.is_set():
                self._complained = False
                log.info("leading: took lease %s/%s as %s", self.namespace, self.name, self.me)
                self.leading.set()
            if self.elector.lost(self.clock()):
                log.error(
                    "could not renew lease %s/%s within %.0fs: stopped acting",
                    self.namespace,
                    self.name,
                    self.config.renew_deadline,
                )
                self.lost.set()
                for callback in self.on_lost:
                    callback()
                return
            period = self.config.retry_period
            if not self.elector.leading():
                period *= random.uniform(1.0, JITTER)
            await asyncio.sleep(self.elector.next_delay(self.clock(), period))

    @property
    def me(self) -> str:
        return self.elector.me

    def _complain(self, exc: BaseException) -> None:
        """Transient errors are retried until the deadline; say so once, not every 2 s."""
        if isinstance(exc, ApiError) and exc.status == 409:
            return  # another replica wrote first: the next round re-reads
        level = logging.WARNING if not self._complained else logging.DEBUG
        log.log(level, "lease %s/%s: %s (retrying)", self.namespace, self.name, exc or repr(exc))
        self._complained = True

    async def round(self) -> None:
        started = self.clock()
        live = await self.client.get(LEASE_API, "Lease", self.namespace, self.name)
        record = LeaseRecord.from_lease(live) if live else None
        self._resource_version = (live or {}).get("metadata", {}).get("resourceVersion")
        attempt = self.elector.attempt(record, live is not None, self.clock(), micro_time())
        if attempt.write is None:
            return
        await self.write(attempt.write, create=attempt.create)
        self.elector.written(attempt.write, started, self.clock())

    async def write(self, record: LeaseRecord, create: bool = False) -> None:
        lease: Obj = {
            "apiVersion": LEASE_API,
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": record.spec(),
        }
        if create:
            result = await self.client.create(lease, fenced=False)
        else:
            # resourceVersion makes the write conditional: a racing replica gets 409.
            lease["metadata"]["resourceVersion"] = self._resource_version
            result = await self.client.request("PUT", self.path, body=lease, fenced=False)
        self._resource_version = (result.get("metadata") or {}).get("resourceVersion")

    async def release(self) -> None:
        """Hand the lease over (only called once this replica has stopped acting)."""
        record = self.elector.release(micro_time())
        if record is None:
            return
        try:
            await asyncio.wait_for(self.write(record), timeout=self.config.retry_period * 2)
            log.info("released lease %s/%s", self.namespace, self.name)
        except Exception as exc:
            log.warning("could not release lease %s/%s: %s", self.namespace, self.name, exc)
