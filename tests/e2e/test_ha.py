"""The operator survives itself: two replicas with leader election on the real control plane.

Both run as the restricted identity, with the lease rights of the generated Role only (in
their own namespace, for their one Lease), and client-go's default timings (15/10/2 s).

- A standby answers ``/healthz`` for 5 minutes without a restart: a third replica stands by
  (on a Lease held elsewhere, so no test makes it lead) from the module's start, polled every
  second while the other tests run -- across a watch timeout (300 s) and an API-server outage;
  the last test waits only for what is left of the 5 minutes.
- ``kill -9`` of the leader: the standby restores a deleted Service within lease duration
  + 5 s.
- Graceful stop of the leader: the lease is released, the standby leads within 5 s.
- kube-apiserver stopped for 20 s and restarted: the leader steps down before its renew
  deadline, exactly one replica acts afterwards, and the API server's audit log shows that no
  two replicas wrote in the same window (each replica's requests carry its name in the
  User-Agent).
- A namespace with hundreds of unrelated pods: none reaches the operator (the API server
  filters the watch by label; the operator's own counters show it).
- After a restart of both replicas, children that already match are not re-applied.
- A server deleted while the operator is stopped is not resurrected after the restart.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from mcp_devcluster.controlplane import OPERATOR_USER, ControlPlane
from mcp_devcluster.stack import OperatorProcess, kubectl_apply, server_manifest
from mcp_operator import rbac
from mcp_operator.kube.client import load_credentials, ssl_context
from tests.conftest import kubectl_binary
from tests.e2e.conftest import get_json, wait_for
from tests.e2e.ops import Kubectl, others_paused, wait_condition

pytestmark = pytest.mark.e2e

LEASE = "mcp-operator-ha"
LEASE_NS = "mcp-ha-system"
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
WATCH_LEASE = "mcp-operator-ha-watch"  # held elsewhere: its candidate stays a standby
STANDBY_FOR_S = 300.0
OUTAGE_S = 20.0
UNSCHEDULABLE = {"nodeSelector": {"mcp-operator.dev/test": "unschedulable"}}
NOISE_PODS = 300


@dataclass
class Watched:
    """A standby polled every second, as a kubelet's liveness probe would (1 s timeout),
    from a thread, while the module's other tests run."""

    op: OperatorProcess
    started: float = field(default_factory=time.monotonic)
    polls: list[tuple[float, bool, str]] = field(default_factory=list)  # (t, healthz ok, role)
    done: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        assert self.op.proc is not None
        self.pid = self.op.proc.pid
        self.thread = threading.Thread(target=self._poll, name="standby-poll", daemon=True)

    def start(self) -> None:
        """Once the process is live (the shipped probe waits 15 s before its first try)."""
        self.op.wait_live()
        self.started = time.monotonic()
        self.thread.start()

    def _poll(self) -> None:
        base = f"http://127.0.0.1:{self.op.liveness_port}"
        tick = self.started
        while not self.done.wait(max(0.0, tick - time.monotonic())):
            tick = max(tick + 1.0, time.monotonic())  # one per second, whatever a poll took
            at, ok, role = time.monotonic(), False, ""
            try:
                ok = httpx.get(f"{base}/healthz", timeout=1).status_code == 200
                role = httpx.get(f"{base}/readyz", timeout=1).text
            except httpx.HTTPError:
                pass
            self.polls.append((at, ok and self.op.alive, role))

    def longest_failure(self) -> float:
        """The longest spell of failed polls (a kubelet restarts after 3 failed probes 10 s
        apart: a spell of 20 s or more)."""
        longest, since = 0.0, None
        for at, ok, _ in self.polls:
            if ok:
                since = None
                continue
            since = at if since is None else since
            longest = max(longest, at - since + 1.0)
        return longest


@dataclass
class Pair:
    replicas: dict[str, OperatorProcess]
    ns: str
    watched: Watched

    def role(self, name: str) -> str:
        op = self.replicas[name]
        if not op.alive:
            return "dead"
        try:
            return httpx.get(f"http://127.0.0.1:{op.liveness_port}/readyz", timeout=2).text
        except httpx.HTTPError:
            return "unreachable"

    def leader(self, timeout: float = 40.0) -> str:
        """The one replica that leads while the other stands by."""

        def settled() -> str | None:
            roles = {name: self.role(name) for name in self.replicas}
            leaders = [n for n, r in roles.items() if r == "leader"]
            if len(leaders) == 1 and sorted(roles.values()) == ["leader", "standby"]:
                return leaders[0]
            return None

        return wait_for(settled, timeout=timeout, interval=0.2, what="one leader, one standby")

    def other(self, name: str) -> str:
        return next(n for n in self.replicas if n != name)

    def restart(self, name: str) -> None:
        self.replicas[name].start()
        self.replicas[name].wait_live()


def metric(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(\{{(.*)\}})? (\S+)$", line)
        if not match:
            continue
        have = dict(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(match.group(3))
    return total


@pytest.fixture(scope="module")
def pair(
    crd_and_rbac: ControlPlane, kubectl: Kubectl, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Pair]:
    kubectl("create", "namespace", LEASE_NS, check=False)
    user = {"kind": "User", "name": "mcp-operator", "apiGroup": "rbac.authorization.k8s.io"}
    watch_role = "mcp-operator-leader-watch"
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    held = {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": WATCH_LEASE, "namespace": LEASE_NS},
        "spec": {
            "holderIdentity": "a-replica-elsewhere",
            "leaseDurationSeconds": 3600,
            "acquireTime": now,
            "renewTime": now,
        },
    }
    kubectl_apply(
        str(kubectl_binary()),
        crd_and_rbac.admin_kubeconfig,
        [
            rbac.lease_role(LEASE_NS, LEASE),
            rbac.lease_role_binding(LEASE_NS, user),
            rbac.lease_role(LEASE_NS, WATCH_LEASE, name=watch_role),
            rbac.lease_role_binding(LEASE_NS, user, name=watch_role),
            held,
        ],
    )
    ns = f"ha-{secrets.token_hex(3)}"
    kubectl("create", "namespace", ns)
    workdir: Path = tmp_path_factory.mktemp("ha")
    replicas = {}
    with others_paused():
        standby = OperatorProcess(
            crd_and_rbac.operator_kubeconfig,
            workdir / "operator-c.log",
            extra_args=("--verbose", "--leader-lease", WATCH_LEASE),
            env={"POD_NAME": "operator-c", "POD_NAMESPACE": LEASE_NS},
        ).start()
        watched = Watched(standby)
        for name in ("a", "b"):
            replicas[name] = OperatorProcess(
                crd_and_rbac.operator_kubeconfig,
                workdir / f"operator-{name}.log",
                extra_args=("--verbose", "--leader-lease", LEASE),
                env={"POD_NAME": f"operator-{name}", "POD_NAMESPACE": LEASE_NS},
            ).start()
        try:
            watched.start()
            for op in replicas.values():
                op.wait_live()
            yield Pair(replicas, ns, watched)
        finally:
            watched.done.set()
            for op in (*replicas.values(), standby):
                op.stop()
            kubectl("delete", "namespace", ns, "--wait=false", check=False)


@pytest.fixture(scope="module")
def served(pair: Pair, kubectl: Kubectl) -> Pair:
    """An MCPServer the leader has reconciled (pods never scheduled: control plane only)."""
    pair.leader()
    manifest = server_manifest(
        "web",
        pair.ns,
        primary={"replicas": 1},
        backup={"enabled": False},
        failover={"enabled": False},
        pod=UNSCHEDULABLE,
    )
    kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest))
    wait_condition(kubectl, pair.ns, "web", "Reconciled", "True", timeout=60)
    return pair


class Api:
    """Direct API reads for timing (a kubectl per poll costs ~0.3 s on a busy machine)."""

    def __init__(self, cluster: ControlPlane) -> None:
        creds = load_credentials(str(cluster.admin_kubeconfig))
        self.http = httpx.Client(
            base_url=creds.server,
            verify=ssl_context(creds),
            headers={"Authorization": f"Bearer {creds.token}"} if creds.token else {},
            timeout=5,
        )

    def service_uid(self, ns: str, name: str = "web") -> str | None:
        response = self.http.get(f"/api/v1/namespaces/{ns}/services/{name}")
        return str(response.json()["metadata"]["uid"]) if response.status_code == 200 else None

    def delete_service(self, ns: str, name: str = "web") -> None:
        self.http.delete(f"/api/v1/namespaces/{ns}/services/{name}").raise_for_status()

    def wait_restored(self, ns: str, old: str | None, since: float) -> float:
        wait_for(
            lambda: (uid := self.service_uid(ns)) is not None and uid != old,
            timeout=60,
            interval=0.05,
            what="the deleted Service to be restored",
        )
        return time.monotonic() - since


@pytest.fixture(scope="module")
def api(cluster: ControlPlane) -> Api:
    return Api(cluster)


def test_standby_stays_live_and_reports_its_role(pair: Pair) -> None:
    """10 s (5 minutes: the module's last test): every replica's /healthz answers
    throughout, the roles stay put, and the leader metric agrees with /readyz."""
    leader = pair.leader()
    standby = pair.other(leader)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for name, op in pair.replicas.items():
            assert op.alive, f"{name} exited:\n{op.log_tail()}"
            url = f"http://127.0.0.1:{op.liveness_port}/healthz"
            assert httpx.get(url, timeout=2).status_code == 200
        assert pair.role(leader) == "leader" and pair.role(standby) == "standby"
        time.sleep(1)
    assert metric(pair.replicas[leader].metrics(), "mcp_operator_leader") == 1
    assert metric(pair.replicas[standby].metrics(), "mcp_operator_leader") == 0


def test_kill9_of_the_leader_standby_acts_within_lease_duration(
    served: Pair, api: Api, crd_and_rbac: ControlPlane
) -> None:
    """The leader is frozen (SIGSTOP: from then on it renews nothing, so the clock starts
    there), the Service deleted, then the leader is killed -9. The audit log shows one
    hand-over with client-go's timing (see :func:`check_terms`)."""
    since = datetime.now(UTC) - timedelta(seconds=5)  # the leader's last renewals
    leader = served.leader()
    standby = served.other(leader)
    op = served.replicas[leader]
    assert op.proc is not None
    old = api.service_uid(served.ns)
    frozen_at = time.monotonic()
    os.killpg(op.proc.pid, signal.SIGSTOP)
    api.delete_service(served.ns)
    op.kill9()
    took = api.wait_restored(served.ns, old, frozen_at)
    print(f"\nkill -9 of the leader → Service restored by the standby after {took:.1f}s")
    assert served.role(standby) == "leader"
    assert took <= LEASE_DURATION + 5, served.replicas[standby].log_tail()
    served.restart(leader)  # comes back as the standby
    assert served.leader() == standby
    runs = terms(audited_writes(crd_and_rbac, since))
    assert [run[0].replica for run in runs] == [leader, standby]
    check_terms(runs)


def test_graceful_stop_hands_over_within_5s(served: Pair, api: Api) -> None:
    leader = served.leader()
    standby = served.other(leader)
    stopped_at = time.monotonic()
    op = served.replicas[leader]
    assert op.proc is not None
    os.killpg(op.proc.pid, signal.SIGTERM)
    wait_for(
        lambda: served.role(standby) == "leader",
        timeout=30,
        interval=0.1,
        what="the standby to lead",
    )
    handover = time.monotonic() - stopped_at
    op.proc.wait(timeout=30)
    assert op.proc.returncode == 0, op.log_tail()
    assert "released lease" in op.log_tail(200)
    old, since = api.service_uid(served.ns), time.monotonic()
    api.delete_service(served.ns)
    took = api.wait_restored(served.ns, old, since)
    print(f"\ngraceful stop → hand-over {handover:.1f}s; then a Service restore {took:.1f}s")
    assert handover <= 5.0, served.replicas[standby].log_tail()
    served.restart(leader)
    assert served.leader() == standby


@dataclass(frozen=True)
class Write:
    """One successful write of the operator's identity, from the API server's audit log."""

    replica: str  # "a", "b", "c", or the User-Agent when it names no replica
    verb: str
    resource: str
    name: str
    received: datetime
    completed: datetime
    timeout: float | None  # the request's server-side timeout (?timeout=), if it had one

    @property
    def lease(self) -> bool:
        return self.resource == "leases" and self.name == LEASE

    def __str__(self) -> str:
        return f"{self.received:%T.%f} {self.replica} {self.verb} {self.resource}/{self.name}"


def audited_writes(cluster: ControlPlane, since: datetime) -> list[Write]:
    """The operator identity's successful writes received since ``since``, oldest first."""

    def replica(agent: str) -> str:
        match = re.search(r"\(operator-(\w+)\)", agent)
        return match.group(1) if match else agent

    writes = []
    for event in cluster.audit_events():
        if event.get("stage") != "ResponseComplete":
            continue
        if (event.get("user") or {}).get("username") != OPERATOR_USER:
            continue
        if (event.get("responseStatus") or {}).get("code", 500) >= 400:
            continue  # refused (a 409 from a racing candidate, a 403): nothing was written
        received = datetime.fromisoformat(event["requestReceivedTimestamp"])
        if received < since:
            continue
        ref = event.get("objectRef") or {}
        timeout = re.search(r"[?&]timeout=([0-9.]+)s", event.get("requestURI", ""))
        writes.append(
            Write(
                replica(event.get("userAgent", "")),
                event["verb"],
                ref.get("resource", ""),
                ref.get("name", ""),
                received,
                datetime.fromisoformat(event["stageTimestamp"]),
                float(timeout.group(1)) if timeout else None,
            )
        )
    return sorted(writes, key=lambda w: w.received)


def terms(writes: list[Write]) -> list[list[Write]]:
    """The writes split into runs by one replica. Two replicas writing in the same window
    would show as runs alternating between them."""
    runs: list[list[Write]] = []
    for write in writes:
        if runs and runs[-1][-1].replica == write.replica:
            runs[-1].append(write)
        else:
            runs.append([write])
    return runs


def check_terms(runs: list[list[Write]]) -> None:
    """Each run after the first is a leadership term of client-go's rules (no graceful
    release happens inside the window checked, so every hand-over is a take-over):

    - it starts by taking the lease (no replica acts before it leads);
    - it starts at least one lease duration after the previous holder's last lease write
      (the candidate's own clock starts when it observes that write);
    - the previous term wrote nothing later than its last lease write + the renew deadline
      (the fence closes at the renew deadline counted from the renewal's start, which is
      before the API server received it; 0.5 s allows for the way to the API server);
    - and none of its writes could have been applied after the next term began (each
      carries the API server's ``timeout``: the leader's write window).
    """
    slack = timedelta(seconds=0.5)
    for before, after in itertools.pairwise(runs):
        listing = "\n".join(str(w) for w in before[-5:] + after[:5])
        assert after[0].lease, f"{after[0].replica} wrote before taking the lease:\n{listing}"
        renewed = [w for w in before if w.lease]
        assert renewed, f"{before[0].replica} wrote without holding the lease:\n{listing}"
        last_renewal = renewed[-1]
        assert (
            before[-1].received <= last_renewal.received + timedelta(seconds=RENEW_DEADLINE) + slack
        ), f"{before[0].replica} acted after its renew deadline:\n{listing}"
        assert (
            after[0].received >= last_renewal.completed + timedelta(seconds=LEASE_DURATION) - slack
        ), f"{after[0].replica} took over before the lease expired:\n{listing}"
        assert before[-1].completed < after[0].received, listing
        # Nor could any of its writes have landed later: the API server would have
        # abandoned each at received + timeout (the leader's write window).
        for write in before:
            if write.lease:
                continue
            assert write.timeout is not None, f"a write without a timeout: {write}"
            late = write.received + timedelta(seconds=write.timeout)
            assert late <= after[0].received + slack, f"{write} could land late:\n{listing}"


class Deleter:
    """Traffic for the leader: the Service is deleted every second, whoever restores it
    writes. Errors (while the API server is down) are ignored."""

    def __init__(self, api: Api, ns: str) -> None:
        self.api, self.ns = api, ns
        self.deleted = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="deleter", daemon=True)

    def _run(self) -> None:
        while not self.done.wait(1.0):
            try:
                if self.api.service_uid(self.ns) is not None:
                    self.api.delete_service(self.ns)
                    self.deleted += 1
            except httpx.HTTPError:
                pass

    def __enter__(self) -> Deleter:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()


def test_api_server_outage_one_writer_at_a_time(
    served: Pair, api: Api, crd_and_rbac: ControlPlane
) -> None:
    """kube-apiserver stopped for 20 s (longer than the renew deadline) and restarted while
    the Service is deleted every second. The leader cannot renew, so it must stop acting
    before its renew deadline (its /readyz says so; it exits, and is restarted as a kubelet
    would); after the restart the standby takes over and exactly one replica acts. The
    audit log then shows every write of the window by a named replica, in terms that never
    interleave."""
    cluster = crd_and_rbac
    assert cluster.audit_active(), "the session's control plane must write its audit log"
    leader = served.leader()
    since = datetime.now(UTC)
    exited: dict[str, int | None] = {}
    with Deleter(api, served.ns) as traffic:
        time.sleep(4)  # the leader restores the Service a few times
        # SIGTERM: the listener closes at once, the process may take seconds to exit.
        stopping = threading.Thread(target=cluster.stop_apiserver, name="stop-apiserver")
        stop_at = time.monotonic()
        stopping.start()
        stepped_down: float | None = None
        stepped_down_at: datetime | None = None
        while stopping.is_alive() or time.monotonic() < stop_at + OUTAGE_S:
            if stepped_down is None and served.role(leader) != "leader":
                stepped_down = time.monotonic() - stop_at
                stepped_down_at = datetime.now(UTC)
            for name, op in served.replicas.items():
                if not op.alive and op.proc is not None and name not in exited:
                    exited[name] = op.proc.returncode
            time.sleep(0.2)
        down_for = time.monotonic() - stop_at
        up_wall = datetime.now(UTC)
        took = cluster.start_apiserver()
        up_at = time.monotonic()
        acting = wait_for(
            lambda: next((n for n in served.replicas if served.role(n) == "leader"), None),
            timeout=60,
            interval=0.1,
            what="a leader after the restart",
        )
        takeover = time.monotonic() - up_at
        # The kubelet restarts an exited container, after its back-off (this one has been
        # killed twice already in this module: 20 s and more). Restarted at once, a replica
        # keeps its pod name and may renew "its" lease at once, which is sound (the old
        # process is gone) but leaves no hand-over to check; here it comes back after.
        for op in served.replicas.values():
            if not op.alive:
                op.start()
        assert served.leader(timeout=60) == acting
        time.sleep(6)  # the new leader restores the Service under traffic
    old, since_restore = api.service_uid(served.ns), time.monotonic()
    if old is not None:
        api.delete_service(served.ns)
    restored = api.wait_restored(served.ns, old, since_restore)
    writes = audited_writes(cluster, since)
    runs = terms(writes)
    down_after = float("nan") if stepped_down is None else stepped_down
    renewals = [w for w in runs[0] if w.lease] if runs else []
    since_renewal = float("nan")
    if stepped_down_at is not None and renewals:
        since_renewal = (stepped_down_at - renewals[-1].received).total_seconds()
    print(
        f"\nkube-apiserver down {down_for:.1f}s, ready again {took:.1f}s after its start; "
        f"leader {leader} stepped down {down_after:.1f}s after the stop, {since_renewal:.1f}s "
        f"after its last renewal reached the API server; exited: "
        f"{exited}; {acting} led "
        f"{takeover:.1f}s after the API was back; restore {restored:.1f}s; "
        f"{traffic.deleted} deletions; {len(writes)} audited writes in "
        f"{[(r[0].replica, len(r)) for r in runs]}"
    )
    for op in served.replicas.values():
        assert op.alive, op.log_tail()
    # The renew deadline counts from the last successful renewal (a renewal on a kept-alive
    # connection may still succeed just after SIGTERM); 1.5 s for this loop's polling on a
    # busy machine. That no write passed the deadline is checked exactly below (audit).
    assert since_renewal <= RENEW_DEADLINE + 1.5, served.replicas[leader].log_tail()
    assert exited == {leader: 1}  # client-go's OnStoppedLeading: exit, be restarted
    # The standby's clock restarts when it first reads a record it had not seen (the
    # leader's last renewals before the stop): up to a lease duration after the API is
    # back, plus a retry period and the API server's first seconds (RBAC answers 403).
    assert acting != leader and takeover <= LEASE_DURATION + 10
    assert {w.replica for w in writes} <= set(served.replicas), [str(w) for w in writes]
    assert runs and runs[0][0].replica == leader
    assert any(not w.lease for w in runs[0]), "the leader did not act before the outage"
    check_terms(runs)
    after = [w for w in writes if w.received > up_wall]
    assert {w.replica for w in after} == {acting}, [str(w) for w in after]
    assert any(w.resource == "services" for w in after), [str(w) for w in after]
    assert len(runs) == 2, [str(w) for w in writes]  # one hand-over, no interleaving


def _pod_counters(text: str) -> tuple[float, float]:
    return (
        metric(text, "mcp_operator_watch_events_total", kind="Pod"),
        metric(text, "mcp_operator_indexed_objects", kind="Pod"),
    )


def _quiet_pod_watch(leader: OperatorProcess, still: float = 5.0, timeout: float = 90.0) -> str:
    """The leader's /metrics once its pod watch has been still for ``still`` seconds: in the
    full suite, earlier modules' namespaces are still being torn down (their managed pods
    terminate and reach this operator, rightly), which must not count as noise here."""
    text = leader.metrics()
    since = time.monotonic()
    deadline = since + timeout
    while time.monotonic() < deadline:
        time.sleep(1)
        now = leader.metrics()
        if _pod_counters(now) != _pod_counters(text):
            text, since = now, time.monotonic()
        elif time.monotonic() - since >= still:
            return now
    raise AssertionError(f"the leader's pod watch never went still for {still}s")


def _unrelated_pods_trial(
    leader: OperatorProcess, kubectl: Kubectl, tmp_path: Path
) -> tuple[float, float]:
    """300 unlabelled pods and one labelled canary in a new namespace; returns the pod watch
    events and index growth the leader saw meanwhile."""
    noise = f"ha-noise-{secrets.token_hex(3)}"
    kubectl("create", "namespace", noise)
    try:
        before = _quiet_pod_watch(leader)
        pods = [
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"name": f"noise-{i}", "namespace": noise, "labels": {"app": "x"}},
                "spec": {
                    **UNSCHEDULABLE,
                    "containers": [{"name": "c", "image": "example.invalid/none"}],
                },
            }
            for i in range(NOISE_PODS)
        ]
        canary = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "canary",
                "namespace": noise,
                "labels": {
                    "app.kubernetes.io/managed-by": "mcp-operator",
                    "mcp-operator.dev/server": "canary",
                },
            },
            "spec": {**UNSCHEDULABLE, "containers": [{"name": "c", "image": "x.invalid/none"}]},
        }
        doc = tmp_path / f"{noise}.yaml"
        doc.write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "List", "items": pods}))
        kubectl("apply", "--validate=false", "-f", str(doc), timeout=240)
        kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(canary))
        indexed_before = _pod_counters(before)[1]

        def canary_seen() -> bool:
            return _pod_counters(leader.metrics())[1] > indexed_before

        wait_for(canary_seen, timeout=60, what="the labelled canary pod in the index")
        time.sleep(2)
        after = leader.metrics()
        events = _pod_counters(after)[0] - _pod_counters(before)[0]
        indexed = _pod_counters(after)[1] - indexed_before
        print(f"\n{NOISE_PODS} unrelated pods + 1 canary → {events:.0f} pod watch events")
        return events, indexed
    finally:
        kubectl("delete", "namespace", noise, "--wait=false", check=False)


def test_unrelated_pods_never_reach_the_operator(
    served: Pair, kubectl: Kubectl, tmp_path: Path
) -> None:
    """Hundreds of pods the operator does not manage: its pod watch and index stay flat.
    One labelled pod proves the counters do count. A second trial only if the first saw
    other managed pods move (earlier modules' teardown): 300 pods passing the filter would
    show in both."""
    leader = served.replicas[served.leader()]
    events, indexed = _unrelated_pods_trial(leader, kubectl, tmp_path)
    if not (indexed == 1 and 1 <= events < 10):
        events, indexed = _unrelated_pods_trial(leader, kubectl, tmp_path)
    assert indexed == 1
    assert 1 <= events < 10


def test_a_deleted_servers_metric_series_go_with_it(served: Pair, kubectl: Kubectl) -> None:
    """Metric hygiene on the real control plane: once a server is deleted, the leader's
    /metrics has no series labelled with it (no ghosts on dashboards, no growth with churn)."""
    leader = served.replicas[served.leader()]
    manifest = server_manifest(
        "gone",
        served.ns,
        primary={"replicas": 1},
        backup={"enabled": False},
        failover={"enabled": False},
        pod=UNSCHEDULABLE,
    )
    kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump(manifest))
    wait_condition(kubectl, served.ns, "gone", "Reconciled", "True", timeout=60)

    def series() -> list[str]:
        labels = (f'namespace="{served.ns}"', 'server="gone"')
        return [
            line
            for line in leader.metrics().splitlines()
            if not line.startswith("#") and all(label in line for label in labels)
        ]

    present = wait_for(series, timeout=30, what="the server's series")
    kubectl("delete", "mcpserver", "gone", "-n", served.ns, "--wait=false")
    wait_for(lambda: series() == [], timeout=30, what="the deleted server's series to go")
    print(f"\n{len(present)} series of the deleted server removed")
    assert any("mcp_operator_reconcile_total" in line for line in present)


def test_restart_reapplies_nothing_that_already_matches(served: Pair) -> None:
    """Both replicas restarted: the new leader reconciles the server from the cluster and
    finds every child as rendered -- zero applies (the child index is listed before any
    worker starts, so a restart of an operator with 1,000 servers is not 7,000 writes)."""
    for op in served.replicas.values():
        op.stop()
    for name in served.replicas:
        served.restart(name)
    leader = served.replicas[served.leader()]
    wait_for(
        lambda: metric(leader.metrics(), "mcp_operator_reconcile_total", server="web") >= 1,
        timeout=30,
        what="the new leader to reconcile the server",
    )
    time.sleep(2)  # a late re-apply (after a child event) would show up here
    for op in served.replicas.values():
        assert metric(op.metrics(), "mcp_operator_applies_total") == 0, op.log_tail()


def test_server_deleted_while_stopped_is_not_resurrected(served: Pair, kubectl: Kubectl) -> None:
    for op in served.replicas.values():
        op.stop()
    kubectl("delete", "mcpserver", "web", "-n", served.ns, "--wait=false")
    for name in served.replicas:
        served.restart(name)
    leader = served.replicas[served.leader()]

    def children() -> list[Any]:
        items = get_json(
            kubectl,
            "deployments,services,serviceaccounts",
            "-n",
            served.ns,
            "-l",
            "mcp-operator.dev/server=web",
        )["items"]
        return list(items)

    wait_for(lambda: not children(), timeout=60, what="the garbage collector to finish")
    time.sleep(10)  # long enough for a resurrecting worker to re-apply
    assert children() == []
    assert get_json(kubectl, "mcpservers", "-n", served.ns)["items"] == []
    assert metric(leader.metrics(), "mcp_operator_reconcile_total", server="web") == 0


def test_a_standby_answers_healthz_for_5_minutes(pair: Pair) -> None:
    """The module's last test: the watched standby was started first and polled every second
    through all the others (a watch timeout of 300 s and the API-server outage included);
    only what is left of the 5 minutes is waited for here."""
    watched = pair.watched
    remaining = watched.started + STANDBY_FOR_S + 1 - time.monotonic()
    if remaining > 0:
        time.sleep(remaining)
    watched.done.set()
    watched.thread.join()
    op = watched.op
    assert op.alive and op.proc is not None and op.proc.pid == watched.pid, op.log_tail()
    span = watched.polls[-1][0] - watched.polls[0][0]
    failed = [at - watched.started for at, ok, _ in watched.polls if not ok]
    roles = {role for _, ok, role in watched.polls if ok}
    print(
        f"\nstandby polled {len(watched.polls)} times over {span:.0f}s (waited "
        f"{max(remaining, 0):.0f}s here): {len(failed)} failed at {[round(t) for t in failed]}"
    )
    assert span >= STANDBY_FOR_S - 1
    assert len(watched.polls) >= 0.8 * STANDBY_FOR_S  # the poller itself kept up
    assert watched.longest_failure() < 20.0, failed  # what a kubelet would restart on
    assert roles == {"standby"}, roles
    assert "Traceback" not in op.log_tail(100_000)
