#!/usr/bin/env bash
# Packages the kubectl plugin for krew: per platform an archive of kubectl-anycast and LICENSE, and the krew
# manifest (dist/plugin/anycast.yaml) naming each archive with its sha256, for a release at PLUGIN_URL_BASE.
#
#   hack/plugin-release.sh                                # every platform of a release
#   PLATFORMS=linux/amd64 hack/plugin-release.sh          # just one (the install test does this)
#
# Install from the files without an index:
#   kubectl krew install --manifest=dist/plugin/anycast.yaml --archive=dist/plugin/kubectl-anycast_linux_amd64.tar.gz
# or copy the binary onto PATH: kubectl finds any executable named kubectl-anycast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The plugin's version follows the chart's appVersion: krew wants a semantic version.
VERSION="${PLUGIN_VERSION:-$(sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' "$ROOT/charts/anycast-operator/Chart.yaml")}"
PLATFORMS="${PLATFORMS:-linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 windows/amd64}"
PLUGIN_URL_BASE="${PLUGIN_URL_BASE:-https://github.com/anycast-operator/anycast-operator/releases/download/v$VERSION}"
OUT="${PLUGIN_DIR:-$ROOT/dist/plugin}"

log() { echo "[plugin-release] $*" >&2; }

mkdir -p "$OUT"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

platforms=""
for p in $PLATFORMS; do
  os="${p%/*}" arch="${p#*/}" exe=""
  [ "$os" = windows ] && exe=.exe
  log "building kubectl-anycast v$VERSION for $os/$arch"
  mkdir -p "$WORK/$os-$arch"
  (cd "$ROOT" && CGO_ENABLED=0 GOOS="$os" GOARCH="$arch" go build -trimpath -ldflags "-s -w -X main.version=v$VERSION" \
    -o "$WORK/$os-$arch/kubectl-anycast$exe" ./cmd/kubectl-anycast)
  cp "$ROOT/LICENSE" "$WORK/$os-$arch/"
  archive="kubectl-anycast_${os}_${arch}.tar.gz"
  # Reproducible archives: fixed owner, order and times, so the sha256 depends on the binary alone.
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$WORK/$os-$arch" -cf - "kubectl-anycast$exe" LICENSE | gzip -n > "$OUT/$archive"
  sum="$(sha256sum "$OUT/$archive" | cut -d' ' -f1)"
  platforms+="  - selector:
      matchLabels:
        os: $os
        arch: $arch
    uri: $PLUGIN_URL_BASE/$archive
    sha256: $sum
    bin: kubectl-anycast$exe
    files:
      - {from: kubectl-anycast$exe, to: .}
      - {from: LICENSE, to: .}
"
done

cat > "$OUT/anycast.yaml" <<YAML
apiVersion: krew.googlecontainertools.github.com/v1alpha2
kind: Plugin
metadata:
  name: anycast
spec:
  version: v$VERSION
  homepage: https://github.com/anycast-operator/anycast-operator
  shortDescription: Show, explain and preview anycast-operator's BGP announcements
  description: |
    kubectl anycast shows which nodes announce which anycast prefix and why, for clusters run by anycast-operator:
      status [PREFIX]          per prefix and node: state, since, reason, sessions, withdrawal permit; the budget
      explain PREFIX NODE      why the node does or does not announce the prefix, in sentences
      plan -f FILE...          what applying the files would announce or withdraw where (the manager's own
                               planner on the live cluster); --max-withdraw N refuses a change for a pipeline
      drain NODE / undrain NODE
  caveats: |
    The plugin reads the cluster's Nodes and anycast.dev objects; plan's server-side dry run needs the rights to
    apply the files' objects (or pass --server-dry-run=false).
  platforms:
$platforms
YAML
log "wrote $OUT/anycast.yaml ($(echo "$PLATFORMS" | wc -w) platform(s))"
