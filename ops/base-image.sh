#!/bin/sh
# Build the jobs' base image (Debian bookworm, minimal, with python3 and venv) without any
# registry: debootstrap from the Debian mirror apt already uses, then `docker import`.
# The root filesystem is kept as a tarball in the cache, so a second import is seconds.
#   usage: ops/base-image.sh [IMAGE]      (default cairn-base:bookworm)
set -eu
IMAGE="${1:-cairn-base:bookworm}"
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/cairn"
TARBALL="$CACHE/rootfs-bookworm-minbase.tar"
if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    echo "$IMAGE is there"; exit 0
fi
mkdir -p "$CACHE"
if [ ! -s "$TARBALL" ]; then
    ROOT="$(mktemp -d)"
    trap 'rm -rf "$ROOT"' EXIT
    debootstrap --variant=minbase --include=python3,python3-venv bookworm "$ROOT/rootfs" >&2
    tar -C "$ROOT/rootfs" -cf "$TARBALL.part" .
    mv "$TARBALL.part" "$TARBALL"
fi
docker import "$TARBALL" "$IMAGE" >/dev/null
echo "$IMAGE imported from $TARBALL"
