"""The broken-manifest corpus (tests/corpus/broken): every file fails with all its problems.

Each file names what it must produce in header comments: ``# expect: PATH`` per problem
(``(input)`` for a file-level problem such as broken YAML) and optionally
``# expect-message: TEXT``. The CLI must exit 1, print nothing on stdout, print one line per
problem naming the path, and never a traceback. The in-process runs keep this fast; a few
run as real subprocesses, as a user runs them.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mcp_operator.cli import main

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "tests" / "corpus" / "broken").glob("*.yaml"))


def expectations(path: Path) -> tuple[list[str], list[str]]:
    paths, messages = [], []
    for raw in path.read_bytes().splitlines():
        line = raw.decode("utf-8", "replace")
        if line.startswith("# expect: "):
            paths.append(line.removeprefix("# expect: ").strip())
        elif line.startswith("# expect-message: "):
            messages.append(line.removeprefix("# expect-message: ").strip())
    return paths, messages


def run_inprocess(*args: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def test_corpus_is_big_enough() -> None:
    assert len(CORPUS) >= 40
    for path in CORPUS:
        assert expectations(path)[0], f"{path.name} names no expected problem"


@pytest.mark.parametrize("path", CORPUS, ids=[p.stem for p in CORPUS])
def test_broken_manifest_lists_every_problem_by_path(path: Path) -> None:
    paths, messages = expectations(path)
    code, out, err = run_inprocess("render", "-f", str(path))
    assert code == 1, err
    assert out == ""
    assert "Traceback" not in err
    lines = err.splitlines()
    assert all(line.startswith(f"{path}: ") for line in lines), err
    for expected in paths:
        if expected == "(input)":
            assert len(lines) == 1, err  # the whole file is unusable: one line
        else:
            assert any(f": {expected}: " in line for line in lines), f"{expected} not in:\n{err}"
    for message in messages:
        assert message in err
    assert len(lines) >= len(paths)


def _cli(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    script = Path(sys.executable).parent / "mcp-operator"
    return subprocess.run(
        [str(script), *args],
        input=stdin,
        capture_output=True,
        timeout=60,
        check=False,
        env={**os.environ, "PYTHONIOENCODING": "utf-8"},
    )


@pytest.mark.parametrize("name", ["binary", "six-problems", "list-with-bad-items"])
def test_real_cli_process_on_broken_files(name: str) -> None:
    path = ROOT / "tests" / "corpus" / "broken" / f"{name}.yaml"
    result = _cli("render", "-f", "-", stdin=path.read_bytes())
    assert result.returncode == 1
    assert b"Traceback" not in result.stderr
    assert result.stdout == b""


def test_closed_pipe_is_not_a_traceback() -> None:
    """`render -o json | head -1`: the reader goes away early."""
    example = ROOT / "examples" / "full.yaml"
    script = Path(sys.executable).parent / "mcp-operator"
    shell = f"set -o pipefail; '{script}' render -f '{example}' -o json | head -c 10 >/dev/null"
    result = subprocess.run(
        ["bash", "-c", shell], capture_output=True, timeout=60, check=False, text=True
    )
    assert "Traceback" not in result.stderr
    assert "BrokenPipe" not in result.stderr
    assert result.returncode in (0, 141)


def test_missing_file_is_one_line() -> None:
    code, out, err = run_inprocess("render", "-f", "/nonexistent/x.yaml")
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and "cannot read" in err


def test_examples_bad_yaml_lists_all_five_problems_as_the_readme_shows() -> None:
    code, out, err = run_inprocess("render", "-f", "examples/bad.yaml")
    assert code == 1 and out == ""
    paths = [line.split(": ")[2] for line in err.splitlines()]
    assert paths == [
        "spec.env[0].valuFrom",
        "spec.resources.limits.memory",
        "spec.pod.tolerations[0].effect",
        "spec.pod.securityContext.runAsUser",
        "spec.health.timeoutSeconds",
    ]
    readme = (ROOT / "README.md").read_text()
    quoted = [line for line in readme.splitlines() if line.startswith("examples/bad.yaml: ")]
    assert quoted, "README shows no output of examples/bad.yaml"
    for line in quoted:
        assert line in err.splitlines(), line
