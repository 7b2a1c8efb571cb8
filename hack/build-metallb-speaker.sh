#!/usr/bin/env bash
# Builds MetalLB's speaker from the Go module proxy, for the test that runs a real MetalLB speaker against the test
# API server. Idempotent: a version already built is reused.
#
#   hack/build-metallb-speaker.sh      # builds into bin/metallb/<version>/speaker and prints that directory last
#
# v0.16.1, not the v0.16.2 the operator's API types come from: v0.16.2 requires github.com/metallb/frr-k8s v0.0.27,
# which the module proxy does not serve. The speaker is built in a throwaway module, like the API server.
set -euo pipefail

METALLB_VERSION="${METALLB_VERSION:-0.16.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${METALLB_SPEAKER_DIR:-$ROOT/bin/metallb/$METALLB_VERSION}"

log() { echo "[metallb-speaker] $*" >&2; }

mkdir -p "$OUT"
if [ -x "$OUT/speaker" ] && [ "$(cat "$OUT/.speaker.version" 2>/dev/null)" = "v$METALLB_VERSION" ]; then
  log "speaker v$METALLB_VERSION cached in $OUT"
  echo "$OUT"
  exit 0
fi
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
log "building MetalLB's speaker v$METALLB_VERSION from the module proxy (first time only; a few minutes on 2 cores)"
printf 'module metallbspeaker.local\ngo 1.26\n' > "$WORK/go.mod"
(cd "$WORK" && GOFLAGS=-mod=mod go get "go.universe.tf/metallb/speaker@v$METALLB_VERSION" >/dev/null 2>"$WORK/get.log") || { cat "$WORK/get.log" >&2; exit 1; }
log "speaker: compiling"
(cd "$WORK" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$OUT/speaker.tmp" go.universe.tf/metallb/speaker)
mv "$OUT/speaker.tmp" "$OUT/speaker"
echo "v$METALLB_VERSION" > "$OUT/.speaker.version"
log "speaker: done"
echo "$OUT"
