"""Client traffic through the stable Service while things happen: what a user notices.

    .venv/bin/python bench/traffic.py [--scenarios a,b,...] [--keep DIR] [--out FILE]

Starts its own control plane, the node agent (whose kube-proxy stand-in gives each Service a
loopback address that forwards new connections to *ready* EndpointSlice endpoints only) and
the operator, then runs each scenario on a fresh MCPServer (example image, hot backup):
a client (``mcp_devcluster.traffic``: raw JSON-RPC ``tools/call`` POSTs, not the operator's
code, a new connection per call) calls ``add`` every 50 ms through the Service from 2 s
before the event until the scenario has settled, and the table gives per scenario:
requests, failed requests by kind (``refused`` = refused/reset before any reply: no ready
endpoint or a dead backend; ``timeout`` = no reply in 2 s; ``error`` = a reply that is not
the result), how many connections the proxy reset for lack of a ready endpoint (from the
agent's log: the readiness gates' cost, where ``refused`` also counts dying backends) and
the error window (first failed call's start to last failed call's end).

Scenarios (``fast`` health = interval 1 s x failureThreshold 2, successThreshold 1):

* ``kill-fast`` / ``kill-default``: the primary (1 pod) is SIGKILLed and kept dead until the
  Service switched to the backup, plus 2 s; then the primary returns and the operator fails
  back automatically (cooldown 3 s): both switches are in the window;
* ``freeze-sub``: the primary (1 pod, default health: 2 s x 3) is SIGSTOPped for 3 s, less
  than failureThreshold rounds. Its own calls time out (counted as ``timeout``); any
  ``refused`` is the gate's doing;
* ``port``: ``spec.port`` 8080 -> 8081 on a serving server (2 primary pods), until the
  rollout is done + 3 s;
* ``image``: the image tag changes (a rollout), until done + 3 s;
* ``scale``: primary replicas 2 -> 4 -> 2;
* ``operator-restart``: the operator is SIGKILLed and started again, 10 s;
* ``token-deleted``: the server requires a bearer token, the probe has it from a Secret,
  the client holds it; the Secret is deleted, 70 s (the operator caches the token 60 s);
* ``auth-401``: the server requires a bearer token, the probe has none (401 with a
  ``WWW-Authenticate`` challenge); the client holds the token; 10 s once the Service has a
  ready endpoint (or 30 s after the pods run, if it never gets one).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from failover import NS, SERVER, TIER, Api, Stack, log, wait  # same directory (bench/)

from mcp_devcluster.faults import hung, kept_dead
from mcp_devcluster.stack import EXAMPLE_IMAGE, server_manifest
from mcp_devcluster.traffic import (
    KINDS,
    Summary,
    ToolTraffic,
    no_endpoint_resets,
    service_address,
)

Obj = dict[str, Any]
FAST = {"intervalSeconds": 1, "failureThreshold": 2, "successThreshold": 1}
TOKEN = "s3cr3t-bench-token"
LEAD = 2.0  # traffic before the event


@dataclass
class Run:
    stack: Stack
    api: Api
    name: str

    def pod_ips(self, tier: str) -> set[str]:
        return set(self.api.pod_ips(f"{SERVER}={self.name},{TIER}={tier}").values())

    def status(self) -> Obj:
        return dict(self.api.server(self.name).get("status") or {})

    def patch(self, spec: Obj) -> None:
        self.stack.kubectl(
            "patch", "mcpserver", self.name, "-n", NS, "--type=merge",
            "-p", json.dumps({"spec": spec}),
        )  # fmt: skip

    def url(self) -> Callable[[], str | None]:
        """The Service's proxy address (written by the node agent), re-read on each call
        so the client follows a changed Service port."""
        path = f"/api/v1/namespaces/{NS}/services/{self.name}"
        own = Api(self.stack.cp)  # its own HTTP client: it runs on the traffic thread

        def resolve() -> str | None:
            return service_address(own.get(path) or {})

        wait(resolve, 60, "proxy address")
        return resolve

    def rolled_out(self, port: int | None = None, image: str | None = None) -> bool:
        """Every pod of the server runs the wanted port/image, none terminating, and the
        Service's ready endpoints are exactly the active tier's pods."""
        pods = (
            self.api.get(f"/api/v1/namespaces/{NS}/pods?labelSelector={SERVER}={self.name}") or {}
        )
        items = pods.get("items") or []
        for pod in items:
            if pod["metadata"].get("deletionTimestamp"):
                return False
            container = pod["spec"]["containers"][0]
            if image and container["image"] != image:
                return False
            if port and all(p.get("containerPort") != port for p in container.get("ports") or []):
                return False
        active = self.status().get("activeTier") or "primary"
        return bool(items) and self.api.ready_ips(self.name) == self.pod_ips(active)


def ready(run: Run) -> bool:
    status = run.status()
    return any(
        c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or []
    ) and all((status.get("tiers") or {}).get(t, {}).get("healthy") for t in ("primary", "backup"))


def server(name: str, **spec: Any) -> Obj:
    failover = {"cooldownSeconds": 3, "maxFailovers": 100, "windowSeconds": 60}
    return server_manifest(name, NS, failover=failover, **spec)


# -- scenarios: each returns a note; traffic runs around it -------------------------------


def kill(run: Run) -> str:
    primary = run.pod_ips("primary")
    with kept_dead(run.stack.agent_pid, primary) as dead:
        wait(lambda: run.api.selector_tier(run.name) == "backup", 60, "switch to backup")
        switched = time.monotonic() - dead["first_kill"]
        time.sleep(2)
    wait(lambda: run.api.selector_tier(run.name) == "primary", 90, "failback", interval=0.1)
    back = time.monotonic() - dead["first_kill"]
    wait(lambda: run.rolled_out(), 30, "primary endpoints")
    time.sleep(2)
    return f"switched {switched:.1f}s after the kill, failed back at {back:.1f}s"


def freeze(run: Run) -> str:
    with hung(run.stack.agent_pid, run.pod_ips("primary")):
        time.sleep(3)
    time.sleep(5)
    fo = run.status().get("failover") or {}
    return f"frozen 3s (< 3 rounds of 2s); failovers={fo.get('count', 0)}"


def port_change(run: Run) -> str:
    # The example server listens on $PORT: a user changes both, in one edit.
    run.patch({"port": 8081, "env": [{"name": "PORT", "value": "8081"}]})
    started = time.monotonic()
    wait(lambda: run.rolled_out(port=8081), 120, "rollout to port 8081", interval=0.2)
    took = time.monotonic() - started
    time.sleep(3)
    return f"rollout done in {took:.1f}s"


def image_change(run: Run) -> str:
    image = EXAMPLE_IMAGE.rsplit(":", 1)[0] + ":rollout"
    run.patch({"image": image})
    started = time.monotonic()
    wait(lambda: run.rolled_out(image=image), 120, "rollout to the new image", interval=0.2)
    took = time.monotonic() - started
    time.sleep(3)
    return f"rollout done in {took:.1f}s"


def scale(run: Run) -> str:
    run.patch({"primary": {"replicas": 4}})
    wait(lambda: len(run.api.ready_ips(run.name)) == 4, 90, "4 ready endpoints", interval=0.2)
    time.sleep(2)
    run.patch({"primary": {"replicas": 2}})
    wait(lambda: len(run.pod_ips("primary")) == 2 and run.rolled_out(), 90, "back to 2")
    time.sleep(3)
    return "2 -> 4 -> 2 primary pods"


def operator_restart(run: Run) -> str:
    assert run.stack.operator is not None
    run.stack.operator.kill9()
    time.sleep(1)
    run.stack.operator.start().wait_live(timeout=60)
    time.sleep(10)
    return "SIGKILL, restart, 10s"


def token_deleted(run: Run) -> str:
    run.stack.kubectl("delete", "secret", f"{run.name}-probe", "-n", NS)
    time.sleep(70)
    reasons = [
        f"{c['type']}={c['status']}({c['reason']})"
        for c in run.status().get("conditions") or []
        if c["type"] in ("Ready", "Misconfigured")
    ]
    return "Secret deleted, 70s; " + " ".join(reasons)


def auth_401(run: Run) -> str:
    time.sleep(10)
    conditions = [
        f"{c['type']}={c['status']}({c['reason']})"
        for c in run.status().get("conditions") or []
        if c["type"] in ("Ready", "Misconfigured")
    ]
    return "probe without token, client with; " + " ".join(conditions)


@dataclass(frozen=True)
class Scenario:
    spec: Obj
    act: Callable[[Run], str]
    wait_ready: bool = True
    token: bool = False
    secret: bool = False


TOKEN_ENV = [{"name": "EXAMPLE_REQUIRE_TOKEN", "value": TOKEN}]
SCENARIOS: dict[str, Scenario] = {
    "kill-fast": Scenario({"primary": {"replicas": 1}, "health": FAST}, kill),
    "kill-default": Scenario({"primary": {"replicas": 1}}, kill),
    "freeze-sub": Scenario({"primary": {"replicas": 1}}, freeze),
    "port": Scenario({}, port_change),
    "image": Scenario({}, image_change),
    "scale": Scenario({}, scale),
    "operator-restart": Scenario({}, operator_restart),
    "token-deleted": Scenario({"env": TOKEN_ENV}, token_deleted, token=True, secret=True),
    "auth-401": Scenario({"env": TOKEN_ENV}, auth_401, wait_ready=False, token=True),
}


def no_endpoint(stack: Stack, name: str) -> int:
    log_path = stack.dir / "agent" / "agent.log"
    return no_endpoint_resets(log_path.read_text(errors="replace"), NS, name)


def run_scenario(stack: Stack, api: Api, key: str, scenario: Scenario) -> tuple[Summary, str]:
    name = f"t-{key}"
    spec = {k: (dict(v) if isinstance(v, dict) else v) for k, v in scenario.spec.items()}
    if scenario.secret:
        stack.kubectl(
            "create", "secret", "generic", f"{name}-probe", "-n", NS,
            f"--from-literal=token={TOKEN}",
        )  # fmt: skip
        spec["health"] = {"bearerTokenSecretRef": {"name": f"{name}-probe", "key": "token"}}
    stack.apply(server(name, **spec))
    run = Run(stack, api, name)
    try:
        if scenario.wait_ready:
            wait(lambda: ready(run), 120, f"{name} Ready", interval=0.2)
            wait(lambda: run.rolled_out(), 30, f"{name} endpoints", interval=0.2)
        else:  # e.g. auth-401: measure once the pods run and had time to turn ready
            wait(lambda: len(run.pod_ips("primary")) == 2, 60, f"{name} pods", interval=0.2)
            with contextlib.suppress(TimeoutError):
                wait(lambda: run.api.ready_ips(name), 30, "a ready endpoint", interval=0.2)
        caller = ToolTraffic(run.url(), token=TOKEN if scenario.token else None).start()
        try:
            time.sleep(LEAD)
            note = scenario.act(run)
        except Exception as exc:
            note = f"DID NOT SETTLE: {exc}"
        finally:
            summary = caller.stop()
        time.sleep(0.5)  # the agent's log is flushed per line; let the last ones land
        summary.no_endpoint = no_endpoint(stack, name)
        return summary, note
    finally:
        stack.kubectl("delete", "mcpserver", name, "-n", NS, "--wait=false", check=False)


def table(rows: dict[str, tuple[Summary, str]]) -> str:
    head = (
        "| scenario | requests | failed | "
        + " | ".join(KINDS)
        + " | of which no ready endpoint | error window | notes |"
    )
    lines = [head, "|" + "---|" * (7 + len(KINDS) - 1)]
    for key, (s, note) in rows.items():
        kinds = " | ".join(str(s.failed.get(k, 0)) for k in KINDS)
        lines.append(
            f"| {key} | {s.requests} | {s.failures} | {kinds} | {s.no_endpoint} | "
            f"{s.window:.2f} s | {note} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--keep", type=Path, help="use this directory and leave it (logs)")
    parser.add_argument("--out", type=Path, help="also write the table here")
    args = parser.parse_args()
    keys = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(keys) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenarios {sorted(unknown)}")
    directory = args.keep or Path(tempfile.mkdtemp(prefix="bench-traffic-"))
    directory.mkdir(parents=True, exist_ok=True)
    stack = Stack(directory)
    rows: dict[str, tuple[Summary, str]] = {}
    started = time.monotonic()
    try:
        stack.up()
        api = Api(stack.cp)
        for key in keys:
            log(f"scenario {key}")
            try:
                rows[key] = run_scenario(stack, api, key, SCENARIOS[key])
            except Exception as exc:
                rows[key] = (Summary(0), f"FAILED: {exc!r}")
            log(f"  {rows[key][0].line()} -- {rows[key][1]}")
            for detail, count in rows[key][0].details.most_common(3):
                log(f"    {count} x {detail}")
    except KeyboardInterrupt:
        log("interrupted")
    finally:
        stack.down()
    took = (time.monotonic() - started) / 60
    text = (
        f"traffic bench ({took:.1f} min; a call every 50 ms through the Service's proxy, "
        f"new connection per call, 2 s timeout)\n\n{table(rows)}\n"
    )
    print("\n" + text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text)
    if not args.keep:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
