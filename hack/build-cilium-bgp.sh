#!/usr/bin/env bash
# Builds the Cilium BGP harness (test/ciliumbgp: Cilium's own BGP operator, LB-IPAM and agent BGP control plane
# cells, from Cilium's module at the version its go.mod names) into bin/cilium-bgp/<version>/ciliumbgp, for the
# end-to-end tests that run Cilium's code against the test API server. Idempotent: a binary built from the same
# harness sources is reused.
#
#   hack/build-cilium-bgp.sh                  # builds it, prints its path last
#   hack/build-cilium-bgp.sh --download-only  # only fetches the modules the build needs (hack/prefetch.sh)
#
# The harness is a module of its own (Cilium builds against k8s.io v0.36, the operator's module is at v0.37); nothing
# of Cilium's is copied into this repository, its code comes from the module proxy.
set -euo pipefail

download_only=false
[ "${1:-}" = "--download-only" ] && download_only=true

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SRC="$ROOT/test/ciliumbgp"
VERSION="$(sed -n 's/^require github.com\/cilium\/cilium \(v[^ ]*\).*/\1/p; s/^\tgithub.com\/cilium\/cilium \(v[^ ]*\).*/\1/p' "$SRC/go.mod" | head -1)"
OUT="${CILIUM_BGP_DIR:-$ROOT/bin/cilium-bgp/$VERSION}"

log() { echo "[cilium-bgp] $*" >&2; }

if [ -n "${CILIUM_VERSION:-}" ] && [ "$CILIUM_VERSION" != "$VERSION" ]; then
  log "CILIUM_VERSION=$CILIUM_VERSION but test/ciliumbgp/go.mod requires Cilium $VERSION: change both (and internal/testenv.CiliumVersion)"
  exit 1
fi

if $download_only; then
  (cd "$SRC" && go list -deps . >/dev/null)   # the modules of the packages built, not all of go.mod
  exit 0
fi

key="$(cat "$SRC/go.mod" "$SRC/go.sum" "$SRC"/*.go | sha256sum | cut -d' ' -f1)"
mkdir -p "$OUT"
if [ -x "$OUT/ciliumbgp" ] && [ "$(cat "$OUT/.key" 2>/dev/null)" = "$key" ]; then
  log "harness (Cilium $VERSION) cached in $OUT"
else
  log "building Cilium $VERSION's BGP control plane harness from the module proxy (first time only; several minutes on 2 cores)"
  (cd "$SRC" && CGO_ENABLED=0 go build -trimpath -o "$OUT/ciliumbgp.tmp" .)
  mv "$OUT/ciliumbgp.tmp" "$OUT/ciliumbgp"
  echo "$key" > "$OUT/.key"
  log "done"
fi
echo "$OUT/ciliumbgp"
