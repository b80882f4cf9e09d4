#!/usr/bin/env bash
# Build kube-apiserver, kube-controller-manager and kube-scheduler from the Go module
# k8s.io/kubernetes (default v1.37.2; any published release, e.g. `build-k8s-module.sh 1.34.4`),
# once. K8S_BINS narrows the set (e.g. K8S_BINS="kube-apiserver kube-controller-manager" for the
# oldest-minor smoke, whose pods the node agent binds: no scheduler needed). The binaries are cached under $MCP_K8S_CACHE (default ~/.cache/mcp-operator/k8s-VERSION);
# later runs return at once.
#
# k8s.io/kubernetes's go.mod replaces every k8s.io/* staging module with ./staging/src/...; a module
# that consumes it must replace each with its published v0.MINOR.PATCH. That list is DERIVED from
# the downloaded go.mod (its replace block), never kept by hand, so a release that adds or drops a
# staging module needs no edit here. Needs `go` (>= the go.mod's `go` line, or GOTOOLCHAIN set to
# a newer toolchain) and the Go module proxy. A cold build takes ~15-25 minutes on 2 cores.
set -euo pipefail
VERSION="${1:-${MCP_K8S_VERSION:-1.37.2}}"
VERSION="${VERSION#v}"
CACHE="${MCP_K8S_CACHE:-$HOME/.cache/mcp-operator/k8s-$VERSION}"
read -ra BINS <<<"${K8S_BINS:-kube-apiserver kube-controller-manager kube-scheduler}"
log() { echo "build-k8s-module: $*" >&2; }
is_built() {
  local b
  for b in "${BINS[@]}"; do [[ -x "$CACHE/$b" ]] || return 1; done
}
if is_built; then
  echo "k8s $VERSION binaries cached in $CACHE"; exit 0
fi
mkdir -p "$(dirname "$CACHE")"
# One build at a time (e.g. two test sessions starting together).
exec 9>"$(dirname "$CACHE")/.build-k8s-$VERSION.lock"
flock 9
if is_built; then
  echo "k8s $VERSION binaries cached in $CACHE"; exit 0
fi
command -v go >/dev/null || { log "no 'go' in PATH"; exit 1; }

WORK="$(mktemp -d /tmp/k8s-module-build.XXXXXX)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
cd "$WORK"
start=$SECONDS
log "downloading k8s.io/kubernetes@v$VERSION"
go mod download "k8s.io/kubernetes@v$VERSION"
GOMOD="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/v$VERSION.mod"
[[ -s $GOMOD ]] || { log "no go.mod for k8s.io/kubernetes@v$VERSION"; exit 1; }

# The staging modules: every `k8s.io/x => ./staging/...` replace line of the downloaded go.mod.
mapfile -t STAGING < <(awk '$2 == "=>" && $3 ~ /^\.\/staging\// {print $1}' "$GOMOD" | sort -u)
((${#STAGING[@]} > 10)) || { log "found only ${#STAGING[@]} staging replaces in $GOMOD"; exit 1; }
GOLINE="$(awk '$1 == "go" {print $2; exit}' "$GOMOD")"
log "${#STAGING[@]} staging modules -> v0.${VERSION#1.}; go.mod wants go $GOLINE"

go mod init mcp-operator.dev/k8s-build >/dev/null 2>&1
go mod edit -go="$GOLINE"
# Same run-time defaults (GODEBUG) the release binaries get from their own go.mod.
while read -r gd; do
  go mod edit -godebug="$gd"
done < <(awk '$1 == "godebug" && $2 != "(" {print $2}' "$GOMOD")
for m in "${STAGING[@]}"; do
  go mod edit -replace="$m=$m@v0.${VERSION#1.}"
done
go mod edit -require="k8s.io/kubernetes@v$VERSION"
PKGS=()
for b in "${BINS[@]}"; do PKGS+=("k8s.io/kubernetes/cmd/$b"); done
# `go get -tool` resolves the whole graph (through the replaces) and records go.sum. Each
# package is pinned @vVERSION: a bare path means @upgrade, i.e. the NEWEST k8s.io/kubernetes,
# whose packages the older staging replaces lack.
GOFLAGS=-mod=mod go get -tool "${PKGS[@]/%/@v$VERSION}" >"$WORK/get.log" 2>&1 \
  || { tail -30 "$WORK/get.log" >&2; exit 1; }
log "resolved in $((SECONDS - start))s; building with $(go env GOVERSION)"

# Version stamps as the release build sets them (kubectl and skew checks read gitVersion).
MAJOR="${VERSION%%.*}"; MINOR="${VERSION#*.}"; MINOR="${MINOR%%.*}"
LDFLAGS="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  LDFLAGS+=" -X $pkg.gitVersion=v$VERSION -X $pkg.gitMajor=$MAJOR -X $pkg.gitMinor=$MINOR"
  LDFLAGS+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
done
mkdir -p out
build_start=$SECONDS
CGO_ENABLED=0 go build -trimpath -ldflags="$LDFLAGS" -o out/ "${PKGS[@]}" >"$WORK/build.log" 2>&1 \
  || { tail -50 "$WORK/build.log" >&2; exit 1; }
log "built in $((SECONDS - build_start))s (total $((SECONDS - start))s)"
for b in "${BINS[@]}"; do
  "out/$b" --version | grep -q "v$VERSION" || { log "$b does not report v$VERSION"; exit 1; }
done
mkdir -p "$CACHE"
for b in "${BINS[@]}"; do
  cp "out/$b" "$CACHE/.$b.tmp"
  mv "$CACHE/.$b.tmp" "$CACHE/$b"
done
echo "built k8s $VERSION into $CACHE in $((SECONDS - start))s"
