#!/usr/bin/env bash
# Build the project's images from its own Dockerfile, one target each, named
# fraud-detector/<target>:dev (IMAGE_TAG changes the tag):
#
#   scripts/build-images.sh [target...]       docker build (make kind-up); default: scorer operator tools
#   IMAGE_BUILDER=buildah OCI_DIR=<dir> scripts/build-images.sh [target...]
#       buildah, no container engine and no registry: the Dockerfile's base is a Debian bookworm
#       root filesystem made here with debootstrap (Debian's python3 is 3.11), cached under
#       ~/.cache/fraud-detector; each image is written to <dir>/<target>.tar, an OCI archive that
#       `ctr images import` loads into containerd (the node tier, docs/node.md). BUILDAH_ROOT
#       (default <dir>/buildah) holds buildah's storage.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
TAG="${IMAGE_TAG:-dev}"
if [[ $# == 0 ]]; then set -- scorer operator tools; fi

if [[ "${IMAGE_BUILDER:-docker}" == docker ]]; then
  for target in "$@"; do
    docker build --target "$target" -t "fraud-detector/$target:$TAG" "$REPO"
  done
  exit 0
fi

: "${OCI_DIR:?IMAGE_BUILDER=buildah needs OCI_DIR, a folder for the image archives}"
mkdir -p "$OCI_DIR"
BUILDAH_ROOT="${BUILDAH_ROOT:-$OCI_DIR/buildah}"
# vfs: overlay is not available everywhere this runs (not in the reference sandbox).
B=(buildah --root "$BUILDAH_ROOT/storage" --runroot "$BUILDAH_ROOT/run" --storage-driver vfs)

# The base: what python:3.11-slim-bookworm holds, from Debian's own packages. The machine's
# trusted certificates go in, so a build behind a TLS-inspecting proxy reaches PyPI.
BASE_PACKAGES=python3,python3-pip,python-is-python3,ca-certificates
BASE_CACHE="$HOME/.cache/fraud-detector/debian-base"
BASE_TAR="$BASE_CACHE/bookworm-$(echo "$BASE_PACKAGES" | sha256sum | cut -c1-12).tar"
if [[ ! -s "$BASE_TAR" ]]; then
  command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }
  ROOTFS="$(mktemp -d /tmp/fraud-base.XXXXXX)"
  trap 'rm -rf "$ROOTFS"' EXIT
  debootstrap --variant=minbase --include="$BASE_PACKAGES" bookworm "$ROOTFS" \
    http://deb.debian.org/debian >/dev/null
  rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/doc "$ROOTFS"/usr/share/man "$ROOTFS"/usr/share/locale
  mkdir -p "$BASE_CACHE"
  tar -C "$ROOTFS" -cf "$BASE_TAR.part" .
  mv "$BASE_TAR.part" "$BASE_TAR"
  rm -rf "$ROOTFS"
  trap - EXIT
fi
BASE_IMAGE=localhost/fraud-detector/python:3.11-bookworm
if ! "${B[@]}" inspect --type image "$BASE_IMAGE" >/dev/null 2>&1; then
  container="$("${B[@]}" from scratch)"
  "${B[@]}" add "$container" "$BASE_TAR" / >/dev/null
  cp /etc/ssl/certs/ca-certificates.crt "$OCI_DIR/ca-certificates.crt"
  "${B[@]}" copy "$container" "$OCI_DIR/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt >/dev/null
  "${B[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt --cmd '["python3"]' "$container"
  "${B[@]}" commit -q "$container" "$BASE_IMAGE" >/dev/null
  "${B[@]}" rm "$container" >/dev/null
fi

for target in "$@"; do
  name="docker.io/fraud-detector/$target:$TAG"  # what a pod's `fraud-detector/<target>:dev` means
  # chroot isolation and the host's network: no runc or CNI inside the build.
  log="$OCI_DIR/$target.build.log"
  "${B[@]}" bud --isolation chroot --network host --layers=false \
    --build-arg "PYTHON=$BASE_IMAGE" --target "$target" -t "$name" "$REPO" >"$log" 2>&1 ||
    { tail -n 40 "$log" >&2; echo "building $target failed (whole log: $log)" >&2; exit 1; }
  rm -f "$OCI_DIR/$target.tar"
  # The name goes into the archive: `ctr images import` skips images without one.
  "${B[@]}" push -q "$name" "oci-archive:$OCI_DIR/$target.tar:$name"
  echo "$OCI_DIR/$target.tar"
done
