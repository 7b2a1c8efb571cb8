#!/usr/bin/env bash
# Fetches, all at once, every Go module a make target will need: the repository's three modules and the throwaway
# modules of the tools built from the module proxy (kube-apiserver, etcd, kubectl, MetalLB's speaker, krew, the Cilium BGP harness, Calico's confd).
# `make test` and `make bench` start it in the background first, so that on a fresh machine the downloads run while
# the first packages compile instead of one after another between builds. On a warm machine it finds everything in
# the module cache and ends in seconds. Downloading is all it does: whatever it has not fetched yet when a build
# needs it, that build fetches itself (Go's module cache is safe for concurrent use).
#
#   hack/prefetch.sh [LOG]      # waits for every download; LOG (default: stderr) gets one line per part
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOG="${1:-/dev/stderr}"
cd "$ROOT"

part() {
  local name="$1"; shift
  local start=$SECONDS out
  if out="$("$@" 2>&1)"; then
    echo "[prefetch] $name: fetched in $((SECONDS - start)) s" >>"$LOG"
  else
    # Not fatal: the build that needs it fetches it again and reports the error where it matters.
    echo "[prefetch] $name: failed after $((SECONDS - start)) s: ${out: -500}" >>"$LOG"
  fi
}

part "main module" go mod download &
part "test/upstream" bash -c 'cd test/upstream && go mod download' &
part "test/install" bash -c 'cd test/install && go mod download' &
part "kube-apiserver, etcd, kubectl, kubelet, kube-controller-manager, kube-scheduler" hack/build-envtest-assets.sh --download-only --cluster &
part "MetalLB speaker" hack/build-metallb-speaker.sh --download-only &
part "krew" hack/build-krew.sh --download-only &
part "Cilium BGP harness" hack/build-cilium-bgp.sh --download-only &
part "Calico confd" hack/build-calico-confd.sh --download-only &
wait
echo "[prefetch] done in $SECONDS s" >>"$LOG"
