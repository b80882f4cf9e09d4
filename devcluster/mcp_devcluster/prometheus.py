"""A real Prometheus (Debian's ``prometheus`` package) for tests and demos.

Scrapes the given targets every ``interval`` seconds and evaluates rule files at the same
rate; its HTTP API answers on 127.0.0.1. Storage lives in the given directory; the process
is killed (and waited for) on :meth:`stop`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from mcp_devcluster.stack import free_port


class PrometheusError(RuntimeError):
    pass


def binary() -> str:
    found = shutil.which("prometheus")
    if found is None:
        raise PrometheusError("prometheus not found: install Debian's prometheus (make tools)")
    return found


@dataclass
class Prometheus:
    workdir: Path
    targets: list[str]
    rule_files: list[Path] = field(default_factory=list)
    interval: float = 1.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def config(self) -> dict[str, Any]:
        every = f"{int(self.interval * 1000)}ms"
        return {
            "global": {"scrape_interval": every, "evaluation_interval": every},
            "rule_files": [str(p) for p in self.rule_files],
            "scrape_configs": [
                {
                    "job_name": "mcp-operator",
                    "honor_labels": True,
                    "static_configs": [{"targets": self.targets}],
                }
            ],
        }

    def start(self, timeout: float = 60.0) -> Prometheus:
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(self.config()))
        log = open(self.workdir / "prometheus.log", "ab")  # noqa: SIM115 (kept open)
        self.proc = subprocess.Popen(
            [
                binary(),
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(f"prometheus exited: {self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/-/ready", timeout=1).is_success:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise PrometheusError(f"prometheus not ready after {timeout:.0f}s: {self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        path = self.workdir / "prometheus.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def api(self, path: str, **params: str) -> Any:
        """``GET /api/v1/PATH``; the ``data`` of a success, PrometheusError otherwise."""
        reply = httpx.get(f"{self.url}/api/v1/{path}", params=params, timeout=10)
        body = reply.json()
        if body.get("status") != "success":
            raise PrometheusError(f"{path} {params}: {body.get('error') or reply.text[:300]}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        result: list[dict[str, Any]] = data["result"] if data["resultType"] == "vector" else []
        return result

    def alerts(self, name: str) -> list[dict[str, Any]]:
        """Active alerts (pending or firing) called ``name``."""
        return [a for a in self.api("alerts")["alerts"] if a["labels"].get("alertname") == name]

    def rules_loaded(self) -> list[str]:
        groups = self.api("rules")["groups"]
        return [r["name"] for g in groups for r in g["rules"]]
