#!/usr/bin/env bash
# Build kube-apiserver + kube-controller-manager 1.20.2 from Debian's source package, once.
# The binaries are cached under $MCP_K8S_CACHE (default ~/.cache/mcp-operator/k8s-1.20.2);
# later runs return at once. Needs root (apt) on a Debian bookworm machine.
set -euo pipefail
CACHE="${MCP_K8S_CACHE:-$HOME/.cache/mcp-operator/k8s-1.20.2}"
if [[ -x "$CACHE/kube-apiserver" && -x "$CACHE/kube-controller-manager" ]]; then
  echo "k8s binaries cached in $CACHE"; exit 0
fi
export DEBIAN_FRONTEND=noninteractive
SRC_LIST=/etc/apt/sources.list.d/bookworm-src.sources
if [[ ! -f $SRC_LIST ]]; then
  cat >"$SRC_LIST" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
apt-get update -qq
apt-get install -y -qq golang-go rsync jq etcd-server dpkg-dev golang-github-modern-go-reflect2-dev >/dev/null
WORK="$(mktemp -d /tmp/k8s-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get source -qq kubernetes >/dev/null 2>&1
cd kubernetes-*/
# Go 1.19 crashes the vendored reflect2 at run time; Debian's packaged copy is fixed.
R2=vendor/github.com/modern-go/reflect2
rm -f "$R2"/*.go
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go "$R2"/
rm -f "$R2"/*_test.go
export GOPROXY=off GO111MODULE=on GOFLAGS=-mod=vendor
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$WORK/build.log" 2>&1 || { tail -50 "$WORK/build.log"; exit 1; }
mkdir -p "$CACHE"
cp _output/bin/kube-apiserver _output/bin/kube-controller-manager "$CACHE"/
echo "built into $CACHE"
