"""Signing keys on the real control plane with the node agent: JWKS in the pods, tokens
minted with ``mcp-operator token`` accepted by the example server (its reference
verifier), compressed rotations with continuous verification, revoke-kid, tampering, and
no key material or token in anything the operator produced.

Compressed schedule (the API allows it; production uses the defaults): tokenTTL 10s,
leeway 2s, publishAhead 3s, every 15s — a rotation every ~16 s.
"""

from __future__ import annotations

import base64
import contextlib
import io
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import jwt
import pytest

from mcp_devcluster.controlplane import ControlPlane
from mcp_devcluster.stack import OperatorProcess, condition, server_manifest
from mcp_operator import cli
from tests.e2e.conftest import NodeAgentProcess, get_json, wait_for
from tests.e2e.ops import Kubectl, apply, get_server, wait_condition

pytestmark = pytest.mark.e2e

NAME = "secure"
AUTH = {
    "enabled": True,
    "tokenTTL": "10s",
    "leeway": "2s",
    "rotation": {"every": "15s", "publishAhead": "3s"},
}
INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "e2e", "version": "1"},
    },
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream"}


def mint(cluster: ControlPlane, ns: str, *extra: str) -> str:
    """``mcp-operator token`` in-process (the same code path as the command)."""
    out = io.StringIO()
    argv = ["token", "--server", NAME, "-n", ns, "--kubeconfig", str(cluster.admin_kubeconfig)]
    with contextlib.redirect_stdout(out):
        code = cli.main([*argv, "--subject", "alice", *extra])
    assert code == 0
    return out.getvalue().strip()


def pod_ips(kubectl: Kubectl, ns: str) -> list[str]:
    pods = get_json(kubectl, "pods", "-n", ns, "-l", f"mcp-operator.dev/server={NAME}")
    return sorted(
        p["status"]["podIP"]
        for p in pods["items"]
        if (p.get("status") or {}).get("podIP") and not p["metadata"].get("deletionTimestamp")
    )


def call(ip: str, token: str | None) -> httpx.Response:
    headers = {**MCP_HEADERS, **({"Authorization": f"Bearer {token}"} if token else {})}
    return httpx.post(f"http://{ip}:8080/mcp", json=INITIALIZE, headers=headers, timeout=5)


def keys_status(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return dict((get_server(kubectl, ns, NAME).get("status") or {}).get("keys") or {})


def secret_pems(kubectl: Kubectl, ns: str) -> set[str]:
    """Private key bodies currently in the Secret (to search for leaks later)."""
    secret = get_json(kubectl, "secret", f"{NAME}-signing-keys", "-n", ns)
    doc = json.loads(base64.b64decode(secret["data"]["keyring.json"]))
    bodies = set()
    for key in doc["keys"]:
        lines = [ln for ln in key["privateKeyPem"].splitlines() if ln and "-----" not in ln]
        bodies.update(lines)
    return bodies


def kid_of(token: str) -> str:
    return str(jwt.get_unverified_header(token)["kid"])


@dataclass
class Traffic:
    """Tokens minted over time; each is verified against every pod while unexpired."""

    tokens: list[tuple[str, float]] = field(default_factory=list)  # (token, exp)
    checks: int = 0
    failures: list[str] = field(default_factory=list)

    def round(self, cluster: ControlPlane, ns: str, ips: list[str]) -> None:
        token = mint(cluster, ns)
        self.tokens.append(
            (token, float(jwt.decode(token, options={"verify_signature": False})["exp"]))
        )
        now = time.time()
        for token, exp in self.tokens:
            if exp - 0.5 <= now:  # expired (or about to, while the request travels)
                continue
            for ip in ips:
                self.checks += 1
                reply = call(ip, token)
                if reply.status_code == 401:
                    self.failures.append(f"kid {kid_of(token)} refused by {ip}: {reply.text}")


@pytest.fixture
def secured(
    operator: OperatorProcess, node_agent: NodeAgentProcess, kubectl: Kubectl, unique_ns: str
) -> Iterator[str]:
    manifest = server_manifest(
        NAME, unique_ns, primary={"replicas": 1}, health={"intervalSeconds": 1}, auth=AUTH
    )
    apply(kubectl, manifest)
    wait_condition(kubectl, unique_ns, NAME, "KeysReady", "True", timeout=30)
    # Ready needs MCP-healthy pods: the probe passes only with the token the operator mints.
    wait_condition(kubectl, unique_ns, NAME, "Ready", "True", timeout=60)
    yield unique_ns


def test_tokens_verify_through_rotations_and_revoke_kid_refuses_at_once(
    secured: str, cluster: ControlPlane, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    ns = secured
    # The JWKS ConfigMap is mounted as a volume (not subPath) in both tiers.
    for tier in ("primary", "backup"):
        pod = get_json(kubectl, "deployment", f"{NAME}-{tier}", "-n", ns)["spec"]["template"]
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        assert volumes["mcp-operator-jwks"]["configMap"]["name"] == f"{NAME}-jwks"
    jwks = json.loads(get_json(kubectl, "configmap", f"{NAME}-jwks", "-n", ns)["data"]["jwks.json"])
    assert all(k["use"] == "sig" and k["alg"] == "ES256" and "d" not in k for k in jwks["keys"])
    assert (
        condition(get_server(kubectl, ns, NAME), "Misconfigured") in (None,)
        or (condition(get_server(kubectl, ns, NAME), "Misconfigured") or {}).get("status")
        == "False"
    )

    # The command-line tool (a real subprocess) mints a token the server accepts.
    argv = [sys.executable, "-m", "mcp_operator.cli", "token", "--server", NAME, "-n", ns]
    argv += ["--subject", "alice", "--kubeconfig", str(cluster.admin_kubeconfig)]
    token = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
    ips = pod_ips(kubectl, ns)
    assert len(ips) == 2
    for ip in ips:
        assert call(ip, token).status_code == 200
        refused = call(ip, None)
        assert refused.status_code == 401
        assert "resource_metadata=" in refused.headers["www-authenticate"]
    verified = subprocess.run([*argv, "--verify", token], capture_output=True, text=True)
    assert verified.returncode == 0 and '"valid": true' in verified.stdout
    too_long = subprocess.run([*argv, "--ttl", "1h"], capture_output=True, text=True)
    assert too_long.returncode == 1 and "exceeds spec.auth.tokenTTL" in too_long.stderr

    # Token revocation: `--revoke TOKEN` puts its jti on the list NAME-revoked (mounted in
    # the pods); that token is refused, others are not; the entry expires with the token.
    revoked = mint(cluster, ns)
    done = subprocess.run([*argv, "--revoke", revoked], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    jti = jwt.decode(revoked, options={"verify_signature": False})["jti"]
    wait_for(
        lambda: all(call(ip, revoked).status_code == 401 for ip in ips),
        timeout=15,
        what="revoked jti refused",
    )
    assert call(ips[0], mint(cluster, ns)).status_code == 200
    wait_for(
        lambda: (
            jti
            not in (get_json(kubectl, "configmap", f"{NAME}-revoked", "-n", ns).get("data") or {})
        ),
        timeout=40,
        what="expired revocation entry pruned",
    )

    # Three rotations while minting and verifying continuously: no unexpired token fails.
    first_kid = kid_of(token)
    start = int(keys_status(kubectl, ns)["rotations"])
    traffic = Traffic()
    old_token = token
    deadline = time.monotonic() + 90
    while int(keys_status(kubectl, ns)["rotations"]) < start + 3:
        assert time.monotonic() < deadline, "three rotations did not happen in 90 s"
        traffic.round(cluster, ns, ips)  # the pods are not restarted by a rotation
    assert traffic.failures == [], traffic.failures[:5]
    kids = {kid_of(t) for t, _ in traffic.tokens}
    assert len(kids) >= 3, kids
    print(f"\n{traffic.checks} verifications of unexpired tokens over {len(kids)} keys: 0 failed")

    # A token of a retired-and-removed key is refused.
    wait_for(
        lambda: first_kid not in keys_status(kubectl, ns)["publishedKids"],
        timeout=30,
        what="first key removed",
    )
    time.sleep(6)  # the verifier's periodic re-read
    assert call(ips[0], old_token).status_code == 401

    # revoke-kid: the active key leaves the JWKS at once; its tokens are refused.
    victim_token = mint(cluster, ns)
    victim = kid_of(victim_token)
    assert call(ips[0], victim_token).status_code == 200
    t0 = time.monotonic()
    kubectl("annotate", "mcps", NAME, "-n", ns, f"mcp-operator.dev/revoke-kid={victim}")

    def refused_everywhere() -> bool:
        return all(call(ip, victim_token).status_code == 401 for ip in pod_ips(kubectl, ns))

    wait_for(refused_everywhere, timeout=15, interval=0.2, what="revoked kid refused")
    took = time.monotonic() - t0
    print(f"revoke-kid → 401 on every pod after {took:.1f}s")
    status = keys_status(kubectl, ns)
    assert victim in status["revokedKids"] and status["activeKid"] != victim
    warning = [
        e
        for e in get_json(kubectl, "events", "-n", ns)["items"]
        if e["reason"] == "KeyRevoked" and e["type"] == "Warning"
    ]
    assert warning
    # Tokens of the new active key work right away again (emergency activation).
    wait_for(lambda: call(ips[0], mint(cluster, ns)).status_code == 200, timeout=10, what="new key")

    # Nothing the operator produced contains key material or a token.
    secrets_seen = secret_pems(kubectl, ns)
    tokens_seen = {t for t, _ in traffic.tokens} | {token, victim_token}
    produced = "\n".join(
        [
            operator.log_path.read_text(errors="replace"),
            json.dumps(get_json(kubectl, "events", "-n", ns)),
            json.dumps(get_server(kubectl, ns, NAME).get("status")),
            json.dumps(get_json(kubectl, "configmap", f"{NAME}-jwks", "-n", ns)),
            operator.metrics(),
        ]
    )
    assert "PRIVATE KEY" not in produced
    leaked = [s for s in secrets_seen if len(s) > 16 and s in produced]
    assert not leaked
    assert not [t for t in tokens_seen if t.split(".")[2] in produced]
    metrics = operator.metrics()
    assert f'mcp_operator_signing_key_rotations_total{{kind="scheduled",namespace="{ns}"' in metrics


def test_deleted_secret_is_regenerated_and_garbage_is_reported_not_replaced(
    secured: str, kubectl: Kubectl
) -> None:
    ns = secured
    secret = f"{NAME}-signing-keys"
    before = keys_status(kubectl, ns)["activeKid"]
    kubectl("delete", "secret", secret, "-n", ns)

    def regenerated() -> dict[str, Any] | None:
        obj = get_server(kubectl, ns, NAME)
        cond = condition(obj, "KeysReady") or {}
        active = ((obj.get("status") or {}).get("keys") or {}).get("activeKid")
        return obj if cond.get("reason") == "KeysRegenerated" and active != before else None

    wait_for(regenerated, timeout=20, what="keys regenerated")
    reasons = {e["reason"] for e in get_json(kubectl, "events", "-n", ns)["items"]}
    assert "SigningKeysRegenerated" in reasons

    jwks_before = get_json(kubectl, "configmap", f"{NAME}-jwks", "-n", ns)["data"]
    garbage = {"data": {"keyring.json": base64.b64encode(b"not json").decode()}}
    kubectl("patch", "secret", secret, "-n", ns, "--type=merge", "-p", json.dumps(garbage))
    obj = wait_condition(kubectl, ns, NAME, "KeysReady", "False", timeout=20)
    assert (condition(obj, "KeysReady") or {})["reason"] == "KeysUnreadable"
    time.sleep(3)
    kept = get_json(kubectl, "secret", secret, "-n", ns)["data"]["keyring.json"]
    assert base64.b64decode(kept) == b"not json"  # not silently replaced
    assert get_json(kubectl, "configmap", f"{NAME}-jwks", "-n", ns)["data"] == jwks_before
    # Recovery: delete it, the operator generates new keys.
    kubectl("delete", "secret", secret, "-n", ns)
    wait_condition(kubectl, ns, NAME, "KeysReady", "True", timeout=20)
    assert datetime.now(UTC)  # the operator is still serving (no crash loop)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rotation_survives_20_kill9_of_the_operator(
    secured: str, cluster: ControlPlane, kubectl: Kubectl, operator: OperatorProcess
) -> None:
    """kill -9 at random points of a compressed schedule, ≥ 20 times: the Secret always
    decodes with exactly one active key, rotations go on, no unexpired token fails."""
    import random

    from mcp_operator.keys import store

    ns, rng = secured, random.Random(12)
    ips = pod_ips(kubectl, ns)
    start = int(keys_status(kubectl, ns)["rotations"])
    traffic, kills = Traffic(), 0
    actives: set[str] = set()
    try:
        while kills < 20:
            deadline = time.monotonic() + rng.uniform(0.5, 2.5)
            while time.monotonic() < deadline:
                traffic.round(cluster, ns, ips)
            operator.kill9()
            kills += 1
            secret = get_json(kubectl, "secret", f"{NAME}-signing-keys", "-n", ns)
            ring, _ = store.decode(secret["data"])  # raises on two active keys
            assert ring.active is not None
            actives.add(ring.active.kid)
            traffic.round(cluster, ns, ips)  # the pods keep verifying while it is down
            t0 = time.monotonic()
            operator.start()
            operator.wait_live(timeout=60)
            print(f"kill {kills}: live again after {time.monotonic() - t0:.1f}s", flush=True)
    finally:
        if not operator.alive:
            operator.start()
            operator.wait_live()
    # after the storm the schedule goes on
    wait_for(
        lambda: int(keys_status(kubectl, ns)["rotations"]) >= start + 3,
        timeout=60,
        what="rotations continue after the kills",
    )
    assert traffic.failures == [], traffic.failures[:5]
    print(f"\n{kills} kill -9, {len(actives)} active keys seen, {traffic.checks} checks: 0 failed")
