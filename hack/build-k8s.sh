#!/usr/bin/env bash
# Build kube-apiserver + kube-controller-manager 1.20.2 from Debian bookworm's source package
# `kubernetes`, once. The binaries are cached under $MCP_K8S_CACHE
# (default ~/.cache/mcp-operator/k8s-1.20.2); later runs return at once.
# Needs root (apt) on Debian bookworm. A cold build takes ~4-8 minutes on 2 cores.
# Nothing is fetched but Debian packages: the vendored Go modules are built with GOPROXY=off.
set -euo pipefail
CACHE="${MCP_K8S_CACHE:-$HOME/.cache/mcp-operator/k8s-1.20.2}"
is_built() { [[ -x "$CACHE/kube-apiserver" && -x "$CACHE/kube-controller-manager" ]]; }
if is_built; then
  echo "k8s binaries cached in $CACHE"; exit 0
fi
mkdir -p "$(dirname "$CACHE")"
# One build at a time (e.g. two test sessions starting together).
exec 9>"$(dirname "$CACHE")/.build-k8s.lock"
flock 9
if is_built; then
  echo "k8s binaries cached in $CACHE"; exit 0
fi

export DEBIAN_FRONTEND=noninteractive
log() { echo "build-k8s: $*" >&2; }
have_src() { [[ -n "$(apt-cache showsrc kubernetes 2>/dev/null | head -1)" ]]; }

apt-get update -qq
if ! have_src; then
  # Add deb-src for the same mirror the machine already uses for bookworm (deb.debian.org if
  # none is found).
  MIRROR="$(grep -hs '^URIs:' /etc/apt/sources.list.d/debian.sources | awk '{print $2}' \
    | grep -v -- '-security' | head -1 || true)"
  if [[ -z $MIRROR ]]; then
    MIRROR="$(grep -hsE '^deb\s+\S+\s+bookworm\s' /etc/apt/sources.list | awk '{print $2}' \
      | head -1 || true)"
  fi
  MIRROR="${MIRROR:-http://deb.debian.org/debian}"
  log "adding deb-src $MIRROR bookworm"
  cat >/etc/apt/sources.list.d/mcp-bookworm-src.sources <<SRC
Types: deb-src
URIs: $MIRROR
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  apt-get update -qq
  have_src || { log "no source package 'kubernetes' available from apt"; exit 1; }
fi
log "installing build dependencies"
apt-get install -y -qq \
  golang-go golang-1.19-go gcc libc6-dev make rsync jq etcd-server dpkg-dev \
  golang-github-modern-go-reflect2-dev >/dev/null

WORK="$(mktemp -d /tmp/k8s-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
log "apt-get source kubernetes (in $WORK)"
apt-get source -qq kubernetes >"$WORK/source.log" 2>&1 || { cat "$WORK/source.log" >&2; exit 1; }
cd kubernetes-*/
log "source: $(basename "$PWD")"
# Go 1.19 crashes the vendored reflect2 at run time; Debian's packaged copy is fixed.
R2=vendor/github.com/modern-go/reflect2
rm -f "$R2"/*.go
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$R2"/
rm -f "$R2"/*_test.go
# The machine's own `go` (first in PATH) is a current release that cannot build 1.20:
# use Debian's Go 1.19 explicitly, and never let it switch toolchains.
export PATH="/usr/lib/go-1.19/bin:$PATH" GOTOOLCHAIN=local
[[ -x /usr/lib/go-1.19/bin/go ]] || { log "Debian's Go 1.19 (golang-1.19-go) is missing"; exit 1; }
export GOPROXY=off GO111MODULE=on GOFLAGS=-mod=vendor
log "building kube-apiserver + kube-controller-manager (go $(go env GOVERSION))"
start=$SECONDS
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$WORK/build.log" 2>&1 \
  || { tail -50 "$WORK/build.log" >&2; exit 1; }
log "built in $((SECONDS - start))s"
for bin in kube-apiserver kube-controller-manager; do
  "_output/bin/$bin" --version >/dev/null || { log "$bin does not run"; exit 1; }
done
mkdir -p "$CACHE"
for bin in kube-apiserver kube-controller-manager; do
  cp "_output/bin/$bin" "$CACHE/.$bin.tmp"
  mv "$CACHE/.$bin.tmp" "$CACHE/$bin"
done
echo "built into $CACHE"
