"""Failover latency: the operator's MCP-level path against the kubelet readiness path.

    .venv/bin/python bench/failover.py [--trials 20] [--kubelet-trials N] [--keep DIR]
                                       [--scenarios defaults,fast,kubelet]

Starts its own control plane (etcd + kube-apiserver + kcm + kube-scheduler) in a temp dir,
the node agent (kubelet stand-in: pods are local processes on 10.244.x.y) and the operator
(``mcp-operator run`` as the restricted identity), then runs, one after the other:

* ``defaults``: an MCPServer with the default health settings (interval 2 s, timeout 1 s,
  failureThreshold 3, successThreshold 2), one primary pod and a hot backup;
* ``fast``: the same with interval 1 s, failureThreshold 2, successThreshold 1.

Each trial waits for the steady state (primary active, both breakers closed), sleeps a
random fraction of the probe interval (so the fault lands at a random point of the probe
cycle), then SIGKILLs the primary pod's process and keeps killing it every time the agent
restarts it (a single kill is healed by the restart in ~1 s, before any failover). Measured
from that first SIGKILL, by polling the API every 20 ms:

* ``detect``: the MCPServer status shows the primary breaker open or a new failover intent;
* ``switch``: the stable Service's selector names the backup tier;
* ``endpoints``: the stable Service's ready EndpointSlice endpoints are exactly the backup
  pod's IP (what a client resolving the Service reaches);
* ``intent@op`` / ``done@op``: the ``startedAt`` / ``completedAt`` stamps the operator wrote
  in ``status.failover`` (its clock is this host's), i.e. the decision and the recorded end,
  finer than the 20 ms polling (detect and switch are usually < 0.3 s apart).

Then the killing stops, the primary comes back and the operator fails back (automatic,
after the cooldown) before the next trial. To keep the turnaround short, both objects use
``recoveryTimeoutSeconds: 2``, ``cooldownSeconds: 3`` and a lax flap guard; none of these
enter the measured path (they only act after the switch).

``kubelet`` is the baseline without the operator: a plain Deployment + Service whose pods
have a readiness probe ``httpGet /healthz`` every 10 s, failureThreshold 3, timeout 1 s
(the node agent runs real probes). A pod's process is hung with SIGSTOP (a kill would be
seen at once as a dead container, a hang is what only a probe finds) at a random moment,
and the time until its IP leaves the ready endpoints of the Service is measured. Five pods
are used at a time, each stopped at its own random offset, so it runs in a background
thread beside the MCP scenarios (``--serial`` runs it afterwards instead).

Prints p50/p95/max per scenario and measure, and the raw samples as JSON (``--json``).
The agent's crash back-off is 0.5 s base / 2 s cap (the restart speed after the killing
stops; it is not on the measured path).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from mcp_devcluster.controlplane import ControlPlane, tools_bin_dir
from mcp_devcluster.faults import kept_dead, pod_pids
from mcp_devcluster.nodeagent.ipam import random_pod_cidr
from mcp_devcluster.stack import (
    EXAMPLE_IMAGE,
    OperatorProcess,
    install_crd,
    install_operator_rbac,
    server_manifest,
)
from mcp_operator.api.models import API_VERSION

Obj = dict[str, Any]
NS = "bench"
NODE = "bench-node"
TIER = "mcp-operator.dev/tier"
SERVER = "mcp-operator.dev/server"
POLL = 0.02
MEASURES = ("detect", "switch", "endpoints", "intent@op", "done@op")

SCENARIOS: dict[str, Obj] = {
    "defaults": {"health": {"recoveryTimeoutSeconds": 2}, "interval": 2.0},
    "fast": {
        "health": {
            "intervalSeconds": 1,
            "failureThreshold": 2,
            "successThreshold": 1,
            "recoveryTimeoutSeconds": 2,
        },
        "interval": 1.0,
    },
}


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


# -- processes -----------------------------------------------------------------------------


def signal_pids(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


# -- the stack -----------------------------------------------------------------------------


class Stack:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.cp = ControlPlane(directory / "cluster", die_with_parent=True)
        self.kubectl_bin = str(tools_bin_dir() / "kubectl")
        self.agent: subprocess.Popen[bytes] | None = None
        self.operator: OperatorProcess | None = None

    def up(self) -> None:
        missing = self.cp.binaries_missing()
        if missing:
            raise SystemExit(f"missing binaries: {missing} (hack/build-k8s-module.sh)")
        t0 = time.monotonic()
        self.cp.up(timeout=120)
        log(f"control plane up in {time.monotonic() - t0:.1f}s at {self.cp.dir}")
        install_crd(self.kubectl_bin, self.cp.admin_kubeconfig)
        install_operator_rbac(self.kubectl_bin, self.cp.admin_kubeconfig)
        self.start_agent()
        self.operator = OperatorProcess(self.cp.operator_kubeconfig, self.dir / "operator.log")
        self.operator.start().wait_live(timeout=60)
        log("operator live")
        self.kubectl("create", "namespace", NS)
        deadline = time.monotonic() + 30
        while self.kubectl("get", "sa", "default", "-n", NS, check=False).returncode:
            if time.monotonic() > deadline:
                raise RuntimeError("no default ServiceAccount")
            time.sleep(0.2)

    def start_agent(self) -> None:
        state = self.dir / "agent"
        state.mkdir(parents=True, exist_ok=True)
        log_path = state / "agent.log"
        argv = [
            sys.executable,
            "-m",
            "mcp_devcluster.nodeagent",
            "--kubeconfig",
            str(self.cp.admin_kubeconfig),
            "--node-name",
            NODE,
            "--state-dir",
            str(state),
            "--backoff-base",
            "0.5",
            "--backoff-max",
            "2",
            "--pod-cidr",
            random_pod_cidr(),
        ]
        with open(log_path, "ab") as out:
            self.agent = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + 60
        while f"nodeagent {NODE} ready" not in log_path.read_text(errors="replace"):
            if self.agent.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"node agent did not start; see {log_path}")
            time.sleep(0.1)
        log(f"node agent ready (pid {self.agent.pid})")

    def down(self) -> None:
        if self.operator is not None:
            self.operator.stop()
        if self.agent is not None and self.agent.poll() is None:
            self.agent.send_signal(signal.SIGTERM)
            try:
                self.agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.agent.kill()
                self.agent.wait()
        self.cp.down()

    @property
    def agent_pid(self) -> int:
        assert self.agent is not None
        return self.agent.pid

    def kubectl(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.kubectl_bin, f"--kubeconfig={self.cp.admin_kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if check and result.returncode:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def apply(self, *objs: Obj) -> None:
        self.kubectl("apply", "--validate=false", "-f", "-", input=yaml.safe_dump_all(objs))


class Api:
    """Thin polling reads with the admin token (one client per thread)."""

    def __init__(self, cp: ControlPlane) -> None:
        self.http = cp.client(timeout=10)

    def get(self, path: str) -> Obj | None:
        resp = self.http.get(path)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return dict(resp.json())

    def server(self, name: str) -> Obj:
        obj = self.get(f"/apis/{API_VERSION}/namespaces/{NS}/mcpservers/{name}")
        assert obj is not None
        return obj

    def selector_tier(self, service: str) -> str | None:
        svc = self.get(f"/api/v1/namespaces/{NS}/services/{service}")
        return None if svc is None else (svc["spec"].get("selector") or {}).get(TIER)

    def ready_ips(self, service: str) -> set[str]:
        slices = self.get(
            f"/apis/discovery.k8s.io/v1beta1/namespaces/{NS}/endpointslices"
            f"?labelSelector=kubernetes.io/service-name={service}"
        )
        return {
            address
            for s in (slices or {}).get("items") or []
            for ep in s.get("endpoints") or []
            if (ep.get("conditions") or {}).get("ready") is not False
            for address in ep.get("addresses") or []
        }

    def pod_ips(self, selector: str) -> dict[str, str]:
        pods = self.get(f"/api/v1/namespaces/{NS}/pods?labelSelector={selector}") or {}
        return {
            p["metadata"]["name"]: p["status"]["podIP"]
            for p in pods.get("items") or []
            if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
        }


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = POLL) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except (httpx.HTTPError, KeyError, TypeError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    raise TimeoutError(f"{what}: not within {timeout}s (last={last!r})")


# -- the MCP path --------------------------------------------------------------------------


def bench_server(name: str, health: Obj) -> Obj:
    return server_manifest(
        name,
        NS,
        primary={"replicas": 1},
        health=health,
        failover={"cooldownSeconds": 3, "maxFailovers": 100, "windowSeconds": 60},
    )


def steady(api: Api, name: str) -> Obj | None:
    obj = api.server(name)
    status = obj.get("status") or {}
    tiers = status.get("tiers") or {}
    fo = status.get("failover") or {}
    ok = (
        (status.get("activeTier") or "primary") == "primary"
        and fo.get("phase") not in ("Intent", "ScalingBackup")
        and all(
            (tiers.get(t) or {}).get("healthy") is True
            and ((tiers.get(t) or {}).get("breaker") or {}).get("phase") == "closed"
            for t in ("primary", "backup")
        )
        and api.selector_tier(name) == "primary"
    )
    return obj if ok else None


def mcp_trial(stack: Stack, api: Api, name: str, interval: float) -> dict[str, float]:
    wait(lambda: steady(api, name), 180, f"{name} steady on primary", interval=0.2)
    before = api.server(name)["status"]["failover"]
    primary = set(api.pod_ips(f"{SERVER}={name},{TIER}=primary").values())
    backup = set(api.pod_ips(f"{SERVER}={name},{TIER}=backup").values())
    time.sleep(random.uniform(0, interval))  # a random point of the probe cycle
    sample: dict[str, float] = {}
    with kept_dead(stack.agent_pid, primary, poll=POLL) as fault:
        t0 = time.time() - (time.monotonic() - fault["first_kill"])  # wall time of the kill
        deadline = time.time() + 60
        while time.time() < deadline and len(sample) < 3:
            now = time.time()
            if "detect" not in sample:
                status = api.server(name)["status"]
                fo = status.get("failover") or {}
                breaker = status["tiers"]["primary"]["breaker"]["phase"]
                if breaker != "closed" or fo.get("startedAt") != before.get("startedAt"):
                    sample["detect"] = now - t0
            if "switch" not in sample and api.selector_tier(name) == "backup":
                sample["switch"] = now - t0
            if "endpoints" not in sample and "switch" in sample and api.ready_ips(name) == backup:
                sample["endpoints"] = now - t0
            time.sleep(POLL)
        if len(sample) < 3:
            raise RuntimeError(f"{name}: trial incomplete after 60s: {sample}")
        fo = wait(
            lambda: (f := api.server(name)["status"]["failover"]).get("phase") == "Switched" and f,
            10,
            f"{name} switch recorded",
        )
    # The operator's own stamps (same host clock): when it recorded the intent and the end.
    for key, field in (("intent@op", "startedAt"), ("done@op", "completedAt")):
        sample[key] = parse_time(fo[field]) - t0
    # Fail back before the next trial (the primary restarts now that it is left alone).
    wait(lambda: steady(api, name), 180, f"{name} failed back", interval=0.2)
    return sample


def run_mcp(stack: Stack, scenario: str, trials: int, results: dict[str, list[Obj]]) -> None:
    cfg = SCENARIOS[scenario]
    name = f"mcp-{scenario}"
    stack.apply(bench_server(name, cfg["health"]))
    api = Api(stack.cp)
    log(f"{scenario}: waiting for {name} to be ready")
    wait(lambda: steady(api, name), 120, f"{name} ready", interval=0.5)
    for i in range(trials):
        sample = mcp_trial(stack, api, name, cfg["interval"])
        results.setdefault(scenario, []).append(sample)
        log(f"{scenario} trial {i + 1}/{trials}: " + fmt_sample(sample))
    stack.kubectl("delete", "mcps", name, "-n", NS, "--wait=false")


# -- the kubelet path ----------------------------------------------------------------------


def plain_manifests(replicas: int) -> list[Obj]:
    labels = {"app": "plain"}
    probe = {
        "httpGet": {"path": "/healthz", "port": 8080},
        "periodSeconds": 10,
        "failureThreshold": 3,
        "timeoutSeconds": 1,
    }
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "plain", "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": EXAMPLE_IMAGE,
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": probe,
                        }
                    ]
                },
            },
        },
    }
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "plain", "namespace": NS},
        "spec": {"selector": labels, "ports": [{"port": 8080, "targetPort": 8080}]},
    }
    return [deployment, service]


def run_kubelet(stack: Stack, trials: int, results: dict[str, list[Obj]], pods: int = 5) -> None:
    stack.apply(*plain_manifests(pods))
    api = Api(stack.cp)
    while len(results.get("kubelet", [])) < trials:
        ips = wait(
            lambda: (
                (found := api.pod_ips("app=plain"))
                and len(found) == pods
                and set(found.values()) <= api.ready_ips("plain")
                and found
            ),
            180,
            "plain pods ready",
            interval=0.5,
        )
        batch = min(pods, trials - len(results.get("kubelet", [])))
        chosen = sorted(ips.values())[:batch]
        offsets = {ip: random.uniform(0, 10) for ip in chosen}  # random probe phase each
        started = time.time()
        stopped: dict[str, float] = {}
        left: dict[str, float] = {}
        pids: dict[str, list[int]] = {}
        try:
            while len(left) < len(chosen) and time.time() - started < 90:
                now = time.time()
                for ip in chosen:
                    if ip not in stopped and now - started >= offsets[ip]:
                        pids[ip] = pod_pids(stack.agent_pid, {ip})
                        signal_pids(pids[ip], signal.SIGSTOP)
                        stopped[ip] = time.time()
                ready = api.ready_ips("plain")
                now = time.time()
                for ip in stopped:
                    if ip not in left and ip not in ready:
                        left[ip] = now - stopped[ip]
                time.sleep(POLL)
        finally:
            for ip_pids in pids.values():
                signal_pids(ip_pids, signal.SIGCONT)
        for ip in chosen:
            if ip not in left:
                raise RuntimeError(f"kubelet path: {ip} still ready 90 s after SIGSTOP")
            results.setdefault("kubelet", []).append({"endpoints": left[ip]})
        log(
            f"kubelet batch: {len(chosen)} pods left the endpoints after "
            + ", ".join(f"{left[ip]:.1f}s" for ip in chosen)
            + f" ({len(results['kubelet'])}/{trials})"
        )
    stack.kubectl("delete", "deployment,service", "plain", "-n", NS, "--wait=false")


# -- report --------------------------------------------------------------------------------


def parse_time(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def fmt_sample(sample: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}s" for k, v in sample.items())


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (no interpolation: a p95 of 20 samples is the 19th)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


def table(results: dict[str, list[Obj]]) -> str:
    targets = {"defaults": 7.0, "fast": 3.0}
    rows = [
        "| scenario | measure | n | p50 s | p95 s | max s | mean s | target p50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for scenario, samples in results.items():
        measures = [m for m in MEASURES if any(m in s for s in samples)]
        for measure in measures:
            values = [s[measure] for s in samples if measure in s]
            target = ""
            if scenario in targets and measure == "switch":
                ok = statistics.median(values) <= targets[scenario]
                target = f"≤ {targets[scenario]:.0f} s: {'met' if ok else 'MISSED'}"
            rows.append(
                f"| {scenario} | {measure} | {len(values)} | {percentile(values, 50):.2f} | "
                f"{percentile(values, 95):.2f} | {max(values):.2f} | "
                f"{statistics.fmean(values):.2f} | {target} |"
            )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=20, help="trials per MCP scenario")
    parser.add_argument("--kubelet-trials", type=int, default=None, help="default: --trials")
    parser.add_argument("--scenarios", default="defaults,fast,kubelet")
    parser.add_argument("--serial", action="store_true", help="kubelet path after, not beside")
    parser.add_argument("--keep", type=Path, help="use this directory and leave it (logs)")
    parser.add_argument("--json", type=Path, help="write the raw samples here")
    args = parser.parse_args()
    scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(scenarios) - {*SCENARIOS, "kubelet"}
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    kubelet_trials = args.kubelet_trials if args.kubelet_trials is not None else args.trials

    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-failover-"))
    directory.mkdir(parents=True, exist_ok=True)
    stack = Stack(directory)
    results: dict[str, list[Obj]] = {}
    errors: list[str] = []
    started = time.monotonic()
    try:
        stack.up()
        background: threading.Thread | None = None

        def kubelet() -> None:
            try:
                run_kubelet(stack, kubelet_trials, results)
            except Exception as exc:  # reported with the table
                errors.append(f"kubelet: {exc!r}")

        if "kubelet" in scenarios and not args.serial:
            background = threading.Thread(target=kubelet, daemon=True)
            background.start()
        for scenario in scenarios:
            if scenario in SCENARIOS:
                try:
                    run_mcp(stack, scenario, args.trials, results)
                except Exception as exc:
                    errors.append(f"{scenario}: {exc!r}")
                    log(f"{scenario} FAILED: {exc!r}")
        if background is not None:
            background.join()
        elif "kubelet" in scenarios:
            kubelet()
    except KeyboardInterrupt:
        errors.append("interrupted")
    finally:
        if stack.operator is not None:
            (directory / "operator.tail.log").write_text(stack.operator.log_tail(400))
        stack.down()
    took = time.monotonic() - started
    order = [s for s in (*SCENARIOS, "kubelet") if s in results]
    ordered = {s: results[s] for s in order}
    print()
    print(
        f"failover bench ({took / 60:.1f} min; fault: MCP = SIGKILL kept dead, kubelet = "
        "SIGSTOP; times from the fault):"
    )
    print(table(ordered) if ordered else "(no samples)")
    for error in errors:
        print(f"ERROR {error}")
    if args.json:
        args.json.write_text(json.dumps(ordered, indent=1))
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    else:
        print(f"logs in {directory}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
