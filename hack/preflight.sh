#!/usr/bin/env bash
# What a make target needs from this machine, checked in a second, before anything is built: every missing tool is
# named with the Debian package that has it, and the one command that installs them all.
#
#   hack/preflight.sh test|bench|demo     exit 1, saying what is missing, unless everything is there
#   hack/preflight.sh --install test      install the missing packages (as root; what `make deps` runs)
#   hack/preflight.sh --packages test     print the Debian packages the target needs, one per line
#
# This is the one list of system packages: .ci/run installs them through `make deps`.
set -euo pipefail

install=false packages=false
case "${1:-}" in
  --install) install=true; shift ;;
  --packages) packages=true; shift ;;
esac
target="${1:-test}"

# command:package:why, per target. Go itself is not a Debian package here (Debian's is older than 1.26).
base=(
  "make:make:the build"
  "git:git:go build stamps the version from git"
  "tar:tar:packaging the kubectl plugin"
  "gzip:gzip:packaging the kubectl plugin"
  "sha256sum:coreutils:packaging the kubectl plugin"
)
routers=(
  "bird:bird2:the BIRD backend's tests run a real BIRD 2 daemon"
  "birdc:bird2:the BIRD backend drives BIRD through birdc"
  "ip:iproute2:tests create network namespaces and veth pairs"
  "vtysh:frr:the embedded speaker is tested against FRR's bgpd as the upstream router"
)
calico=(
  "apt-get:apt:BIRD 1.6.8 for Calico's confd is fetched with apt-get download (it conflicts with bird2, so it is unpacked, not installed)"
  "dpkg-deb:dpkg:unpacking BIRD 1.6.8 (make calico-confd)"
)
cluster=(
  "containerd:containerd:test/install/singlenode runs a real kubelet over containerd (on private paths)"
  "ctr:containerd:importing the images built here into that containerd"
  "runc:runc:containerd's OCI runtime"
  "/usr/lib/cni/bridge:containernetworking-plugins:the pod network of that cluster (bridge and host-local CNI plugins)"
  "iptables-save:iptables:checking that the cluster left the host's iptables as it found them"
  "setpriv:util-linux:running the agent's init step with only the capabilities its container has"
)
case "$target" in
  test) needs=("${base[@]}" "${routers[@]}" "${calico[@]}" "${cluster[@]}") root=true ;;
  bench) needs=("${base[@]}" "${routers[@]}") root=true ;;
  demo) needs=("${base[@]}") root=false ;;
  *) echo "preflight: unknown target $target (test, bench or demo)" >&2; exit 2 ;;
esac

if $packages; then
  for n in "${needs[@]}"; do IFS=: read -r _ pkg _ <<<"$n"; echo "$pkg"; done | sort -u
  exit 0
fi

missing_pkgs=() problems=()
for n in "${needs[@]}"; do
  IFS=: read -r cmd pkg why <<<"$n"
  if ! command -v "$cmd" >/dev/null 2>&1; then
    problems+=("  $cmd (Debian package $pkg): $why")
    missing_pkgs+=("$pkg")
  fi
done
pkgs="$(printf '%s\n' "${missing_pkgs[@]}" | sort -u | tr '\n' ' ')"
pkgs="${pkgs% }"

if $install; then
  if [ -z "$pkgs" ]; then
    echo "preflight: every package make $target needs is installed"
    exit 0
  fi
  if [ "$(id -u)" != 0 ]; then
    echo "preflight: installing $pkgs needs root: sudo make deps" >&2
    exit 1
  fi
  echo "preflight: installing $pkgs"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $pkgs
  exit 0
fi

go_problem=""
if ! command -v go >/dev/null 2>&1; then
  go_problem="  go: Go 1.26 or newer (https://go.dev/dl/), on PATH"
else
  v="$(go env GOVERSION 2>/dev/null || true)"   # go1.26.0
  minor="$(sed -n 's/^go1\.\([0-9]*\).*/\1/p' <<<"$v")"
  if [ -z "$minor" ] || [ "$minor" -lt 26 ]; then
    go_problem="  go: $v found; Go 1.26 or newer is needed (https://go.dev/dl/)"
  fi
fi
root_problem=""
if $root && [ "$(id -u)" != 0 ]; then
  root_problem="  root: the tests create network namespaces, veth pairs and test addresses (run make $target as root, e.g. in a VM or container)"
fi

if [ ${#problems[@]} -eq 0 ] && [ -z "$go_problem" ] && [ -z "$root_problem" ]; then
  exit 0
fi
{
  echo "make $target needs what this machine lacks:"
  [ -n "$go_problem" ] && echo "$go_problem"
  [ ${#problems[@]} -gt 0 ] && printf '%s\n' "${problems[@]}"
  [ -n "$root_problem" ] && echo "$root_problem"
  if [ -n "$pkgs" ]; then
    sudo="sudo "
    [ "$(id -u)" = 0 ] && sudo=""
    echo "Install the packages with:"
    echo "  ${sudo}make deps        # = apt-get update && apt-get install -y --no-install-recommends $pkgs"
  fi
} >&2
exit 1
