# mcp-operator developer entry points. Every target works on a fresh Debian bookworm machine
# (as root): it installs what it needs first.
PY := .venv/bin/python

.PHONY: setup tools test unit demo lint manifests crd docs vendor-k8s-schemas bench-reconcile bench-clients bench-steady bench-failover bench-traffic clean

setup:            ## Python environment (uv, locked dependencies)
	@python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install -q uv
	python3 -m uv sync --frozen -q

tools: setup      ## k8s control plane of $$MCP_K8S_VERSION (default the newest tested) and of the oldest supported release (smoke), built once and cached; kubectl, helm, etcd, redis, promtool
	nice bash hack/build-k8s-module.sh "$$($(PY) -m mcp_devcluster.controlplane version)"
	K8S_BINS="kube-apiserver kube-controller-manager" nice bash hack/build-k8s-module.sh \
	  "$$($(PY) -m mcp_devcluster.controlplane version --oldest)"
	bash hack/install-tools.sh >/dev/null

test: setup tools ## the whole suite: unit, integration and e2e on the real local control plane
	.venv/bin/pytest -q -p no:cacheprovider

unit: setup       ## the pure-core tests only (seconds, no cluster)
	.venv/bin/pytest -q tests/unit

demo: setup tools ## the main job: local cluster + node agent + operator, kill the primary, watch the promotion
	$(PY) -m mcp_devcluster.demo

lint: setup
	.venv/bin/ruff format --check operator devcluster examples/server tests bench
	.venv/bin/ruff check operator devcluster examples/server tests bench
	.venv/bin/mypy

crd: setup        ## regenerate the checked-in CRD from the models
	.venv/bin/mcp-operator crd > crds/mcpservers.mcp-operator.dev.yaml

docs: setup       ## regenerate docs/api.md from the models, docs/metrics.md from the registry
	$(PY) -m mcp_operator.api.reference > docs/api.md
	$(PY) -m mcp_operator.metrics_reference > docs/metrics.md

vendor-k8s-schemas: setup  ## re-extract the Kubernetes schemas sub-objects are checked against
	$(PY) hack/vendor_k8s_schemas.py

manifests: setup  ## regenerate the checked-in install files: manifests/ (flat, kustomize), chart data
	.venv/bin/mcp-operator manifests --write .

bench-reconcile: setup tools
	$(PY) bench/reconcile.py

bench-clients: setup tools  ## the same applies through each candidate HTTP client, one run
	$(PY) bench/clients.py

bench-steady: setup tools  ## 1,000 servers once nothing changes: CPU, RSS, round lateness, writes/s
	$(PY) bench/steady.py

bench-failover: setup tools
	$(PY) bench/failover.py

bench-traffic: setup tools  ## a client calling a tool every 50 ms through the Service, per scenario
	$(PY) bench/traffic.py
