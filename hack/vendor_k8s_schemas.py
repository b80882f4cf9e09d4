"""Vendor the Kubernetes schemas the operator validates sub-objects against.

``kubernetes-validate`` ships every definition of every release (108 MB): too big for the
operator's image. This script copies out only the definitions reachable from the sub-objects
an ``MCPServer`` embeds (env, resources, probes, affinity, volumes, ...), without their
descriptions, into ``operator/mcp_operator/api/k8s-schemas.json``. A unit test re-runs the
extraction and fails when the checked-in file drifts.

Usage: .venv/bin/python hack/vendor_k8s_schemas.py
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "operator"))

from mcp_operator.api.kubeschema import ROOTS, SCHEMA_FILE, SCHEMA_VERSION, extract  # noqa: E402


def source_definitions() -> dict[str, object]:
    import kubernetes_validate

    base = Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
    path = base / f"v{SCHEMA_VERSION}-local-strict" / "_definitions.json"
    return dict(json.loads(path.read_text())["$defs"])


def vendored_text() -> str:
    return json.dumps(
        {"version": SCHEMA_VERSION, "definitions": extract(source_definitions(), ROOTS)},
        sort_keys=True,
        separators=(",", ":"),
    ) + "\n"


if __name__ == "__main__":
    SCHEMA_FILE.write_text(vendored_text())
    print(f"wrote {SCHEMA_FILE} ({SCHEMA_FILE.stat().st_size} bytes)")
