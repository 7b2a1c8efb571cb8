#!/usr/bin/env bash
# Builds krew (the kubectl plugin manager) from the Go module proxy, for the test that installs the plugin the way
# its users do: `kubectl krew install --manifest --archive` of what hack/plugin-release.sh packages. Idempotent.
#
#   hack/build-krew.sh                  # builds bin/krew/<version>/krew and prints its path last
#   hack/build-krew.sh --download-only  # only fetches the modules the build needs (hack/prefetch.sh)
set -euo pipefail

download_only=false
[ "${1:-}" = "--download-only" ] && download_only=true

KREW_VERSION="${KREW_VERSION:-0.4.3}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${KREW_DIR:-$ROOT/bin/krew/$KREW_VERSION}"

log() { echo "[krew] $*" >&2; }

if [ -x "$OUT/krew" ]; then
  log "krew v$KREW_VERSION cached in $OUT"
else
  $download_only || log "building krew v$KREW_VERSION from the module proxy"
  mkdir -p "$OUT"
  WORK="$(mktemp -d)"
  trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT
  printf 'module krewbuild.local\ngo 1.26\n' > "$WORK/go.mod"
  (cd "$WORK" && GOFLAGS=-mod=mod go get "sigs.k8s.io/krew/cmd/krew@v$KREW_VERSION" >/dev/null 2>"$WORK/get.log") || { cat "$WORK/get.log" >&2; exit 1; }
  $download_only && exit 0
  (cd "$WORK" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$OUT/krew.tmp" sigs.k8s.io/krew/cmd/krew)
  mv "$OUT/krew.tmp" "$OUT/krew"
fi
echo "$OUT/krew"
