#!/usr/bin/env bash
# Build kube-apiserver and kube-controller-manager v1.20.2 from Debian bookworm's `kubernetes`
# source package, for the operator's end-to-end tests, and cache them (with etcd) under
# ~/.cache/fraud-detector/kube-1.20.2/bin. A second run finds the cache and does nothing.
#
# Needs root (apt) on Debian bookworm. Takes about 6 minutes on 2 cores the first time.
set -euo pipefail

CACHE="${FRAUD_KUBE_CACHE:-$HOME/.cache/fraud-detector/kube-1.20.2}"
# The tests drive the cluster with kubectl; Debian's kubernetes-client is v1.20.2 itself.
if ! command -v kubectl >/dev/null; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi
BIN="$CACHE/bin"
if [[ -x "$BIN/kube-apiserver" && -x "$BIN/kube-controller-manager" && -x "$BIN/etcd" ]]; then
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
make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" GOFLAGS=-mod=vendor

mkdir -p "$BIN"
cp _output/local/bin/linux/amd64/kube-apiserver _output/local/bin/linux/amd64/kube-controller-manager "$BIN/"
cp "$(command -v etcd)" "$BIN/etcd"
"$BIN/kube-apiserver" --version
echo "kube binaries built into $BIN"
