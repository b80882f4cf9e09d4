"""The ``mcp-operator`` console script, run as a user runs it: as a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from mcp_operator import __version__

ROOT = Path(__file__).resolve().parents[2]
# examples/bad.yaml is the deliberately invalid one (README shows its errors).
EXAMPLES = sorted(p for p in (ROOT / "examples").glob("*.yaml") if p.stem != "bad")
CRD_FILE = ROOT / "crds" / "mcpservers.mcp-operator.dev.yaml"


def _command() -> list[str]:
    script = Path(sys.executable).parent / "mcp-operator"
    if script.exists():
        return [str(script)]
    found = shutil.which("mcp-operator")
    return [found] if found else [sys.executable, "-m", "mcp_operator.cli"]


def run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*_command(), *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
        cwd=ROOT,
    )


def kinds(objects: list[dict[str, object]]) -> list[object]:
    return [o["kind"] for o in objects]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_render_each_example(path: Path) -> None:
    result = run("render", "-f", str(path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    objects = [o for o in yaml.safe_load_all(result.stdout) if o is not None]
    assert kinds(objects).count("Deployment") >= 2
    has_cache = "NetworkPolicy" in kinds(objects)  # spec.cache adds Service NAME-cache
    assert kinds(objects).count("Service") == 3 + has_cache
    for obj in objects:
        assert obj["apiVersion"] and obj["metadata"]["name"]


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_render_json(path: Path) -> None:
    result = run("render", "-f", str(path), "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = json.loads(result.stdout)
    assert doc["apiVersion"] == "v1" and doc["kind"] == "List"
    assert kinds(doc["items"]).count("Deployment") >= 2
    has_cache = "NetworkPolicy" in kinds(doc["items"])  # spec.cache adds Service NAME-cache
    assert kinds(doc["items"]).count("Service") == 3 + has_cache
    # the same objects as the YAML output
    as_yaml = [o for o in yaml.safe_load_all(run("render", "-f", str(path)).stdout) if o]
    assert doc["items"] == as_yaml


def test_render_from_stdin_and_several_documents() -> None:
    text = "\n---\n".join(p.read_text() for p in EXAMPLES)
    result = run("render", "-f", "-", stdin=text)
    assert result.returncode == 0, result.stderr
    objects = [o for o in yaml.safe_load_all(result.stdout) if o]
    caches = kinds(objects).count("NetworkPolicy")  # spec.cache adds Service NAME-cache
    assert kinds(objects).count("Service") == 3 * len(EXAMPLES) + caches


def test_render_output_is_stable() -> None:
    path = str(ROOT / "examples" / "full.yaml")
    assert run("render", "-f", path).stdout == run("render", "-f", path).stdout


INVALID = """\
apiVersion: mcp-operator.dev/v1alpha1
kind: MCPServer
metadata:
  name: broken
spec:
  image: ghcr.io/example/mcp:1
  port: 0
  transport: websocket
  replica: 3
  health: {intervalSeconds: 2, timeoutSeconds: 5}
"""


def test_invalid_file_prints_one_line_per_problem(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text(INVALID)
    result = run("render", "-f", str(path))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    expected = {
        "spec.port: must be ≥ 1",
        "spec.transport: must be one of 'streamable-http'",
        "spec.replica: is not a known field",
        "spec.health.timeoutSeconds: must not exceed intervalSeconds",
    }
    assert len(lines) == len(expected), lines
    for fragment in expected:
        matching = [line for line in lines if fragment in line]
        assert len(matching) == 1, (fragment, lines)
        assert str(path) in matching[0] and "broken" in matching[0]


def test_one_invalid_document_fails_the_whole_render(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text((ROOT / "examples" / "basic.yaml").read_text() + "\n---\n" + INVALID)
    result = run("render", "-f", str(path))
    assert result.returncode != 0
    assert result.stdout == ""  # nothing half-rendered to pipe into kubectl
    assert "document 1" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    "text",
    ["apiVersion: [unclosed\n", "spec:\n  image: a\n bad-indent: b\n", "key: 'open\n"],
    ids=["flow", "indent", "quote"],
)
def test_yaml_syntax_error(tmp_path: Path, text: str) -> None:
    path = tmp_path / "syntax.yaml"
    path.write_text(text)
    result = run("render", "-f", str(path))
    assert result.returncode != 0
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert str(path) in result.stderr


def test_missing_file(tmp_path: Path) -> None:
    result = run("render", "-f", str(tmp_path / "nope.yaml"))
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert "nope.yaml" in result.stderr


def test_not_a_mapping() -> None:
    result = run("render", "-f", "-", stdin="- just\n- a list\n")
    assert result.returncode != 0
    assert "(document): must be a mapping" in result.stderr
    assert "Traceback" not in result.stderr


def test_crd_output_equals_the_checked_in_file() -> None:
    result = run("crd")
    assert result.returncode == 0, result.stderr
    assert result.stdout == CRD_FILE.read_text(encoding="utf-8"), (
        "run `mcp-operator crd > crds/mcpservers.mcp-operator.dev.yaml`"
    )


def test_version() -> None:
    result = run("version")
    assert result.returncode == 0
    assert result.stdout.strip() == __version__
    assert __version__


def test_usage_errors_exit_2_without_traceback() -> None:
    for args in ([], ["render"], ["render", "-f", "x", "-o", "xml"], ["frobnicate"]):
        result = run(*args)
        assert result.returncode == 2, args
        assert "usage:" in result.stderr
        assert "Traceback" not in result.stderr


def test_module_entry_point_works_too() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mcp_operator.cli", "version"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == __version__


def test_the_operator_lifts_its_open_files_soft_limit_to_the_hard_one() -> None:
    """Kept-alive probe connections need a socket per pod: a 1,024 soft limit would end
    probing at ~250 servers with EMFILE."""
    import resource
    import subprocess
    import sys

    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip("needs a finite hard limit above 256")

    def lower() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))

    code = (
        "import resource; from mcp_operator.runner import raise_open_files_limit as r; "
        "print(r(), resource.getrlimit(resource.RLIMIT_NOFILE)[0])"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], preexec_fn=lower, capture_output=True, text=True, check=True
    )
    assert out.stdout.split() == [str(hard), str(hard)]
