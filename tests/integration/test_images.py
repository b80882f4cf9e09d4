"""The images, without a container engine: the Dockerfiles are hadolint-clean and pinned, and
the runtime virtualenv they build (hack/image-venv.sh, the very script their build stage
runs) holds the operator only and starts. Image names agree everywhere they are written."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml

from mcp_operator import __version__, install

ROOT = Path(__file__).resolve().parents[2]
HADOLINT = Path(sys.executable).parent / "hadolint"
DOCKERFILES = {
    "mcp-operator": ROOT / "Dockerfile",
    "mcp-example-server": ROOT / "examples/server/Dockerfile",
}
ENTRYPOINTS = {
    "mcp-operator": ["mcp-operator", "version"],
    "mcp-example-server": ["mcp-example-server", "--help"],
}


@pytest.mark.parametrize("package", sorted(DOCKERFILES))
def test_dockerfile_is_hadolint_clean(package: str) -> None:
    result = subprocess.run(
        [str(HADOLINT), "--failure-threshold", "info", str(DOCKERFILES[package])],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("package", sorted(DOCKERFILES))
def test_dockerfile_is_multistage_pinned_nonroot_labelled(package: str) -> None:
    text = DOCKERFILES[package].read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert len(froms) >= 3, "uv stage, build stage, runtime stage"
    base = re.search(r"^ARG PYTHON_IMAGE=(\S+)", text, re.M)
    assert base and re.fullmatch(r"python:\d+\.\d+\.\d+-slim-\w+(@sha256:[0-9a-f]{64})?", base[1])
    assert re.search(r"^FROM ghcr.io/astral-sh/uv:\d+\.\d+\.\d+ AS uv$", text, re.M)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users == ["65532:65532"], "numeric, non-root, in the runtime stage"
    assert text.rindex("USER") > text.rindex("FROM")
    assert f"hack/image-venv.sh {package} " in text
    for label in ("title", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{label}=" in text


def test_build_context_leaves_out_the_harness_and_tests() -> None:
    lines = [ln for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip()]
    rules = [ln for ln in lines if not ln.startswith("#")]
    assert rules[0] == "*", "an allow-list: everything excluded first"
    allowed = [ln[1:] for ln in rules if ln.startswith("!")]
    assert not [a for a in allowed if a.startswith(("devcluster/mcp_devcluster", "tests", "bench"))]
    assert "devcluster/pyproject.toml" in allowed  # uv needs the workspace's member list


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Both runtime venvs, built as the Dockerfiles build them."""
    out = {}
    for package in sorted(DOCKERFILES):
        work = tmp_path_factory.mktemp(package)
        env = {**os.environ, "UV": "python3 -m uv", "PYTHON": sys.executable}
        env.pop("VIRTUAL_ENV", None)
        subprocess.run(
            [
                "sh",
                str(ROOT / "hack/image-venv.sh"),
                package,
                str(work / "venv"),
                str(work / "wheels"),
            ],
            cwd=ROOT,
            env=env,
            check=True,
            capture_output=True,
            timeout=240,
        )
        out[package] = work
    return out


def _run(venv: Path, *argv: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": f"{venv / 'bin'}:/usr/bin:/bin", "HOME": str(venv)}
    return subprocess.run(argv, capture_output=True, text=True, env=env, check=False, timeout=60)


@pytest.mark.parametrize("package", sorted(DOCKERFILES))
def test_entrypoint_runs_from_the_image_venv(package: str, built: dict[str, Path]) -> None:
    venv = built[package] / "venv"
    result = _run(venv, *ENTRYPOINTS[package])
    assert result.returncode == 0, result.stderr
    if package == "mcp-operator":
        assert result.stdout.strip() == __version__


def test_operator_wheel_and_venv_hold_the_operator_only(built: dict[str, Path]) -> None:
    work = built["mcp-operator"]
    (wheel,) = (work / "wheels").glob("mcp_operator-*.whl")
    tops = {name.split("/", 1)[0] for name in zipfile.ZipFile(wheel).namelist()}
    assert tops == {"mcp_operator", f"mcp_operator-{__version__}.dist-info"}
    python = str(work / "venv" / "bin" / "python")
    for module in ("mcp_devcluster", "mcp_example_server", "pytest", "mypy", "mcp", "lupa"):
        probe = _run(work / "venv", python, "-c", f"import {module}")
        assert probe.returncode != 0, f"{module} is importable in the operator image"
    # ...and the operator's own runtime imports all resolve (kopf, kubernetes client, ...).
    probe = _run(work / "venv", python, "-c", "import mcp_operator.runner, mcp_operator.handlers")
    assert probe.returncode == 0, probe.stderr


def test_image_references_match_the_release_workflow() -> None:
    workflow = yaml.safe_load((ROOT / ".github/workflows/release.yaml").read_text())
    trigger = workflow.get("on") or workflow.get(True)  # YAML 1.1 reads `on` as True
    assert trigger["push"]["tags"] == ["v*"]
    matrix = workflow["jobs"]["images"]["strategy"]["matrix"]["include"]
    pushed = {m["dockerfile"]: m["image"] for m in matrix}
    assert pushed == {
        "Dockerfile": install.IMAGE_REPOSITORY,
        "examples/server/Dockerfile": install.EXAMPLE_IMAGE_REPOSITORY,
    }
    build = next(
        s for s in workflow["jobs"]["images"]["steps"] if "build-push" in s.get("uses", "")
    )
    assert build["with"]["platforms"] == "linux/amd64,linux/arm64"
    chart_dir = ROOT / "charts/mcp-operator"
    chart = yaml.safe_load((chart_dir / "Chart.yaml").read_text())
    values = yaml.safe_load((chart_dir / "values.yaml").read_text())
    assert chart["version"] == chart["appVersion"] == __version__
    assert values["image"]["repository"] == install.IMAGE_REPOSITORY
    assert f"{install.IMAGE_REPOSITORY}:{__version__}" == install.IMAGE
    ours = []  # images of this project in the examples (bad.yaml shows a third-party one)
    for example in sorted((ROOT / "examples").glob("*.yaml")):
        for doc in yaml.safe_load_all(example.read_text()):
            image = (doc or {}).get("spec", {}).get("image", "") if isinstance(doc, dict) else ""
            if str(image).startswith("ghcr.io/mcp-operator/"):
                ours.append((example.name, image))
    assert ours
    wanted = f"{install.EXAMPLE_IMAGE_REPOSITORY}:{__version__}"
    assert [o for o in ours if o[1] != wanted] == []
    from mcp_devcluster.nodeagent import EXAMPLE_IMAGE_REPOSITORY

    assert EXAMPLE_IMAGE_REPOSITORY == install.EXAMPLE_IMAGE_REPOSITORY


@pytest.mark.parametrize("package", sorted(DOCKERFILES))
def test_no_image_holds_the_harness_or_dev_tools(package: str, built: dict[str, Path]) -> None:
    python = str(built[package] / "venv" / "bin" / "python")
    for module in ("mcp_devcluster", "pytest", "mypy", "lupa"):
        probe = _run(built[package] / "venv", python, "-c", f"import {module}")
        assert probe.returncode != 0, f"{module} is importable in the {package} image"
