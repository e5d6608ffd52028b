#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's `kubernetes`
# source package, for the operator's end-to-end tests, and cache them (with etcd) under
# ~/.cache/fraud-detector/kube-1.20.2/bin. With FRAUD_KUBE_NODE=1 also kube-scheduler, kubelet,
# kube-proxy and a static `pause`, for a one-node cluster that runs pods (docs/node.md). A second run
# finds the cache and builds only what is missing.
#
# Needs root (apt) on Debian bookworm. Takes about 6 minutes on 2 cores the first time.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"

CACHE="${FRAUD_KUBE_CACHE:-$HOME/.cache/fraud-detector/kube-1.20.2}"
# The tests drive the cluster with kubectl; Debian's kubernetes-client is v1.20.2 itself.
if ! command -v kubectl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
BIN="$CACHE/bin"
PROGRAMS=(kube-apiserver kube-controller-manager)
if [[ "${FRAUD_KUBE_NODE:-}" == 1 ]]; then
  PROGRAMS+=(kube-scheduler kubelet kube-proxy)
  if [[ ! -x "$BIN/pause" ]]; then
    mkdir -p "$BIN"
    # The pod sandbox's process, for the node's `pause` image (static: the image has no libc).
    gcc -Os -static -o "$BIN/pause" "$REPO/scripts/node/pause.c"
  fi
fi
missing=()
for program in "${PROGRAMS[@]}"; do
  [[ -x "$BIN/$program" ]] || missing+=("$program")
done
if [[ ${#missing[@]} == 0 && -x "$BIN/etcd" ]]; then
  echo "kube binaries cached in $BIN"
  exit 0
fi

SOURCES=/etc/apt/sources.list.d/fraud-detector-src.sources
if ! grep -rqs "^Types:.*deb-src" /etc/apt/sources.list.d/ && ! grep -qs "^deb-src" /etc/apt/sources.list; then
  cat > "$SOURCES" <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends \
  dpkg-dev rsync golang-go etcd-server golang-github-modern-go-reflect2-dev >/dev/null

WORK="$(mktemp -d /tmp/kube-build.XXXXXX)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
apt-get source -qq kubernetes >/dev/null
SRC_DIR="$(find . -maxdepth 1 -type d -name 'kubernetes-*' | head -n1)"
cd "$SRC_DIR"
# The vendored reflect2 v1.0.1 crashes under Go >= 1.18 (SIGSEGV in mapiterinit when a custom
# resource is created); Debian ships v1.0.2's source.
rm -rf vendor/github.com/modern-go/reflect2
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
export KUBE_GIT_VERSION=v1.20.2 KUBE_GIT_TREE_STATE=clean
if [[ ${#missing[@]} != 0 ]]; then
  make WHAT="${missing[*]/#/cmd/}" GOFLAGS=-mod=vendor
  mkdir -p "$BIN"
  for program in "${missing[@]}"; do
    cp "_output/local/bin/linux/amd64/$program" "$BIN/"
  done
fi
cp "$(command -v etcd)" "$BIN/etcd"
"$BIN/kube-apiserver" --version
echo "kube binaries built into $BIN"
