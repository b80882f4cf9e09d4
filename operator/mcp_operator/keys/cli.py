"""``mcp-operator token``: mint a token with the active key, or verify one.

Reads through the caller's kubeconfig, so only someone allowed to read the Secret
``NAME-signing-keys`` can mint. Verification needs only the public JWKS ConfigMap and
uses the same verifier the example server runs. The token goes to stdout and nowhere else.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt

from mcp_operator.api.durations import format_duration, parse_duration
from mcp_operator.api.models import API_VERSION, MCPServer
from mcp_operator.api.validation import InvalidSpec, parse_server
from mcp_operator.auth.verify import InvalidToken, Verifier, VerifierConfig
from mcp_operator.keys import store, tokens
from mcp_operator.kube.client import ApiError, KubeClient, load_credentials
from mcp_operator.render import auth as render_auth


class TokenError(Exception):
    """A user-facing refusal (one line, exit code 1)."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("token", help="mint a token for an MCPServer with spec.auth (or --verify)")
    p.add_argument("--server", required=True, help="the MCPServer's name")
    p.add_argument("-n", "--namespace", default="default")
    p.add_argument("--subject", help="the token's sub claim (required to mint)")
    p.add_argument("--scope", action="append", default=[], help="a scope (repeatable)")
    p.add_argument("--ttl", help="lifetime like 10m (default and maximum: spec.auth.tokenTTL)")
    p.add_argument("--verify", metavar="TOKEN", help="check TOKEN against the published JWKS")
    p.add_argument(
        "--revoke",
        metavar="TOKEN_OR_JTI",
        help="add a token's jti to the revocation list NAME-revoked (until the token expires)",
    )
    p.add_argument("--kubeconfig", default=None)
    p.set_defaults(func=cmd_token)


def cmd_token(args: argparse.Namespace) -> int:
    try:
        print(asyncio.run(_run(args)))
    except TokenError as exc:
        print(f"mcp-operator token: {exc}", file=sys.stderr)
        return 1
    return 0


async def _run(args: argparse.Namespace) -> str:
    client = KubeClient(load_credentials(args.kubeconfig))
    try:
        server = await _server(client, args.namespace, args.server)
        if args.verify:
            return await _verify(client, server, args.verify)
        if args.revoke:
            return await _revoke(client, server, args.revoke)
        return await _mint(client, server, args)
    finally:
        await client.close()


async def _server(client: KubeClient, namespace: str, name: str) -> MCPServer:
    body = await client.get(API_VERSION, "MCPServer", namespace, name)
    if body is None:
        raise TokenError(f"MCPServer {namespace}/{name} not found")
    try:
        server = parse_server(body)
    except InvalidSpec as exc:
        raise TokenError(f"MCPServer {namespace}/{name} is invalid: {exc.problems[0]}") from None
    if not server.spec.auth.enabled:
        raise TokenError(f"MCPServer {namespace}/{name} does not have spec.auth.enabled")
    return server


async def _mint(client: KubeClient, server: MCPServer, args: argparse.Namespace) -> str:
    if not args.subject:
        raise TokenError("--subject is required to mint a token")
    limit = parse_duration(server.spec.auth.token_ttl)
    ttl = _ttl(args.ttl, limit)
    secret = await client.get(
        "v1", "Secret", server.metadata.namespace, render_auth.signing_secret_name(server)
    )
    if secret is None:
        raise TokenError("no signing keys yet (the operator creates them; see status.keys)")
    try:
        ring, materials = store.decode(secret.get("data"))
    except store.UnreadableKeys as exc:
        raise TokenError(f"signing keys unreadable: {exc}") from None
    if ring.active is None or ring.active.kid not in materials:
        raise TokenError("no active signing key")
    return tokens.mint(
        materials[ring.active.kid],
        iss=tokens.issuer(server),
        aud=tokens.audience(server),
        sub=args.subject,
        ttl=ttl,
        now=datetime.now(UTC),
        scope=" ".join(args.scope) or None,
    )


def _ttl(text: str | None, limit: timedelta) -> timedelta:
    if text is None:
        return limit
    try:
        ttl = parse_duration(text)
    except ValueError as exc:
        raise TokenError(str(exc)) from None
    if ttl > limit:
        raise TokenError(f"--ttl {text} exceeds spec.auth.tokenTTL ({format_duration(limit)})")
    if ttl.total_seconds() < 1:
        raise TokenError("--ttl must be at least 1s")
    return ttl


async def _verify(client: KubeClient, server: MCPServer, token: str) -> str:
    config_map = await client.get(
        "v1", "ConfigMap", server.metadata.namespace, render_auth.jwks_config_map_name(server)
    )
    document = ((config_map or {}).get("data") or {}).get(render_auth.JWKS_FILE)
    if not document:
        raise TokenError("no published JWKS yet")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / render_auth.JWKS_FILE
        path.write_text(document)
        leeway = parse_duration(server.spec.auth.leeway).total_seconds()
        config = VerifierConfig(
            jwks_path=path,
            issuer=tokens.issuer(server),
            audience=tokens.audience(server),
            leeway=leeway,
        )
        try:
            claims = Verifier(config).verify(token)
        except InvalidToken as exc:
            raise TokenError(f"invalid token: {exc}") from None
    return json.dumps({"valid": True, "claims": claims}, sort_keys=True)


async def _revoke(client: KubeClient, server: MCPServer, value: str) -> str:
    """Add ``jti: exp`` to the revocation list. Given a token, its own ``exp`` is used;
    given a bare jti, the longest a token could still live (now + tokenTTL)."""
    if value.count(".") == 2:
        try:
            claims = jwt.decode(value, options={"verify_signature": False})
            jti, exp = str(claims["jti"]), float(claims["exp"])
        except (jwt.PyJWTError, KeyError, TypeError, ValueError):
            raise TokenError("not a token with jti and exp") from None
    else:
        jti = value
        exp = (datetime.now(UTC) + parse_duration(server.spec.auth.token_ttl)).timestamp()
    if not re.fullmatch(r"[-._a-zA-Z0-9]{1,253}", jti):
        raise TokenError("this jti cannot be a ConfigMap key; it was not issued by mcp-operator")
    name = render_auth.revoked_config_map_name(server)
    patch = {"data": {jti: str(int(exp) + 1)}}
    try:
        await client.patch("v1", "ConfigMap", server.metadata.namespace, name, patch)
    except ApiError as exc:
        if exc.status == 404:
            raise TokenError(f"no revocation list {name} yet (the operator creates it)") from None
        raise
    return f"revoked jti {jti} until {datetime.fromtimestamp(exp, UTC).isoformat()}"
