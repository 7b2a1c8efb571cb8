#!/usr/bin/env bash
# Builds MetalLB's speaker from the Go module proxy, for the test that runs a real MetalLB speaker against the test
# API server, and a validator that runs MetalLB's own configuration validation (its internal/config package, the
# code the speaker and controller use to accept or refuse a configuration) on objects the backend writes.
# Idempotent: a version already built is reused.
#
#   hack/build-metallb-speaker.sh                  # builds bin/metallb/<version>/{speaker,validate}, prints that directory last
#   hack/build-metallb-speaker.sh --download-only  # only fetches the modules the builds need (hack/prefetch.sh)
#
# The validator is the only code of ours that is compiled inside MetalLB's module (Go lets only a module's own
# packages import its internal/ ones): a copy of the module from the module cache, with this script's small main
# added under cmd/anycast-validate, in a temporary directory. Nothing of MetalLB's is copied into this repository.
#
# v0.16.1, not the v0.16.2 the operator's API types come from: v0.16.2 requires github.com/metallb/frr-k8s v0.0.27,
# which the module proxy does not serve. The speaker is built in a throwaway module, like the API server.
set -euo pipefail

download_only=false
[ "${1:-}" = "--download-only" ] && download_only=true

METALLB_VERSION="${METALLB_VERSION:-0.16.1}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${METALLB_SPEAKER_DIR:-$ROOT/bin/metallb/$METALLB_VERSION}"

log() { echo "[metallb-speaker] $*" >&2; }

mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

if [ -x "$OUT/speaker" ] && [ "$(cat "$OUT/.speaker.version" 2>/dev/null)" = "v$METALLB_VERSION" ]; then
  log "speaker v$METALLB_VERSION cached in $OUT"
else
  mkdir -p "$WORK/speaker"
  printf 'module metallbspeaker.local\ngo 1.26\n' > "$WORK/speaker/go.mod"
  log "speaker: resolving and downloading modules"
  (cd "$WORK/speaker" && GOFLAGS=-mod=mod go get "go.universe.tf/metallb/speaker@v$METALLB_VERSION" >/dev/null 2>"$WORK/get.log") || { cat "$WORK/get.log" >&2; exit 1; }
  $download_only && exit 0   # the validator's module is the speaker's, fetched by now
  log "building MetalLB's speaker v$METALLB_VERSION from the module proxy (first time only; a few minutes on 2 cores)"
  (cd "$WORK/speaker" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$OUT/speaker.tmp" go.universe.tf/metallb/speaker)
  mv "$OUT/speaker.tmp" "$OUT/speaker"
  echo "v$METALLB_VERSION" > "$OUT/.speaker.version"
  log "speaker: done"
fi

if $download_only; then
  exit 0
elif [ -x "$OUT/validate" ] && [ "$(cat "$OUT/.validate.version" 2>/dev/null)" = "v$METALLB_VERSION-1" ]; then
  log "validate v$METALLB_VERSION cached in $OUT"
else
  log "building MetalLB's configuration validator v$METALLB_VERSION"
  mod="$(cd "$ROOT" && go mod download -json "go.universe.tf/metallb@v$METALLB_VERSION" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p')"
  cp -r "$mod" "$WORK/metallb"
  chmod -R u+w "$WORK/metallb"
  mkdir -p "$WORK/metallb/cmd/anycast-validate"
  cat > "$WORK/metallb/cmd/anycast-validate/main.go" <<'GO'
// Command anycast-validate runs MetalLB's own configuration validation on the objects given as JSON on stdin
// (internal/config.ClusterResources) for a BGP mode (native, frr, frr-k8s): it prints "ok" and exits 0 when MetalLB
// would accept the configuration, prints MetalLB's error and exits 1 when it would refuse it.
package main

import (
	"encoding/json"
	"fmt"
	"os"

	"go.universe.tf/metallb/internal/config"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: anycast-validate native|frr|frr-k8s < resources.json")
		os.Exit(2)
	}
	var res config.ClusterResources
	if err := json.NewDecoder(os.Stdin).Decode(&res); err != nil {
		fmt.Fprintln(os.Stderr, "decoding the resources:", err)
		os.Exit(2)
	}
	if _, err := config.For(res, config.ValidationFor(os.Args[1])); err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("ok")
}
GO
  log "validate: compiling"
  (cd "$WORK/metallb" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$OUT/validate.tmp" ./cmd/anycast-validate)
  mv "$OUT/validate.tmp" "$OUT/validate"
  echo "v$METALLB_VERSION-1" > "$OUT/.validate.version"
  log "validate: done"
fi
echo "$OUT"
