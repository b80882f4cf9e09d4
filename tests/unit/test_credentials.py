"""Credentials that keep working: rotated token files, exec plugins through the official
loader, a 401 refreshes; missing or unreachable → one line, never a traceback."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from mcp_operator.kube.auth import (
    CredentialsError,
    FileToken,
    LoaderToken,
    credentials_from_kubeconfig,
    credentials_in_cluster,
)
from mcp_operator.kube.client import KubeClient
from tests.unit.fake_api import Seen, fake_api, js


def kubeconfig(path: Path, user: dict[str, object], server: str = "https://127.0.0.1:6443") -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {"name": "c", "cluster": {"server": server, "insecure-skip-tls-verify": True}}
                ],
                "users": [{"name": "u", "user": user}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "c",
            }
        )
    )
    return path


def test_file_token_is_reread_when_it_changes(tmp_path: Path) -> None:
    now = [0.0]
    token_file = tmp_path / "token"
    token_file.write_text("one\n")
    tokens = FileToken(token_file, clock=lambda: now[0])
    assert tokens.current() == "one"
    token_file.write_text("two-rotated\n")
    assert tokens.current() == "one"  # stat at most once a second
    now[0] += 1.5
    assert tokens.current() == "two-rotated"
    token_file.unlink()  # a rotation swaps files: keep the last token meanwhile
    now[0] += 1.5
    assert tokens.current() == "two-rotated"


def test_in_cluster_token_rotates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    (tmp_path / "token").write_text("first")
    creds = credentials_in_cluster(tmp_path)
    assert creds.server == "https://10.0.0.1:443" and creds.token == "first"
    (tmp_path / "token").write_text("second-token")
    assert creds.tokens is not None
    creds.tokens.invalidate()  # what a 401 does
    assert creds.token == "second-token"


def test_kubeconfig_token_file(tmp_path: Path) -> None:
    token_file = tmp_path / "tok"
    token_file.write_text("from-file")
    creds = credentials_from_kubeconfig(
        str(kubeconfig(tmp_path / "kc", {"tokenFile": str(token_file)}))
    )
    assert creds.token == "from-file" and creds.insecure
    token_file.write_text("rotated-file")
    assert creds.tokens is not None
    creds.tokens.invalidate()
    assert creds.token == "rotated-file"


def test_kubeconfig_exec_plugin(tmp_path: Path) -> None:
    """An exec credential plugin (as cloud IAM plugins are) works through the loader."""
    plugin = tmp_path / "plugin.py"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "kind": "ExecCredential",
        "status": {"token": "exec-token"},
    }
    plugin.write_text(f"import json; print(json.dumps({credential!r}))\n")
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin)],
        }
    }
    creds = credentials_from_kubeconfig(str(kubeconfig(tmp_path / "kc", user)))
    assert creds.token == "exec-token"
    assert creds.server == "https://127.0.0.1:6443"


def test_an_expiring_exec_token_is_renewed_at_most_once_a_second(tmp_path: Path) -> None:
    """The loader's refresh hook re-runs an expired exec plugin; the operator asks for the
    token on every API request, so the hook runs at most once a second (and at once after
    a 401), not per request."""
    plugin = tmp_path / "plugin.py"
    runs = tmp_path / "runs"
    plugin.write_text(
        "import json, pathlib\n"
        f"runs = pathlib.Path({str(runs)!r})\n"
        "n = len(runs.read_text()) if runs.exists() else 0\n"
        "runs.write_text('x' * (n + 1))\n"
        "print(json.dumps({'apiVersion': 'client.authentication.k8s.io/v1beta1',\n"
        "    'kind': 'ExecCredential', 'status': {'token': f'exec-{n}',\n"
        "    'expirationTimestamp': '2000-01-01T00:00:00Z'}}))\n"
    )
    user = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1beta1",
            "command": sys.executable,
            "args": [str(plugin)],
        }
    }
    now = [0.0]
    tokens = LoaderToken(str(kubeconfig(tmp_path / "kc", user)), None, clock=lambda: now[0])
    first = tokens.current()
    assert first is not None and first.startswith("exec-")
    ran = len(runs.read_text())
    assert [tokens.current() for _ in range(50)] == [first] * 50
    assert len(runs.read_text()) == ran  # no plugin run per request
    now[0] += 1.5
    second = tokens.current()
    assert second != first and len(runs.read_text()) > ran  # expired: renewed
    tokens.invalidate()  # a 401
    assert tokens.current() not in (first, second)


def test_missing_kubeconfig_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(CredentialsError) as err:
        credentials_from_kubeconfig(str(tmp_path / "absent"))
    assert "\n" not in str(err.value) and "absent" in str(err.value)


def test_garbage_kubeconfig_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "kc").write_text("apiVersion: v1\nkind: Config\n")
    with pytest.raises(CredentialsError) as err:
        credentials_from_kubeconfig(str(tmp_path / "kc"))
    assert "\n" not in str(err.value)


async def test_a_401_refreshes_the_token_and_retries(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("old")
    tokens = FileToken(token_file)
    seen: list[Seen] = []

    def handler(request: Seen) -> tuple[int, bytes]:
        return (200 if request.authorization == "Bearer new" else 401), js({})

    async with fake_api(handler, seen) as creds:
        client = KubeClient(replace(creds, tokens=tokens))
        assert tokens.current() == "old"
        token_file.write_text("new")  # rotated within the stat interval
        assert await client.request("GET", "/x") == {}
        await client.close()
    assert [r.authorization for r in seen] == ["Bearer old", "Bearer new"]
