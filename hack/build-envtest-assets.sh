#!/usr/bin/env bash
# Builds the binaries envtest needs (kube-apiserver, etcd, kubectl) from the Go module proxy, because prebuilt
# release binaries cannot be downloaded here. Idempotent: a version already built is reused.
#
#   hack/build-envtest-assets.sh                  # builds into bin/k8s/<K8S_VERSION>/ and prints that directory last
#   hack/build-envtest-assets.sh --download-only  # only fetches the modules a build needs (hack/prefetch.sh)
#   hack/build-envtest-assets.sh --cluster        # also kubelet, kube-controller-manager and kube-scheduler, for the
#                                                 # single-node cluster of test/cluster (same cache, same pins)
#
# kube-apiserver lives in k8s.io/kubernetes, whose go.mod points every k8s.io/* staging module at ./staging/...;
# such replace lines do not survive `go install`, so each binary is built in a throwaway module that pins the
# staging modules to their published v0.x tags instead. etcd's server module has the same kind of replace lines.
set -euo pipefail

download_only=false cluster=false
for arg in "$@"; do
  case "$arg" in
    --download-only) download_only=true ;;
    --cluster) cluster=true ;;
    *) echo "unknown argument $arg" >&2; exit 2 ;;
  esac
done

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

# build_k8s BINARY...: builds commands of k8s.io/kubernetes with the staging modules pinned, all in one throwaway
# module and one `go build`, so that the packages they share are resolved and compiled once, in one action graph.
build_k8s() {
  local dir="$WORK/k8s" bins=() pkgs=() b
  for b in "$@"; do
    if have "$b" "v$K8S_VERSION"; then log "$b v$K8S_VERSION cached in $OUT"; continue; fi
    bins+=("$b") pkgs+=("k8s.io/kubernetes/cmd/$b")
  done
  [ ${#bins[@]} -gt 0 ] || return 0
  mkdir -p "$dir/out"
  local gomod
  gomod="$(cd "$dir" && go mod download -json "k8s.io/kubernetes@v$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')"
  {
    echo "module envtestassets.local/k8s"
    echo "go 1.26"
    echo "require k8s.io/kubernetes v$K8S_VERSION"
    grep -E '^\s*k8s\.io/[a-z0-9-]+ => \./staging/' "$gomod" | awk -v v="$STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
  } > "$dir/go.mod"
  log "${bins[*]}: resolving and downloading modules"
  (cd "$dir" && GOFLAGS=-mod=mod go get "${pkgs[@]/%/@v$K8S_VERSION}" >/dev/null 2>"$dir/get.log") || { cat "$dir/get.log" >&2; exit 1; }
  $download_only && return 0
  log "building ${bins[*]} v$K8S_VERSION from the module proxy (first time only; about 12 minutes on 2 cores)"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
      -X k8s.io/component-base/version.gitVersion=v$K8S_VERSION \
      -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=${K8S_VERSION#1.} \
      -X k8s.io/client-go/pkg/version.gitVersion=v$K8S_VERSION" -o "$dir/out/" "${pkgs[@]}")
  for b in "${bins[@]}"; do
    mv "$dir/out/$b" "$OUT/$b"
    echo "v$K8S_VERSION" > "$OUT/.$b.version"
  done
  log "${bins[*]}: done"
}

build_etcd() {
  local dir="$WORK/etcd"
  if have etcd "v$ETCD_VERSION"; then log "etcd v$ETCD_VERSION cached in $OUT"; return; fi
  mkdir -p "$dir"
  printf 'module envtestassets.local/etcd\ngo 1.26\n' > "$dir/go.mod"
  log "etcd: resolving and downloading modules"
  (cd "$dir" && GOFLAGS=-mod=mod go get "go.etcd.io/etcd/server/v3@v$ETCD_VERSION" >/dev/null 2>"$dir/get.log") || { cat "$dir/get.log" >&2; exit 1; }
  $download_only && return 0
  log "building etcd v$ETCD_VERSION from the module proxy (first time only; about 2 minutes)"
  (cd "$dir" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$OUT/etcd.tmp" go.etcd.io/etcd/server/v3)
  mv "$OUT/etcd.tmp" "$OUT/etcd"
  echo "v$ETCD_VERSION" > "$OUT/.etcd.version"
  log "etcd: done"
}

build_etcd
if [ "${ENVTEST_SKIP_KUBECTL:-}" = "1" ]; then build_k8s kube-apiserver; else build_k8s kube-apiserver kubectl; fi
if $cluster; then build_k8s kubelet kube-controller-manager kube-scheduler; fi
$download_only || echo "$OUT"
