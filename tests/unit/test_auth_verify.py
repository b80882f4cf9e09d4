"""The reference verifier (mcp_operator.auth.verify) against tokens the operator mints,
and the example server's use of it (401 + RFC 9728 metadata)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from mcp_example_server import VerifyTokens, mounted_path
from mcp_operator.api.validation import parse_server
from mcp_operator.auth.verify import InvalidToken, Verifier, VerifierConfig
from mcp_operator.keys import keygen, tokens
from mcp_operator.render import auth as render_auth
from mcp_operator.render import render

ISS, AUD = "urn:mcp-operator:ns:weather", "http://weather.ns.svc:8080/mcp"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def write_jwks(path: Path, keys: list[keygen.KeyMaterial]) -> None:
    path.write_text(keygen.jwks_document(keys))


def mint(key: keygen.KeyMaterial, **over: Any) -> str:
    args: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "alice",
        "ttl": timedelta(minutes=5),
        "now": datetime.now(UTC),
    }
    args.update(over)
    return tokens.mint(key, **args)


@pytest.fixture
def setup(tmp_path: Path) -> tuple[Verifier, Clock, Path]:
    clock = Clock()
    path = tmp_path / "jwks.json"
    config = VerifierConfig(jwks_path=path, issuer=ISS, audience=AUD, leeway=30)
    return Verifier(config, clock=clock), clock, path


@pytest.mark.parametrize("alg", keygen.ALGORITHMS)
def test_each_algorithm_round_trips(setup: tuple[Verifier, Clock, Path], alg: Any) -> None:
    verifier, _, path = setup
    key = keygen.generate(alg)
    write_jwks(path, [key])
    claims = verifier.verify(mint(key, scope="tools:call"))
    assert claims["sub"] == "alice" and claims["scope"] == "tools:call"
    assert {"exp", "iat", "nbf", "iss", "aud", "jti"} <= claims.keys()


def test_rsa_keys_are_3072_bits_and_kids_random() -> None:
    key = keygen.generate("RS256")
    assert key.private_key().key_size == 3072  # type: ignore[union-attr]
    kids = {keygen.new_kid() for _ in range(100)}
    assert len(kids) == 100 and all(len(k) >= 22 for k in kids)  # 128 bits, base64url


def test_refusals(setup: tuple[Verifier, Clock, Path]) -> None:
    verifier, _, path = setup
    key = keygen.generate("ES256")
    write_jwks(path, [key])
    now = datetime.now(UTC)
    bad = {
        "wrong audience": mint(key, aud="http://other.ns.svc:8080/mcp"),
        "wrong issuer": mint(key, iss="urn:someone-else"),
        "expired beyond leeway": mint(
            key, now=now - timedelta(minutes=6), ttl=timedelta(minutes=5)
        ),
    }
    for why, token in bad.items():
        with pytest.raises(InvalidToken):
            verifier.verify(token)
            pytest.fail(why)
    # within the leeway: accepted
    verifier.verify(mint(key, now=now - timedelta(seconds=320), ttl=timedelta(minutes=5)))
    # a missing required claim (no jti)
    private = key.private_key()
    claims = {"iss": ISS, "aud": AUD, "sub": "x", "iat": int(now.timestamp())}
    claims["exp"] = claims["iat"] + 60
    no_jti = jwt.encode(claims, private, algorithm="ES256", headers={"kid": key.kid})
    with pytest.raises(InvalidToken, match="MissingRequiredClaim"):
        verifier.verify(no_jti)
    # HS256 "signed" with the public JWK as secret: algorithm confusion is refused
    forged = jwt.encode(
        {**claims, "jti": "j"}, "s" * 32, algorithm="HS256", headers={"kid": key.kid}
    )
    with pytest.raises(InvalidToken, match="algorithm not allowed"):
        verifier.verify(forged)
    # a header pointing at an attacker's key set is ignored: the kid is unknown here
    other = keygen.generate("ES256")
    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(mint(other))


def test_unknown_kid_rereads_rate_limited_and_removed_keys_stop(
    setup: tuple[Verifier, Clock, Path],
) -> None:
    verifier, clock, path = setup
    old, new = keygen.generate("ES256"), keygen.generate("EdDSA")
    write_jwks(path, [old])
    verifier.verify(mint(old))
    write_jwks(path, [old, new])
    clock.t += 1.5  # past the re-read interval, before the periodic refresh
    verifier.verify(mint(new))  # unknown kid → one re-read → found
    write_jwks(path, [new])  # old revoked
    clock.t += 0.2
    verifier.verify(mint(old))  # still cached: refresh period not over
    clock.t += 5
    with pytest.raises(InvalidToken, match="unknown kid"):
        verifier.verify(mint(old))


def test_leeway_capped_at_60s(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="leeway"):
        VerifierConfig(jwks_path=tmp_path, issuer=ISS, audience=AUD, leeway=61)


def test_render_mounts_the_jwks_volume_in_both_tiers() -> None:
    body = {
        "apiVersion": "mcp-operator.dev/v1alpha1",
        "kind": "MCPServer",
        "metadata": {"name": "weather", "namespace": "ns"},
        "spec": {"image": "x", "auth": {"enabled": True}},
    }
    server = parse_server(body)
    deployments = [o for o in render(server) if o["kind"] == "Deployment"]
    assert len(deployments) == 2
    for dep in deployments:
        pod = dep["spec"]["template"]["spec"]
        volume = next(v for v in pod["volumes"] if v["name"] == render_auth.VOLUME)
        assert volume["configMap"]["name"] == "weather-jwks"
        mounts = pod["containers"][0]["volumeMounts"]
        mount = next(m for m in mounts if m["name"] == "mcp-operator-jwks")
        assert any(m["mountPath"] == render_auth.REVOKED_DIR for m in mounts)
        assert "subPath" not in mount and mount["mountPath"] == render_auth.MOUNT_DIR
        env = {e["name"]: e["value"] for e in pod["containers"][0]["env"]}
        config = VerifierConfig.from_env(env)
        assert config is not None and config.audience == AUD and config.issuer == ISS
    off = parse_server({**body, "spec": {"image": "x"}})
    assert "mcp-operator-jwks" not in json.dumps(render(off))


def test_mounted_path_under_the_node_agent() -> None:
    env = {"NODEAGENT_MOUNTS": json.dumps({"/var/run/mcp-operator/jwks": "/state/p/jwks"})}
    assert mounted_path(render_auth.JWKS_PATH, env) == "/state/p/jwks/jwks.json"
    assert mounted_path("/etc/x", env) == "/etc/x"


async def test_example_server_401_and_protected_resource_metadata(
    setup: tuple[Verifier, Clock, Path],
) -> None:
    verifier, _, path = setup
    key = keygen.generate("ES256")
    write_jwks(path, [key])

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"mcp"})

    app = VerifyTokens(inner, verifier, "/mcp")
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        refused = await client.post("/mcp", json={})
        assert refused.status_code == 401
        challenge = refused.headers["www-authenticate"]
        assert (
            'resource_metadata="http://weather.ns.svc:8080/.well-known/oauth-protected-resource/mcp"'
            in challenge
        )
        meta = await client.get("/.well-known/oauth-protected-resource/mcp")
        assert meta.json()["resource"] == AUD
        ok = await client.post("/mcp", headers={"Authorization": f"Bearer {mint(key)}"})
        assert ok.status_code == 200 and ok.text == "mcp"


def test_revoked_jti_is_refused_after_the_next_reread(tmp_path: Path) -> None:
    clock = Clock()
    revoked = tmp_path / "revoked"
    revoked.mkdir()
    (revoked / "..data").mkdir()  # the kubelet's atomic-update machinery is not a jti
    config = VerifierConfig(
        jwks_path=tmp_path / "jwks.json", issuer=ISS, audience=AUD, revoked_dir=revoked
    )
    verifier = Verifier(config, clock=clock)
    key = keygen.generate("ES256")
    write_jwks(config.jwks_path, [key])
    token = mint(key)
    jti = jwt.decode(token, options={"verify_signature": False})["jti"]
    verifier.verify(token)
    (revoked / jti).write_text("9999999999")
    clock.t += 5
    with pytest.raises(InvalidToken, match="revoked"):
        verifier.verify(token)
    verifier.verify(mint(key))  # other tokens are unaffected
