#!/usr/bin/env bash
# Builds the binaries envtest needs (kube-apiserver, etcd, kubectl) from the Go module proxy, because prebuilt
# release binaries cannot be downloaded here. Idempotent: a version already built is reused.
#
#   hack/build-envtest-assets.sh            # builds into bin/k8s/<K8S_VERSION>/ and prints that directory last
#
# kube-apiserver lives in k8s.io/kubernetes, whose go.mod points every k8s.io/* staging module at ./staging/...;
# such replace lines do not survive `go install`, so each binary is built in a throwaway module that pins the
# staging modules to their published v0.x tags instead. etcd's server module has the same kind of replace lines.
set -euo pipefail

K8S_VERSION="${K8S_VERSION:-1.37.2}"
ETCD_VERSION="${ETCD_VERSION:-3.7.3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${ENVTEST_ASSETS_DIR:-$ROOT/bin/k8s/$K8S_VERSION}"
STAGING_VERSION="v0.${K8S_VERSION#1.}"

log() { echo "[envtest-assets] $*" >&2; }

have() { [ -x "$OUT/$1" ] && [ -f "$OUT/.$1.version" ] && [ "$(cat "$OUT/.$1.version")" = "$2" ]; }

mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

# build_k8s BINARY PACKAGE: builds one command of k8s.io/kubernetes with the staging modules pinned.
build_k8s() {
  local bin="$1" pkg="$2" dir="$WORK/$1"
  if have "$bin" "v$K8S_VERSION"; then log "$bin v$K8S_VERSION cached in $OUT"; return; fi
  log "building $bin v$K8S_VERSION from the module proxy (first time only; several minutes on 2 cores)"
  mkdir -p "$dir"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  {
    echo "module envtestassets.local/$bin"
    echo "go 1.26"
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } > "$dir/go.mod"
  log "$bin: resolving modules"
  (cd "$dir" && GOFLAGS=-mod=mod go get "$pkg@v$K8S_VERSION" >/dev/null 2>"$dir/get.log") || { cat "$dir/get.log" >&2; exit 1; }
  log "$bin: compiling"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} \
      -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION" -o "$OUT/$bin.tmp" "$pkg")
  mv "$OUT/$bin.tmp" "$OUT/$bin"
  echo "v$K8S_VERSION" > "$OUT/.$bin.version"
  log "$bin: done"
}

build_etcd() {
  local dir="$WORK/etcd"
  if have etcd "v$ETCD_VERSION"; then log "etcd v$ETCD_VERSION cached in $OUT"; return; fi
  log "building etcd v$ETCD_VERSION from the module proxy (first time only)"
  mkdir -p "$dir"
  printf 'module envtestassets.local/etcd\ngo 1.26\n' > "$dir/go.mod"
  (cd "$dir" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>"$dir/get.log") || { cat "$dir/get.log" >&2; exit 1; }
  log "etcd: compiling"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$OUT/etcd.tmp" "$OUT/etcd"
  echo "v$ETCD_VERSION" > "$OUT/.etcd.version"
  log "etcd: done"
}

build_etcd
build_k8s kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver
if [ "${ENVTEST_SKIP_KUBECTL:-}" != "1" ]; then
  build_k8s kubectl k8s.io/kubernetes/cmd/kubectl
fi
echo "$OUT"
