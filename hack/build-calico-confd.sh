#!/usr/bin/env bash
# Builds Calico's confd (the program calico-node runs to render BIRD's configuration from Calico's resources) from the
# Go module proxy into bin/calico/<commit>/confd, with Calico's templates and conf.d beside it, and extracts Debian's
# BIRD 1.6.8 (Calico's templates are BIRD 1.x; the bird package conflicts with bird2, so it is unpacked, not
# installed) into bin/bird1/. Both are cached.
#
#   hack/build-calico-confd.sh                  # builds both, prints the confd path last
#   hack/build-calico-confd.sh --download-only  # only fetches the Go modules (hack/prefetch.sh)
#
# The only Calico the proxy serves is a release-v3.28 commit, published as a pseudo-version of the calico module
# (v3 tags lack a /v3 module path). Its go.mod replaces github.com/projectcalico/api with a directory the module zip
# does not hold, and the one api version the proxy serves (the operator's, from Calico master) typed three constants
# that v3.28's validator compares with strings. So the build works in a throwaway module: Calico's replace block, and
# a copy of the served api module with those three constants untyped (the only change). Nothing of Calico's is copied
# into this repository.
set -euo pipefail

download_only=false
[ "${1:-}" = "--download-only" ] && download_only=true

CALICO_MODULE_VERSION="${CALICO_MODULE_VERSION:-v1.11.0-cni-plugin.0.20250813170300-a0db560f0520}"
CALICO_API_VERSION="${CALICO_API_VERSION:-v0.0.0-20250916150628-d4009e4d7c50}"
BIRD1_VERSION="${BIRD1_VERSION:-1.6.8}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${CALICO_CONFD_DIR:-$ROOT/bin/calico/${CALICO_MODULE_VERSION##*-}}"
BIRD1_DIR="${BIRD1_DIR:-$ROOT/bin/bird1/$BIRD1_VERSION}"

log() { echo "[calico-confd] $*" >&2; }

WORK="$(mktemp -d)"
trap 'chmod -R u+w "$WORK" 2>/dev/null; rm -rf "$WORK"' EXIT

moddir() { (cd "$ROOT" && GOFLAGS=-mod=mod go mod download -json "$1" | sed -n 's/.*"Dir": "\(.*\)",*/\1/p'); }

stamp="$CALICO_MODULE_VERSION $CALICO_API_VERSION 2"
if [ -x "$OUT/confd" ] && [ "$(cat "$OUT/.version" 2>/dev/null)" = "$stamp" ] && ! $download_only; then
  log "confd cached in $OUT"
else
  calico="$(moddir "github.com/projectcalico/calico@$CALICO_MODULE_VERSION")" || { log "could not download github.com/projectcalico/calico@$CALICO_MODULE_VERSION"; exit 1; }
  api="$(moddir "github.com/projectcalico/api@$CALICO_API_VERSION")" || { log "could not download github.com/projectcalico/api@$CALICO_API_VERSION"; exit 1; }
  [ -n "$calico" ] && [ -n "$api" ] || { log "could not find Calico's modules in the module cache"; exit 1; }
  cp -r "$api" "$WORK/api"
  chmod -R u+w "$WORK/api"
  # IptablesBackendLegacy/NFTables/Auto: typed in the served api, compared with a string by v3.28's validator.
  f="$(grep -rl 'IptablesBackendLegacy *IptablesBackend *=' "$WORK/api/pkg/apis/projectcalico/v3" || true)"
  [ -n "$f" ] || { log "the api module no longer types IptablesBackendLegacy: revisit the patch"; exit 1; }
  sed -i -E 's/^(\s*IptablesBackend(Legacy|NFTables|Auto))\s+IptablesBackend\s*=/\1 =/' "$f"
  mkdir -p "$WORK/confd"
  {
    printf 'module calicoconfd.local\n\ngo 1.26\n\nrequire github.com/projectcalico/calico %s\n\n' "$CALICO_MODULE_VERSION"
    awk '/^replace \(/,/^\)/' "$calico/go.mod" | sed 's#github.com/projectcalico/api => ./api#github.com/projectcalico/api => ../api#'
  } > "$WORK/confd/go.mod"
  log "confd: resolving and downloading modules"
  # tidy finds no package of this module that imports Calico and would drop the require: pin it again after.
  (cd "$WORK/confd" && GOFLAGS=-mod=mod go mod tidy -e >/dev/null 2>"$WORK/tidy.log" || true)
  (cd "$WORK/confd" && go mod edit -require="github.com/projectcalico/calico@$CALICO_MODULE_VERSION")
  (cd "$WORK/confd" && GOFLAGS=-mod=mod go list -deps github.com/projectcalico/calico/confd >/dev/null 2>"$WORK/get.log") || { cat "$WORK/tidy.log" "$WORK/get.log" >&2; exit 1; }
  $download_only && exit 0
  log "building Calico's confd (release-v3.28, $CALICO_MODULE_VERSION) from the module proxy (first time only; a few minutes on 2 cores)"
  mkdir -p "$OUT"
  (cd "$WORK/confd" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$OUT/confd.tmp" github.com/projectcalico/calico/confd)
  go version -m "$OUT/confd.tmp" | grep -q "github.com/projectcalico/calico[[:space:]]*$CALICO_MODULE_VERSION" ||
    { log "the confd built is not from github.com/projectcalico/calico@$CALICO_MODULE_VERSION"; exit 1; }
  mv "$OUT/confd.tmp" "$OUT/confd"
  # Calico's templates and their confd resources (conf.d), which the test points at its own paths and BIRDs.
  rm -rf "$OUT/templates" "$OUT/conf.d"
  cp -r "$calico/confd/etc/calico/confd/templates" "$calico/confd/etc/calico/confd/conf.d" "$OUT/"
  chmod -R u+w "$OUT/templates" "$OUT/conf.d"
  echo "$stamp" > "$OUT/.version"
  log "confd: done"
fi

if [ -x "$BIRD1_DIR/usr/sbin/bird" ]; then
  log "BIRD $BIRD1_VERSION cached in $BIRD1_DIR"
else
  command -v apt-get >/dev/null || { log "BIRD $BIRD1_VERSION comes from Debian's bird package: apt-get is needed"; exit 1; }
  log "fetching Debian's bird ($BIRD1_VERSION) with apt-get download (unpacked, not installed: it conflicts with bird2)"
  # Package lists that are missing or stale fail the download: refresh them once (as root) and try again.
  (cd "$WORK" && apt-get download "bird=$BIRD1_VERSION*" >/dev/null 2>"$WORK/apt.log") ||
    { [ "$(id -u)" = 0 ] && apt-get update -qq >/dev/null 2>&1 && (cd "$WORK" && apt-get download "bird=$BIRD1_VERSION*" >/dev/null 2>"$WORK/apt.log"); } || {
    cat "$WORK/apt.log" >&2; log "apt-get download bird=$BIRD1_VERSION failed: run apt-get update as root and retry"; exit 1; }
  # Unpacked aside and checked first, so that a wrong package never looks cached.
  dpkg-deb -x "$WORK"/bird_*.deb "$WORK/bird1"
  "$WORK/bird1/usr/sbin/bird" --version 2>&1 | grep -q "$BIRD1_VERSION" || { log "the unpacked bird is not $BIRD1_VERSION"; exit 1; }
  rm -rf "$BIRD1_DIR" && mkdir -p "$(dirname "$BIRD1_DIR")" && mv "$WORK/bird1" "$BIRD1_DIR"
  log "BIRD $BIRD1_VERSION: done"
fi
echo "$OUT/confd"
